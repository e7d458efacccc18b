"""Peak resident memory against the number of kept draws: draws in memory vs streamed to a netCDF file.

A Bayesian MLP 64-256-256-10 (85,002 parameters, float32) on digits, 2 SGLD chains, every
step kept (thin 1), so the trace grows by 2 x 85,002 x 4 bytes = 0.68 MB a draw. Each
configuration runs in a fresh Python process, which reports its peak RSS (``ru_maxrss``).

Run: python benchmarks/trace_memory.py   (about 2 minutes on 2 CPU cores)
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from tables import markdown_table

DRAWS = (250, 500, 1000, 2000)
NUM_CHAINS = 2


def one_run(num_draws: int, stream: bool) -> None:
    """Sample and print the trace size in MB and this process's peak RSS in MB."""
    import torch
    from sklearn.datasets import load_digits
    from torch import nn

    import sgmcmc
    from sgmcmc.models import Classification, ModulePosterior

    features, labels = load_digits(return_X_y=True)
    inputs = torch.tensor((features - features.mean(0)) / (features.std(0) + 1e-9), dtype=torch.float32)
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
    posterior = ModulePosterior(network, Classification(), num_data=len(labels))
    with tempfile.TemporaryDirectory() as folder:
        trace = sgmcmc.SGLD(posterior.log_posterior, 1e-4).sample(
            posterior.params(),
            sgmcmc.Minibatches(inputs, torch.tensor(labels), batch_size=64),
            num_chains=NUM_CHAINS,
            num_steps=num_draws,
            seed=0,
            trace_file=Path(folder) / "trace.nc" if stream else None,
            progress=False,
        )
        assert trace.num_draws == num_draws
    trace_megabytes = num_draws * NUM_CHAINS * sum(p.numel() for p in network.parameters()) * 4 / 1e6
    print(trace_megabytes, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    rows = []
    for num_draws in DRAWS:
        row: dict[str, object] = {"kept draws": num_draws}
        for stream in (False, True):
            command = [sys.executable, __file__, "--one", str(num_draws), str(int(stream))]
            trace_megabytes, peak = map(float, subprocess.check_output(command, text=True).split())
            row["trace MB"] = trace_megabytes
            row["peak RSS MB, streamed to file" if stream else "peak RSS MB, in memory"] = peak
        rows.append(row)
    table = markdown_table(rows, lambda column, value: f"{value:,.0f}")
    print(table)
    results = Path(__file__).parent / "results" / "trace_memory.md"
    results.write_text(
        "# Peak resident memory vs kept draws\n\nMLP 64-256-256-10 (85,002 parameters), 2 SGLD chains, "
        "thin 1, float32; one fresh process per cell\n\n" + table + "\n"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        one_run(int(sys.argv[2]), bool(int(sys.argv[3])))
    else:
        main()
