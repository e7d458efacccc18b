"""Chain-steps per second of SGLD on Bayesian logistic regression: sgmcmc against a hand loop.

The floor is the cheapest SGLD a user could write for one chain: forward, ``loss.backward()``,
an in-place update under ``torch.no_grad()`` with ``torch.randn`` noise. ``sgmcmc.SGLD`` with K
chains is compared with K such chains run one after another (K × the floor's time). After a
warm-up, the configurations are timed in turn, in up to ``MAX_ROUNDS`` rounds (no new round
starts after ``TIME_BUDGET_S`` seconds), and each one's fastest round is reported: on a shared
machine the minimum is the least disturbed by other load, and interleaving exposes every
configuration to the same load.

Run: ``python benchmarks/step_overhead.py``. Prints a Markdown table and writes it to
``benchmarks/results/step_overhead.md``. Timings only; nothing is asserted.
"""

from __future__ import annotations

import math
import os
import platform
import time
from functools import partial
from pathlib import Path

import torch
from tables import interleaved_rounds

import sgmcmc

NUM_DATA = 2000
DIM = 20
BATCH_SIZE = 64
STEP_SIZE = 1e-3
NUM_STEPS = 2000
WARMUP_STEPS = 50
MAX_ROUNDS = 5
TIME_BUDGET_S = 45.0
CHAIN_COUNTS = (1, 8, 32)
RESULTS = Path(__file__).parent / "results" / "step_overhead.md"


def make_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, d) ~ N(0, I) and labels (N,) ~ Bernoulli(sigmoid(x·w)), w ~ N(0, I), float32."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(NUM_DATA, DIM, generator=generator)
    weights = torch.randn(DIM, generator=generator)
    labels = torch.bernoulli(torch.sigmoid(features @ weights), generator=generator)
    return features, labels


def log_prior(weights: torch.Tensor) -> torch.Tensor:
    return -0.5 * (weights**2).sum()


def log_likelihood(weights: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    features, labels = batch
    return -torch.nn.functional.binary_cross_entropy_with_logits(features @ weights, labels, reduction="none")


def hand_loop_seconds(features: torch.Tensor, labels: torch.Tensor, num_steps: int) -> float:
    """Seconds for ``num_steps`` steps of one SGLD chain written by hand (reshuffled every epoch)."""
    weights = torch.zeros(DIM, requires_grad=True)
    noise_scale = math.sqrt(2.0 * STEP_SIZE)
    steps_per_epoch = NUM_DATA // BATCH_SIZE
    start = time.perf_counter()
    for step in range(num_steps):
        if step % steps_per_epoch == 0:
            order = torch.randperm(NUM_DATA)
        rows = order[(step % steps_per_epoch) * BATCH_SIZE : (step % steps_per_epoch + 1) * BATCH_SIZE]
        log_posterior = (
            log_prior(weights) + (NUM_DATA / BATCH_SIZE) * log_likelihood(weights, (features[rows], labels[rows])).sum()
        )
        (-log_posterior).backward()
        with torch.no_grad():
            weights.sub_(STEP_SIZE * weights.grad).add_(noise_scale * torch.randn(DIM))
        weights.grad = None
    return time.perf_counter() - start


def sgmcmc_seconds(features: torch.Tensor, labels: torch.Tensor, num_chains: int, num_steps: int) -> float:
    """Seconds for one ``sgmcmc.SGLD.sample`` call: ``num_chains`` chains, ``num_steps`` steps, every draw kept."""
    log_posterior = sgmcmc.minibatch_log_posterior(log_prior, log_likelihood, num_data=NUM_DATA)
    sampler = sgmcmc.SGLD(log_posterior, step_size=STEP_SIZE)
    data = sgmcmc.Minibatches(features, labels, batch_size=BATCH_SIZE)
    start = time.perf_counter()
    sampler.sample(torch.zeros(DIM), data, num_chains=num_chains, num_steps=num_steps, seed=0, progress=False)
    return time.perf_counter() - start


def main() -> None:
    torch.manual_seed(0)
    features, labels = make_data()
    floor = ("hand loop: backward() + in-place update (floor)", 1)
    configurations = {
        floor: partial(hand_loop_seconds, features, labels),
        **{
            (f"sgmcmc.SGLD, num_chains={num_chains}", num_chains): partial(sgmcmc_seconds, features, labels, num_chains)
            for num_chains in CHAIN_COUNTS
        },
    }
    seconds, _ = interleaved_rounds(configurations, NUM_STEPS, WARMUP_STEPS, MAX_ROUNDS, TIME_BUDGET_S)
    rounds = len(seconds[floor])
    rates = {key: key[1] * NUM_STEPS / min(times) for key, times in seconds.items()}
    rows = [(name, chains, rate, rate / rates[floor]) for (name, chains), rate in rates.items()]

    header = [
        f"Bayesian logistic regression, N={NUM_DATA}, d={DIM}, batch {BATCH_SIZE}, N(0, 1) prior, float32; "
        f"{NUM_STEPS} steps per run, fastest of {rounds} interleaved rounds after a {WARMUP_STEPS}-step warm-up.",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads (torch.get_num_threads()), "
        f"{os.cpu_count()} CPUs visible, Python {platform.python_version()}, {platform.machine()}.",
        "",
        "Ratio = chain-steps/s ÷ the floor's chain-steps/s, i.e. (K × floor time) ÷ sgmcmc time: "
        "above 1 means K chains in one sgmcmc call beat K hand-written chains run one after another.",
        "",
        "| configuration | chains | chain-steps/s | ratio to floor |",
        "|---|---:|---:|---:|",
    ]
    table = "\n".join(
        [*header, *(f"| {name} | {chains} | {rate:,.0f} | {ratio:.2f} |" for name, chains, rate, ratio in rows)]
    )
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table + "\n")
    print(f"\nwritten to {RESULTS}")


if __name__ == "__main__":
    main()
