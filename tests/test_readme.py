"""The README's usage example runs as written."""

import re
from pathlib import Path

import arviz as az


def test_readme_usage_example_runs():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    namespace: dict = {}
    exec(compile(example.replace("seed=0)", "seed=0, progress=False)"), "README.md", "exec"), namespace)
    assert isinstance(namespace["idata"], az.InferenceData)
    assert namespace["idata"].posterior["weights"].shape == (4, 4000, 5)
