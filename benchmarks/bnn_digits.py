"""The main job on digits for each sampler: accuracy, NLL, ECE, Brier, OOD AUROC against an SGD ensemble.

Runs ``sgmcmc.job.run_job`` with its defaults (MLP 64-100-10 tanh, N(0, 1) prior, batch 64,
4 chains x 8000 steps, burn-in 4000, thin 20; the SGD ensemble: the same 4 chains at
temperature 0, step 1e-3) for SGLD, SGHMC and cyclical SGLD (4 cycles) at their default step
sizes at temperature 1, SGLD at temperature 0.1 (a cold posterior), and all of it once more
with classes 8 and 9 held out as out-of-distribution inputs.
The SGD rows are from the first job (the ensemble does not depend on the sampler).

Run: python benchmarks/bnn_digits.py   (about 4 minutes on 2 idle CPU cores)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from tables import markdown_table

from sgmcmc.job import JobConfig, run_job

RUNS = (("sgld", 1.0), ("sghmc", 1.0), ("csgld", 1.0), ("sgld", 0.1))
"""(sampler, temperature): the last is a cold posterior (Wenzel et al. 2020)."""


def rows(held_out: list[int]) -> list[dict[str, object]]:
    table = []
    for number, (sampler, temperature) in enumerate(RUNS):
        with tempfile.TemporaryDirectory() as output:
            config = JobConfig(
                sampler=sampler,
                temperature=temperature,
                ood_classes=held_out,
                ensemble=number == 0,
                output=output,
                progress=False,
            )
            report = run_job(config)
        methods = report["methods"]
        names = {"posterior": f"{sampler} (step {report['step_sizes']['sampler']:g}, T = {temperature:g})"}
        if number == 0:
            names.update({name: name for name in methods if name != "posterior"})
        for key, label in names.items():
            scores = methods[key]
            table.append(
                {
                    "method": label,
                    "accuracy": scores["accuracy"],
                    "NLL": scores["nll"],
                    "ECE": scores["ece"],
                    "Brier": scores["brier"],
                    "AUROC noise": scores["auroc_noise"],
                    **({"AUROC classes 8, 9": scores["auroc_held_out_classes"]} if held_out else {}),
                    **{
                        column: report["convergence"][field] if key == "posterior" else "—"
                        for column, field in (
                            ("R-hat test log-lik", "test_log_likelihood_rhat"),
                            ("R-hat predictive, median", "test_predictive_rhat_median"),
                            ("R-hat predictive, max", "test_predictive_rhat_max"),
                        )
                    },
                    "seconds": report["seconds"]["sampler" if key == "posterior" else "ensemble"],
                }
            )
    return table


def main() -> None:
    torch.set_num_threads(1)  # on a shared 2-core machine, 2 threads per process can run 30x slower
    header = (
        "# The main job on digits: samplers against an SGD ensemble of the same cost\n\n"
        f"`sgmcmc run` defaults (MLP 64-100-10 tanh, N(0, 1) prior, 4 chains x 8000 steps, burn-in 4000, thin 20, "
        f"batch 64, seed 0); torch {torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    sections = [header]
    for title, held_out in (("All 10 classes", []), ("Classes 8 and 9 held out (trained on 8 classes)", [8, 9])):
        table = markdown_table(rows(held_out))
        print(f"\n## {title}\n\n{table}")
        sections.append(f"\n## {title}\n\n{table}\n")
    results = Path(__file__).parent / "results" / "bnn_digits.md"
    results.write_text("".join(sections))


if __name__ == "__main__":
    main()
