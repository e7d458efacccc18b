"""A Bayesian MLP on scikit-learn's digits: SGD ensemble vs SGLD vs cyclical SGLD at equal gradient budget.

Model: MLP 64-100-10 with tanh, N(0, 1) prior on every weight and bias, softmax likelihood,
float32. Data: load_digits (1797 8x8 images), a stratified train/test split of 1347/450
(random_state=0), features standardised with the training statistics. The log posterior is
the full-data sum log p(θ) + (N/|B|) Σ_B log p(y | x, θ) on minibatches of 64, so a step η acts
like a learning rate η·N on the mean loss.

Methods, each NUM_CHAINS chains x NUM_STEPS steps (the same number of gradient evaluations),
every chain started from its own N(0, 1/fan_in) initialisation:

* SGD: ``sgmcmc.SGLD`` at temperature 0 with a constant step; the final state of each chain is
  a point estimate. Reported for one network (mean over chains) and for the ensemble of all.
* SGLD at temperature 1 with a constant step; draws after BURN_IN steps, every THIN-th.
* cSGLD: ``sgmcmc.CyclicalSGLD`` on Cyclical(η₀, NUM_CYCLES cycles, exploration=0.8), every
  THIN-th step of each sampling stage.

The posterior predictive is the mean of the softmax probabilities over all kept draws of all
chains. Each method's step size (η₀ for cSGLD) is chosen from the same five values by the NLL
on a validation split (300 of the 1347 training rows, stratified), at the same budget: the
predictive's NLL for SGLD and cSGLD, the mean NLL of one network for SGD (a point-estimate
method, tuned as one would tune a single network); the test set is used only for the final
numbers. Reported: test accuracy, test NLL (mean −log predictive probability of
the true label), draws used and seconds. The tables are printed and written to
results/cyclical_bnn.md.

Run: python benchmarks/cyclical_bnn.py   (about 3 minutes on 2 CPU cores)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tables import markdown_table

import sgmcmc
from sgmcmc.schedules import Cyclical

NUM_CHAINS, NUM_STEPS, BATCH_SIZE, SEED = 4, 8_000, 64, 0
BURN_IN, THIN, NUM_CYCLES, EXPLORATION = 2_000, 20, 8, 0.8
HIDDEN = 100
STEP_SIZES = {method: (1e-4, 3e-4, 1e-3, 3e-3, 1e-2) for method in ("SGD", "SGLD", "cSGLD")}


def split() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train (fit + validation), test and the validation carve-out of the training rows, as float32 / long."""
    features, labels = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=450, stratify=labels, random_state=0
    )
    x_fit, x_validation, y_fit, y_validation = train_test_split(
        x_train, y_train, test_size=300, stratify=y_train, random_state=0
    )
    parts = {
        "train": (x_train, y_train),
        "test": (x_test, y_test),
        "fit": (x_fit, y_fit),
        "validation": (x_validation, y_validation),
    }
    return {
        name: (torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long))
        for name, (x, y) in parts.items()
    }


def standardise(x_train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Centre and scale every set by the training mean and sd (constant pixels are only centred)."""
    mean, sd = x_train.mean(dim=0), x_train.std(dim=0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    return [(x - mean) / sd for x in (x_train, *others)]


def initial_params(num_features: int, num_classes: int) -> dict[str, torch.Tensor]:
    """NUM_CHAINS independent initialisations, weights N(0, 1/fan_in) and zero biases, stacked along dim 0."""
    generator = torch.Generator().manual_seed(SEED)
    return {
        "w1": torch.randn(NUM_CHAINS, num_features, HIDDEN, generator=generator) / num_features**0.5,
        "b1": torch.zeros(NUM_CHAINS, HIDDEN),
        "w2": torch.randn(NUM_CHAINS, HIDDEN, num_classes, generator=generator) / HIDDEN**0.5,
        "b2": torch.zeros(NUM_CHAINS, num_classes),
    }


def logits(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The MLP's logits; params may carry leading dims (draws), broadcast over the rows of x."""
    hidden = torch.tanh(x @ params["w1"] + params["b1"].unsqueeze(-2))
    return hidden @ params["w2"] + params["b2"].unsqueeze(-2)


def log_prior(params: dict[str, torch.Tensor]) -> torch.Tensor:
    return -0.5 * sum((value**2).sum() for value in params.values())


def log_likelihood(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return torch.log_softmax(logits(params, x), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


def sampler(method: str, step_size: float, num_data: int) -> sgmcmc.Sampler:
    log_posterior = sgmcmc.minibatch_log_posterior(log_prior, log_likelihood, num_data=num_data)
    if method == "SGD":
        return sgmcmc.SGLD(log_posterior, step_size=step_size, temperature=0.0)
    if method == "SGLD":
        return sgmcmc.SGLD(log_posterior, step_size=step_size)
    schedule = Cyclical(step_size, num_cycles=NUM_CYCLES, total_steps=NUM_STEPS, exploration=EXPLORATION)
    return sgmcmc.CyclicalSGLD(log_posterior, schedule)


def run(method: str, step_size: float, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, torch.Tensor], float]:
    """Sample; returns the networks to average, name -> (num_networks, *shape), and the seconds taken."""
    start = time.perf_counter()
    trace = sampler(method, step_size, len(y)).sample(
        initial_params(x.shape[1], 10),
        sgmcmc.Minibatches(x, y, batch_size=BATCH_SIZE),
        num_chains=NUM_CHAINS,
        num_steps=NUM_STEPS,
        burn_in={"SGD": NUM_STEPS - 1, "SGLD": BURN_IN}.get(method, 0),  # SGD: only the final state is used
        thin=THIN,
        seed=SEED,
        stacked_init=True,
        progress=False,
    )
    seconds = time.perf_counter() - start
    if method == "SGD":
        return dict(trace.final_state["params"]), seconds
    alive = ~trace.sample_stats["diverging"]
    return {name: torch.as_tensor(value[alive]) for name, value in trace.posterior.items()}, seconds


def predictive_scores(networks: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and NLL of the predictive that averages the softmax probabilities of all ``networks``."""
    if not all(torch.isfinite(value).all() for value in networks.values()) or len(networks["b2"]) == 0:
        return float("nan"), float("nan")
    total = sum(torch.softmax(logits(chunk, x), dim=-1).double().sum(dim=0) for chunk in _chunks(networks))
    probabilities = total / len(networks["b2"])
    accuracy = (probabilities.argmax(dim=-1) == y).double().mean().item()
    nll = -probabilities.gather(-1, y.unsqueeze(-1)).clamp_min(1e-30).log().double().mean().item()
    return accuracy, nll


def _chunks(networks: dict[str, torch.Tensor], size: int = 256):
    for start in range(0, len(networks["b2"]), size):
        yield {name: value[start : start + size] for name, value in networks.items()}


def single_network_scores(networks: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Accuracy and NLL of each network alone, averaged over the networks."""
    scores = [
        predictive_scores({name: value[index : index + 1] for name, value in networks.items()}, x, y)
        for index in range(len(networks["b2"]))
    ]
    return float(np.mean([score[0] for score in scores])), float(np.mean([score[1] for score in scores]))


def five_digit_nll(column: str, value: float) -> str:
    """Validation NLLs to 5 digits, where close step sizes differ in the 4th; everything else to 4."""
    return f"{value:.5g}" if "NLL" in column else f"{value:.4g}"


def main() -> None:
    torch.manual_seed(SEED)
    data = split()
    x_fit, x_validation = standardise(data["fit"][0], data["validation"][0])
    x_train, x_test = standardise(data["train"][0], data["test"][0])
    y_fit, y_validation = data["fit"][1], data["validation"][1]
    y_train, y_test = data["train"][1], data["test"][1]

    tuning, chosen = [], {}
    for method, step_sizes in STEP_SIZES.items():
        for step_size in step_sizes:
            networks, seconds = run(method, step_size, x_fit, y_fit)
            accuracy, nll = predictive_scores(networks, x_validation, y_validation)
            single = single_network_scores(networks, x_validation, y_validation) if method == "SGD" else None
            tuning.append(
                {
                    "method": method,
                    "step size": step_size,
                    "val accuracy": accuracy,
                    "val NLL": nll,
                    "val NLL, one network": single[1] if single else "—",
                    "seconds": seconds,
                    "criterion": single[1] if single else nll,
                }
            )
        candidates = [row for row in tuning if row["method"] == method and np.isfinite(row["criterion"])]
        chosen[method] = min(candidates, key=lambda row: row["criterion"])["step size"]
    tuning = [{key: value for key, value in row.items() if key != "criterion"} for row in tuning]

    results = []
    for method, step_size in chosen.items():
        networks, seconds = run(method, step_size, x_train, y_train)
        accuracy, nll = predictive_scores(networks, x_test, y_test)
        if method == "SGD":
            single_accuracy, single_nll = single_network_scores(networks, x_test, y_test)
            results.append(
                {
                    "method": "SGD, one network (mean over chains)",
                    "step size": step_size,
                    "networks averaged": 1,
                    "test accuracy": single_accuracy,
                    "test NLL": single_nll,
                    "seconds": seconds,
                }
            )
            method = f"SGD, ensemble of {NUM_CHAINS}"
        elif method == "cSGLD":
            method = f"cSGLD, η₀ = step size, {NUM_CYCLES} cycles, β = {EXPLORATION}"
        results.append(
            {
                "method": method,
                "step size": step_size,
                "networks averaged": len(networks["b2"]),
                "test accuracy": accuracy,
                "test NLL": nll,
                "seconds": seconds,
            }
        )

    context = (
        f"digits: {len(y_train)} train / {len(y_test)} test (validation for tuning: {len(y_validation)} of the train "
        f"rows), MLP 64-{HIDDEN}-10 tanh, N(0, 1) prior, batch {BATCH_SIZE}, float32; {NUM_CHAINS} chains x "
        f"{NUM_STEPS} steps per method; SGLD burn-in {BURN_IN}, thin {THIN}; cSGLD {NUM_CYCLES} cycles of "
        f"{NUM_STEPS // NUM_CYCLES} steps, exploration {EXPLORATION}, thin {THIN}; temperature 1 for SGLD and cSGLD; "
        f"seed {SEED}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    table, tuning_table = markdown_table(results), markdown_table(tuning, five_digit_nll)
    print(context, table, "Step-size tuning on the validation split:", tuning_table, sep="\n\n")
    output = Path(__file__).parent / "results" / "cyclical_bnn.md"
    output.parent.mkdir(exist_ok=True)
    output.write_text(
        f"# Bayesian MLP on digits: SGD ensemble vs SGLD vs cSGLD\n\n{context}\n\n{table}\n\n"
        "## Step-size tuning (validation split; chosen by val NLL, for SGD by the NLL of one network)\n\n"
        f"{tuning_table}\n"
    )


if __name__ == "__main__":
    main()
