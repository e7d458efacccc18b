"""The documentation site builds with warnings as errors: every link and anchor resolves, and
mkdocstrings renders the API reference from the docstrings. The tools come with the ``test`` extra
(``pip install -e ".[test]"``); without them this test fails rather than skips, so CI always builds."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    api = (site / "api" / "index.html").read_text()
    for name in (
        "SGLD",
        "SGLDCV",
        "find_mode",
        "SGHMC",
        "SGNHT",
        "CyclicalSGLD",
        "PSGLD",
        "ASGLD",
        "Trace",
        "schedules.Polynomial",
        "models.ModulePosterior",
        "metrics.expected_calibration_error",
        "stein.kernel_stein_discrepancy",
        "bias_variance.bias_variance_study",
        "landscapes.Ackley",
        "playground.compare",
        "optim.SGLD",
    ):
        assert f'id="sgmcmc.{name}"' in api, f"sgmcmc.{name} is missing from the API reference"
    for page in ("theory/langevin", "tutorials/logistic-regression", "benchmarks"):
        assert (site / page / "index.html").exists(), page
