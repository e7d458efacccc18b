"""Chain-parallel and data-parallel sampling with P = 1 and 2 processes (torchrun, gloo, CPU).

    python benchmarks/distributed_scaling.py

Launches ``torchrun --standalone --nproc-per-node=P`` on this file for each configuration; each
worker uses ``--threads`` torch threads, times its sampling call between two barriers (the
rendezvous and imports are not counted) and rank 0 reports it. Writes
``benchmarks/results/distributed_scaling.md``.

Workloads (Bayesian logistic regression, float32, N(0, 1) prior):
    chains: SGLD, 8 chains x 1500 steps, N = 4096 rows, d = 20, batch 64 (every rank holds all data);
    data: LD (full batch), 4 chains x 200 steps, N = 200 000 rows, d = 100, split into P shards.

About 8 minutes on a loaded 2-core machine, 1.5 minutes on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import sgmcmc
from sgmcmc import distributed

RESULTS = Path(__file__).parent / "results" / "distributed_scaling.md"
CONFIGURATIONS = [  # (mode, processes, threads per process)
    ("chains", 1, 1),
    ("chains", 1, 2),
    ("chains", 2, 1),
    ("data", 1, 1),
    ("data", 1, 2),
    ("data", 2, 1),
]
REPEATS = 3


def _problem(num_data: int, dim: int) -> tuple[torch.Tensor, torch.Tensor, object]:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(num_data, dim, generator=generator)
    labels = (torch.rand(num_data, generator=generator) < torch.sigmoid(features @ torch.ones(dim) / dim**0.5)).float()

    def log_prior(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return -0.5 * (params["weights"] ** 2).sum()

    def log_likelihood(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return -torch.nn.functional.binary_cross_entropy_with_logits(x @ params["weights"], y, reduction="none")

    return features, labels, sgmcmc.minibatch_log_posterior(log_prior, log_likelihood, num_data=num_data)


def _timed_sample(mode: str) -> float:
    """Seconds of one sampling call of ``mode`` in the current process group."""
    if mode == "chains":
        features, labels, log_posterior = _problem(4096, 20)
        init = {"weights": torch.zeros(20)}
        data = sgmcmc.Minibatches(features, labels, batch_size=64)
        sample = lambda: distributed.sample_chain_parallel(  # noqa: E731
            sgmcmc.SGLD(log_posterior, step_size=1e-4), init, data, num_chains=8, num_steps=1500, progress=False
        )
    else:
        features, labels, log_posterior = _problem(200_000, 100)
        init = {"weights": torch.zeros(100)}
        shard = sgmcmc.Minibatches(*distributed.shard_rows(features, labels), batch_size=1)
        sample = lambda: distributed.sample_data_parallel(  # noqa: E731
            sgmcmc.LD(log_posterior, step_size=1e-6), init, shard, num_chains=4, num_steps=200, progress=False
        )
    if dist.is_initialized():
        dist.barrier()
    start = time.perf_counter()
    sample()
    if dist.is_initialized():
        dist.barrier()
    return time.perf_counter() - start


def worker(mode: str, threads: int, output: Path) -> None:
    torch.set_num_threads(threads)
    with distributed.process_group() as group:
        seconds = [_timed_sample(mode) for _ in range(REPEATS)]
        if group.rank == 0:
            result = {"mode": mode, "processes": group.world_size, "threads": threads, "seconds": min(seconds)}
            with open(output, "a") as file:
                file.write(json.dumps(result) + "\n")


def main() -> None:
    lines = Path(os.environ.get("TMPDIR", "/tmp")) / f"distributed_scaling_{os.getpid()}.jsonl"
    lines.unlink(missing_ok=True)
    load_before = os.getloadavg()[0]
    for mode, processes, threads in CONFIGURATIONS:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", __file__]
            + ["--worker", mode, str(threads), str(lines)],
            check=True,
            env={**os.environ, "CI": "1", "OMP_NUM_THREADS": str(threads)},
        )
        print(f"{mode} P={processes} threads={threads}: {time.perf_counter() - start:.1f} s with startup", flush=True)
    results = [json.loads(line) for line in lines.read_text().splitlines()]
    lines.unlink()
    baseline = {row["mode"]: row["seconds"] for row in results if row["processes"] == 1 and row["threads"] == 1}
    work = {"chains": "8 chains x 1500 SGLD steps", "data": "4 chains x 200 LD steps on 200 000 rows"}
    table = [
        "| mode | processes P | threads per process | work | seconds (best of 3) | speed-up over P = 1, 1 thread |",
        "|---|---:|---:|---|---:|---:|",
        *(
            f"| {row['mode']} | {row['processes']} | {row['threads']} | {work[row['mode']]} | {row['seconds']:.2f} | "
            f"{baseline[row['mode']] / row['seconds']:.2f} |"
            for row in results
        ),
    ]
    header = (
        f"# Distributed scaling (CPU, gloo)\n\n`python benchmarks/distributed_scaling.py`; torch {torch.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU cores, load average before the run "
        f"{load_before:.1f}. Sampling time only (between barriers; startup excluded).\n\n"
    )
    RESULTS.write_text(header + "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "THREADS", "OUTPUT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        worker(arguments.worker[0], int(arguments.worker[1]), Path(arguments.worker[2]))
    else:
        main()
