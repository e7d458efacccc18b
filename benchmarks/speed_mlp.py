"""Workload W1 of issue 9: chain-steps per second of SGLD on a Bayesian MLP, sgmcmc against the alternatives.

A Bayesian MLP 64-100-10 (tanh) on scikit-learn's digits (all 1797 rows, features standardised
per column, labels 0-9), N(0, 1) prior on every weight and bias, categorical likelihood,
minibatch 64 (28 steps an epoch, the last 5 rows of each epoch's order dropped), every chain
its own minibatches reshuffled every epoch, SGLD θ ← θ + η ∇log p̃(θ) + sqrt(2η) ξ with
log p̃ = log p(θ) + (N/|B|) Σ_B log p(y | x, θ), constant η, temperature 1, float32, CPU, one
thread and one pinned core for everyone. K ∈ {1, 8, 32} chains start from the same ``nn.Linear``
initialisation.

Configurations (each runs the same dynamics on the same data for the same number of steps):

* **floor**: one chain of plain PyTorch, ``nn.Sequential`` + ``torch.optim.SGD(lr=η)`` on
  −log p̃, ``backward()``, ``step()``, then ``sqrt(2η) · randn`` added in place. K chains
  of it run one after another have the same chain-steps/s ("K × floor (sequential)"). The
  issue's floor, read literally, is SGD alone; the **SGD alone** row times it without the noise
  (it does not sample), and the targets give the one-chain ratio against both.
* **batched limit**: the least work K chains can take in eager PyTorch; all chains' params are
  views into one (K, P) tensor, forward with ``baddbmm``, backward written by hand (no
  autograd; checked against autograd at start-up), one ``randn`` and two fused in-place adds
  per step, per-chain permutations from one ``argsort``.
* **torch.func reference**: ``vmap(grad(log_posterior))`` over chains with ``functional_call``.
* **sgmcmc**: ``sgmcmc.SGLD(ModulePosterior(...).log_posterior).sample(..., keep=())``, one
  entry of :data:`SGMCMC_VARIANTS` per variant (``compile=True`` where ``sample`` takes it).
* **posteriors** (optional): ``posteriors.sgmcmc.sgld``'s update, ``torch.func.vmap``-ed
  over chains (one chain: its own ``init``/``update`` loop, no vmap, as sgmcmc runs one chain),
  its recommended batch-mean log posterior with ``temperature=1/N``, ``lr=η N``.
* **BlackJAX** (optional): ``blackjax.sgld`` with its ``grad_estimator``, ``jax.vmap`` over
  chains, jitted; one jitted step per Python iteration, and ``jax.lax.scan`` over an epoch.

After a one-epoch warm-up run of every configuration (BlackJAX's functions are compiled before
it, sgmcmc's ``compile=True`` step during it; the notes give both times, which the timings
exclude), the configurations are timed in turn, in up to ``MAX_ROUNDS`` interleaved rounds (no
new round after ``TIME_BUDGET_S`` s), and each one's fastest round is reported: on a shared
machine the minimum is the least disturbed by other load, and interleaving exposes every
configuration to the same load.

Run: ``python benchmarks/speed_mlp.py`` (about 7 minutes on 2 cores) prints the Markdown table
and writes it to ``benchmarks/results/speed_mlp.md``; ``--quick`` (2 epochs, 1 round) only
prints; ``--profile`` instead shows where a compiled step's time goes, beside the same matmuls,
tanh and noise timed alone in torch and XLA and the eager step's gradient with and without vmap,
and writes ``results/speed_mlp_profile.md``. On a
GPU: ``--device cuda --chains 1,8,32,128,1024`` runs the torch configurations there (timers
synchronise the device) and writes ``benchmarks/results/speed_mlp_cuda.md``; BlackJAX runs on
whatever backend its jax has (the table's machine line says which).
Timings only; nothing is asserted beyond the batched limit's gradient check.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import inspect
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

# One core for everyone. XLA reads its flags when jax is first imported (below, lazily); with
# these its ops stay on the calling thread, but its runtime still starts helper threads (they
# took 1.4-1.6 CPU s per wall s on an idle machine), so main() also pins the process to one
# core (tables.pin_to_one_core). The CPU-seconds per wall-second of every configuration is in the table.
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
# with --device cuda and a GPU jax, JAX would otherwise take 75% of the GPU's memory at its first call
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from tables import interleaved_rounds, markdown_table, pin_to_one_core  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, vmap  # noqa: E402

import sgmcmc  # noqa: E402
from sgmcmc.log_density import ChainPotential  # noqa: E402
from sgmcmc.models import Classification, ModulePosterior  # noqa: E402

HIDDEN = 100
NUM_CLASSES = 10
BATCH_SIZE = 64
STEP_SIZE = 5e-4
EPOCHS = 72
QUICK_EPOCHS = 2
MAX_ROUNDS = 4
TIME_BUDGET_S = 200.0
CHAIN_COUNTS = (1, 8, 32)
RESULTS = Path(__file__).parent / "results"
FLOOR = "floor: nn.Module + SGD + backward(), + noise"
SGD_FLOOR = "SGD alone: the floor without the noise"
POSTERIORS = "posteriors sgld (vmap from K = 2)"

SGMCMC_VARIANTS: dict[str, dict[str, object]] = {
    "sgmcmc.SGLD": {},
    "sgmcmc.SGLD, compile=True": {"compile": True},
}
"""Label -> extra keyword arguments of ``sample``; a variant whose arguments ``sample`` does not
take is left out of the run."""

LAYOUT = {"W1": (None, HIDDEN), "b1": (HIDDEN,), "W2": (HIDDEN, NUM_CLASSES), "b2": (NUM_CLASSES,)}
"""The batched layout: x @ W1 + b1 -> tanh -> @ W2 + b2 (W1's first dim is the feature count)."""


@dataclass
class Run:
    """One timed run: wall and process CPU seconds of ``num_steps`` steps, and chain 0's last params."""

    seconds: float
    cpu_seconds: float
    params: dict[str, np.ndarray]


Runner = Callable[[int], Run]


class Timer:
    """Wall and process CPU time (all threads) since construction; on CUDA, of the work queued since."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self._synchronize()
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def _synchronize(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def done(self, params: dict[str, np.ndarray]) -> Run:
        self._synchronize()
        return Run(time.perf_counter() - self.wall, time.process_time() - self.cpu, params)


def load_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Digits: features (1797, 64) standardised per column (constant columns left at 0), labels (1797,)."""
    features, labels = load_digits(return_X_y=True)
    scale = features.std(axis=0)
    features = (features - features.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    return torch.tensor(features, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)


def make_network(num_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(num_features, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, NUM_CLASSES))


def to_layout(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``nn.Sequential`` parameters (Linear weights are (out, in)) in the batched layout; leading dims kept."""
    return {
        "W1": params["0.weight"].transpose(-1, -2),
        "b1": params["0.bias"],
        "W2": params["2.weight"].transpose(-1, -2),
        "b2": params["2.bias"],
    }


def as_numpy(params: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: value.detach().cpu().numpy().copy() for name, value in params.items()}


def accuracy(params: dict[str, np.ndarray], features: np.ndarray, labels: np.ndarray) -> float:
    """Training accuracy of one chain's params in the batched layout (a check that every run fits alike)."""
    logits = np.tanh(features @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    return float((logits.argmax(axis=1) == labels).mean())


def distance(params: dict[str, np.ndarray], start: dict[str, np.ndarray]) -> float:
    """‖θ − θ₀‖ over all params, both in the batched layout (a check that every run samples alike)."""
    return math.sqrt(sum(float(np.square(params[name] - start[name]).sum()) for name in start))


def floor_runner(features: torch.Tensor, labels: torch.Tensor, network: nn.Module, noise: bool = True) -> Runner:
    """One chain: ``backward()`` on −log p̃, ``SGD(lr=η).step()``, then (with ``noise``) the noise added in place."""
    num_data = len(labels)
    scale, noise_scale = num_data / BATCH_SIZE, math.sqrt(2.0 * STEP_SIZE)
    steps_per_epoch = num_data // BATCH_SIZE

    def run(num_steps: int) -> Run:
        net = copy.deepcopy(network)
        parameters = list(net.parameters())
        optimizer = torch.optim.SGD(parameters, lr=STEP_SIZE)
        timer = Timer(features.device)
        for step in range(num_steps):
            position = step % steps_per_epoch
            if position == 0:
                order = torch.randperm(num_data, device=features.device)
            rows = order[position * BATCH_SIZE : (position + 1) * BATCH_SIZE]
            log_likelihood = -nn.functional.cross_entropy(net(features[rows]), labels[rows], reduction="sum")
            log_prior = -0.5 * sum(parameter.square().sum() for parameter in parameters)
            loss = -(log_prior + scale * log_likelihood)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if noise:
                with torch.no_grad():
                    for parameter in parameters:
                        parameter.add_(torch.randn_like(parameter), alpha=noise_scale)
        return timer.done(as_numpy(to_layout(dict(net.named_parameters()))))

    return run


def layout_views(flat: torch.Tensor, num_features: int) -> dict[str, torch.Tensor]:
    """Views of a (K, P) tensor as the batched params (K, *shape), in :data:`LAYOUT` order."""
    views, start = {}, 0
    for name, shape in LAYOUT.items():
        shape = tuple(num_features if size is None else size for size in shape)
        size = math.prod(shape)
        views[name] = flat[:, start : start + size].view(flat.shape[0], *shape)
        start += size
    return views


def num_params(num_features: int) -> int:
    return sum(math.prod(num_features if size is None else size for size in shape) for shape in LAYOUT.values())


def batched_gradient(
    params: dict[str, torch.Tensor],
    gradient: dict[str, torch.Tensor],
    inputs: torch.Tensor,
    one_hot: torch.Tensor,
    scale: float,
) -> None:
    """Write ∇log p̃ of every chain into ``gradient`` (views like ``params``) by hand-written backprop.

    ``inputs`` (K, B, d), ``one_hot`` (K, B, C) labels. With h = tanh(x W1 + b1) and
    z = h W2 + b2: ∂/∂z = s (onehot − softmax z) with s = N/|B|, ∂/∂W2 = hᵀ ∂z,
    ∂/∂h = ∂z W2ᵀ, ∂/∂(x W1 + b1) = ∂h ⊙ (1 − h²), ∂/∂W1 = xᵀ ∂(x W1 + b1), biases sum over B,
    and the N(0, 1) prior adds −θ.
    """
    hidden = torch.baddbmm(params["b1"].unsqueeze(1), inputs, params["W1"]).tanh_()
    logits = torch.baddbmm(params["b2"].unsqueeze(1), hidden, params["W2"])
    d_logits = torch.sub(one_hot, logits.softmax(dim=-1)).mul_(scale)
    torch.bmm(hidden.transpose(1, 2), d_logits, out=gradient["W2"])
    torch.sum(d_logits, dim=1, out=gradient["b2"])
    d_hidden = torch.bmm(d_logits, params["W2"].transpose(1, 2)).mul_(hidden.square_().neg_().add_(1.0))
    torch.bmm(inputs.transpose(1, 2), d_hidden, out=gradient["W1"])
    torch.sum(d_hidden, dim=1, out=gradient["b1"])
    for name, value in params.items():
        gradient[name].sub_(value)


def check_batched_gradient(features: torch.Tensor, labels: torch.Tensor) -> None:
    """Assert that :func:`batched_gradient` equals torch.autograd's gradient of log p̃, per chain."""
    generator = torch.Generator().manual_seed(1)
    num_chains, num_features = 3, features.shape[1]
    scale = len(labels) / BATCH_SIZE
    flat = 0.3 * torch.randn(num_chains, num_params(num_features), generator=generator, dtype=torch.float64)
    rows = torch.randint(len(labels), (num_chains, BATCH_SIZE), generator=generator)
    inputs, targets = features.double()[rows], labels[rows]
    one_hot = nn.functional.one_hot(targets, NUM_CLASSES).double()
    gradient_flat = torch.empty_like(flat)
    batched_gradient(
        layout_views(flat, num_features), layout_views(gradient_flat, num_features), inputs, one_hot, scale
    )

    flat_autograd = flat.clone().requires_grad_(True)
    params = layout_views(flat_autograd, num_features)
    logits = torch.tanh(inputs @ params["W1"] + params["b1"].unsqueeze(1)) @ params["W2"] + params["b2"].unsqueeze(1)
    log_likelihood = logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).sum()
    (-0.5 * flat_autograd.square().sum() + scale * log_likelihood).backward()
    torch.testing.assert_close(gradient_flat, flat_autograd.grad, rtol=1e-10, atol=1e-9)


def chain_minibatch_rows(
    num_chains: int, num_data: int, num_steps: int, device: torch.device
) -> Iterator[torch.Tensor]:
    """Each step's rows (num_chains, BATCH_SIZE): every chain its own order, reshuffled each epoch by one argsort."""
    steps_per_epoch = num_data // BATCH_SIZE
    for step in range(num_steps):
        position = step % steps_per_epoch
        if position == 0:
            orders = torch.rand(num_chains, num_data, device=device).argsort(dim=1)
        yield orders[:, position * BATCH_SIZE : (position + 1) * BATCH_SIZE]


def batched_limit_runner(features: torch.Tensor, labels: torch.Tensor, init: dict, num_chains: int) -> Runner:
    """K chains as views into one flat (K, P) tensor; hand-written gradient, one randn, two fused adds a step."""
    num_data, num_features = features.shape
    scale, noise_scale = num_data / BATCH_SIZE, math.sqrt(2.0 * STEP_SIZE)
    one_hot_labels = nn.functional.one_hot(labels, NUM_CLASSES).to(features.dtype)
    size = num_params(num_features)

    def run(num_steps: int) -> Run:
        flat = torch.empty(num_chains, size, device=features.device)
        params = layout_views(flat, num_features)
        for name, value in init.items():
            params[name].copy_(value)
        gradient_flat, noise = torch.empty_like(flat), torch.empty_like(flat)
        gradient = layout_views(gradient_flat, num_features)
        timer = Timer(features.device)
        for rows in chain_minibatch_rows(num_chains, num_data, num_steps, features.device):
            batched_gradient(params, gradient, features[rows], one_hot_labels[rows], scale)
            torch.randn(num_chains, size, out=noise)
            flat.add_(gradient_flat, alpha=STEP_SIZE).add_(noise, alpha=noise_scale)
        return timer.done(as_numpy({name: value[0] for name, value in params.items()}))

    return run


def torch_func_runner(features: torch.Tensor, labels: torch.Tensor, network: nn.Module, num_chains: int) -> Runner:
    """``vmap(grad(log_posterior))`` over stacked params, then the update in place, per parameter."""
    num_data = len(labels)
    scale, noise_scale = num_data / BATCH_SIZE, math.sqrt(2.0 * STEP_SIZE)

    def log_posterior(params: dict[str, torch.Tensor], inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = functional_call(network, params, (inputs,))
        log_likelihood = logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).sum()
        return -0.5 * sum(value.square().sum() for value in params.values()) + scale * log_likelihood

    gradient_of = vmap(grad(log_posterior))

    def run(num_steps: int) -> Run:
        params = {
            name: value.detach().expand(num_chains, *value.shape).clone() for name, value in network.named_parameters()
        }
        timer = Timer(features.device)
        for rows in chain_minibatch_rows(num_chains, num_data, num_steps, features.device):
            gradient = gradient_of(params, features[rows], labels[rows])
            for name, value in params.items():
                value.add_(gradient[name], alpha=STEP_SIZE).add_(torch.randn_like(value), alpha=noise_scale)
        return timer.done(as_numpy(to_layout({name: value[0] for name, value in params.items()})))

    return run


def sgmcmc_runner(
    features: torch.Tensor, labels: torch.Tensor, network: nn.Module, num_chains: int, options: dict[str, object]
) -> Runner:
    """``sgmcmc.SGLD`` on a ``ModulePosterior``, as a user writes it, keeping no parameter draws."""
    posterior = ModulePosterior(network, Classification(), num_data=len(labels), prior_scale=1.0)
    sampler = sgmcmc.SGLD(posterior.log_posterior, step_size=STEP_SIZE, temperature=1.0)
    data = sgmcmc.Minibatches(features, labels, batch_size=BATCH_SIZE)
    init = posterior.params()

    def run(num_steps: int) -> Run:
        timer = Timer(features.device)
        trace = sampler.sample(
            init,
            data,
            num_chains=num_chains,
            num_steps=num_steps,
            keep=(),
            progress=False,
            seed=0,
            device=features.device,
            **options,
        )
        run = timer.done({})
        run.params = as_numpy(to_layout({name: value[0] for name, value in trace.final_state["params"].items()}))
        return run

    return run


def posteriors_runner(features: torch.Tensor, labels: torch.Tensor, network: nn.Module, num_chains: int) -> Runner:
    """``posteriors.sgmcmc.sgld``'s update vmapped over chains; the same dynamics as ours (see the module docstring).
    One chain runs without vmap, as sgmcmc runs it: ``init``, then ``update(..., inplace=True)`` carrying the state.

    posteriors recommends a batch-mean log posterior, log p̃ / N, with ``temperature=1/N``; its
    update θ + lr ∇(log p̃ / N) + sqrt(2 lr T) ξ is ours with ``lr = η N``. Its state class (a
    tensordict ``TensorClass`` holding a dict) does not carry the chain dim through
    ``torch.func.vmap``, so the vmapped step takes and returns plain param dicts. The state it
    hands ``update`` is a namespace of the two fields ``update`` reads, params and step (the step
    count only feeds schedules, and lr and temperature are constants): building an ``SGLDState``
    (what ``init`` does) in every vmapped step cost about 33 µs a step more, which one chain run
    without vmap, carrying its state from step to step, does not pay. The ``SGLDState`` that
    ``update`` builds and returns is posteriors' own cost and stays in the timing.
    """
    import posteriors

    num_data = len(labels)

    def mean_log_posterior(
        params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        logits = functional_call(network, params, (inputs,))
        mean_log_likelihood = logits.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).mean()
        log_prior = posteriors.diag_normal_log_prob(params, normalize=False)
        return mean_log_likelihood + log_prior / num_data, torch.tensor([])

    transform = posteriors.sgmcmc.sgld.build(mean_log_posterior, lr=STEP_SIZE * num_data, temperature=1.0 / num_data)

    step_count = torch.tensor(0)

    def chain_update(params: dict[str, torch.Tensor], batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
        state, _ = transform.update(SimpleNamespace(params=params, step=step_count), batch)
        return state.params

    update = vmap(chain_update, randomness="different")

    def run_one_chain(num_steps: int) -> Run:  # posteriors' own loop: init, then update carrying the state
        state = transform.init({name: value.detach().clone() for name, value in network.named_parameters()})
        timer = Timer(features.device)
        for rows in chain_minibatch_rows(1, num_data, num_steps, features.device):
            state, _ = transform.update(state, (features[rows[0]], labels[rows[0]]), inplace=True)
        return timer.done(as_numpy(to_layout(dict(state.params))))

    if num_chains == 1:  # as sgmcmc runs one chain: without vmap
        return run_one_chain

    def run(num_steps: int) -> Run:
        params = {
            name: value.detach().expand(num_chains, *value.shape).clone() for name, value in network.named_parameters()
        }
        timer = Timer(features.device)
        for rows in chain_minibatch_rows(num_chains, num_data, num_steps, features.device):
            params = update(params, (features[rows], labels[rows]))
        return timer.done(as_numpy(to_layout({name: value[0] for name, value in params.items()})))

    return run


def blackjax_runners(
    features: torch.Tensor, labels: torch.Tensor, init: dict[str, torch.Tensor], num_chains: int
) -> tuple[Runner, Runner, dict[str, float]]:
    """``blackjax.sgld`` vmapped over chains: a jitted step in a Python loop, and ``lax.scan`` over an epoch.

    blackjax's SGLD is θ + ε ∇log p̃ + sqrt(2 ε T) ξ (``diffusions.overdamped_langevin``) with
    ``grad_estimator``'s log p̃ = log p(θ) + N mean_B log p(y | x, θ): ours with ε = η. Returns
    the two runners and the seconds of each one's first call (tracing and compiling).
    """
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.sgmcmc.gradients import grad_estimator

    num_data = len(labels)
    steps_per_epoch = num_data // BATCH_SIZE
    inputs, targets = jnp.asarray(features.cpu().numpy()), jnp.asarray(labels.cpu().numpy())
    start = {
        name: np.broadcast_to(value.cpu().numpy(), (num_chains, *value.shape)).copy() for name, value in init.items()
    }

    def log_prior(position: dict) -> jax.Array:
        return -0.5 * sum(jnp.sum(value**2) for value in jax.tree.leaves(position))

    def log_likelihood(position: dict, example: tuple[jax.Array, jax.Array]) -> jax.Array:
        x, y = example
        logits = jnp.tanh(x @ position["W1"] + position["b1"]) @ position["W2"] + position["b2"]
        return jax.nn.log_softmax(logits)[y]

    sgld = blackjax.sgld(grad_estimator(log_prior, log_likelihood, num_data))
    step_all = jax.vmap(sgld.step, in_axes=(0, 0, 0, None))

    def permute(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        key, permutation_key = jax.random.split(key)
        keys = jax.random.split(permutation_key, num_chains)
        return key, jax.vmap(lambda chain_key: jax.random.permutation(chain_key, num_data))(keys)

    def step(key: jax.Array, positions: dict, orders: jax.Array, position: jax.Array) -> tuple[jax.Array, dict]:
        key, noise_key = jax.random.split(key)
        rows = jax.lax.dynamic_slice_in_dim(orders, position * BATCH_SIZE, BATCH_SIZE, axis=1)
        batch = (inputs[rows], targets[rows])
        return key, step_all(jax.random.split(noise_key, num_chains), positions, batch, STEP_SIZE)

    def epoch(key: jax.Array, positions: dict) -> tuple[jax.Array, dict]:
        key, orders = permute(key)
        key, noise_key = jax.random.split(key)

        def body(positions: dict, xs: tuple[jax.Array, jax.Array]) -> tuple[dict, None]:
            position, step_key = xs
            return step(step_key, positions, orders, position)[1], None

        xs = (jnp.arange(steps_per_epoch), jax.random.split(noise_key, steps_per_epoch))
        return key, jax.lax.scan(body, positions, xs)[0]

    permute_jit = jax.jit(permute)
    step_jit = jax.jit(step, donate_argnums=1)
    epoch_jit = jax.jit(epoch, donate_argnums=1)
    positions_of_epoch = [jnp.asarray(position) for position in range(steps_per_epoch)]
    compile_seconds = {}

    def first_call(name: str, function: Callable, *args: object) -> None:
        started = time.perf_counter()
        jax.block_until_ready(function(*args))
        compile_seconds[name] = compile_seconds.get(name, 0.0) + time.perf_counter() - started

    first_call("loop", permute_jit, jax.random.key(1))
    _, orders = permute_jit(jax.random.key(1))
    first_call("loop", step_jit, jax.random.key(1), jax.tree.map(jnp.array, start), orders, positions_of_epoch[0])
    first_call("scan", epoch_jit, jax.random.key(1), jax.tree.map(jnp.array, start))

    def finish(timer: Timer, positions: dict) -> Run:
        jax.block_until_ready(positions)
        return timer.done({name: np.asarray(value[0]) for name, value in positions.items()})

    def run_loop(num_steps: int) -> Run:
        key, positions = jax.random.key(0), jax.tree.map(jnp.array, start)
        jax.block_until_ready(positions)
        timer = Timer()
        for _ in range(num_steps // steps_per_epoch):
            key, orders = permute_jit(key)
            for position in positions_of_epoch:
                key, positions = step_jit(key, positions, orders, position)
        return finish(timer, positions)

    def run_scan(num_steps: int) -> Run:
        key, positions = jax.random.key(0), jax.tree.map(jnp.array, start)
        jax.block_until_ready(positions)
        timer = Timer()
        for _ in range(num_steps // steps_per_epoch):
            key, positions = epoch_jit(key, positions)
        return finish(timer, positions)

    return run_loop, run_scan, compile_seconds


@dataclass
class Timed:
    """A configuration's fastest run, its warm-up seconds, and its last run's chain-0 training accuracy
    and distance from the start."""

    best: Run
    warmup_seconds: float
    accuracy: float
    distance: float


def sgmcmc_variants() -> tuple[dict[str, dict[str, object]], list[str]]:
    """The variants of :data:`SGMCMC_VARIANTS` that ``sample`` accepts, and the labels left out."""
    accepted = inspect.signature(sgmcmc.SGLD.sample).parameters
    usable = {label: options for label, options in SGMCMC_VARIANTS.items() if set(options) <= set(accepted)}
    return usable, [label for label in SGMCMC_VARIANTS if label not in usable]


def configurations(
    features: torch.Tensor, labels: torch.Tensor, network: nn.Module, chain_counts: tuple[int, ...]
) -> tuple[dict[tuple[str, int], Runner | str], dict[str, str]]:
    """(label, K) -> its runner, or why it is absent; and notes (versions, compile times)."""
    init = {name: value.detach().clone() for name, value in network.named_parameters()}
    layout_init = to_layout(init)
    variants, left_out = sgmcmc_variants()
    notes = {}
    if left_out:
        notes["left out"] = f"{', '.join(left_out)} (`sample` does not take its arguments yet)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import posteriors  # noqa: F401
        posteriors_missing = None
    except ImportError:
        posteriors_missing = "not installed"
    try:
        import blackjax  # noqa: F401
        import jax  # noqa: F401

        blackjax_missing = None
    except ImportError:
        blackjax_missing = "not installed"

    runners: dict[tuple[str, int], Runner | str] = {}
    compile_notes = []
    for num_chains in chain_counts:
        if num_chains == 1:
            runners[(FLOOR, 1)] = floor_runner(features, labels, network)
            runners[(SGD_FLOOR, 1)] = floor_runner(features, labels, network, noise=False)
        runners[("batched limit (hand-written backprop)", num_chains)] = batched_limit_runner(
            features, labels, layout_init, num_chains
        )
        runners[("torch.func reference: vmap(grad)", num_chains)] = torch_func_runner(
            features, labels, network, num_chains
        )
        for label, options in variants.items():
            runners[(label, num_chains)] = sgmcmc_runner(features, labels, network, num_chains, options)
        runners[(POSTERIORS, num_chains)] = posteriors_missing or posteriors_runner(
            features, labels, network, num_chains
        )
        if blackjax_missing:
            loop = scan = blackjax_missing
        else:
            loop, scan, seconds = blackjax_runners(features, labels, layout_init, num_chains)
            compile_notes.append(f"K={num_chains}: jit loop {seconds['loop']:.2f} s, scan {seconds['scan']:.2f} s")
        runners[("BlackJAX sgld, jit step in a Python loop", num_chains)] = loop
        runners[("BlackJAX sgld, lax.scan over an epoch", num_chains)] = scan
    if compile_notes:
        notes["BlackJAX first calls (trace + compile; excluded from the timings)"] = "; ".join(compile_notes)
    return runners, notes


def time_runners(
    runners: dict[tuple[str, int], Runner | str],
    start: dict[str, np.ndarray],
    num_steps: int,
    warmup_steps: int,
    max_rounds: int,
    budget_s: float,
) -> tuple[dict[tuple[str, int], Timed], int]:
    """Every runner's fastest of up to ``max_rounds`` interleaved rounds, after one warm-up run each;
    ``start`` is the params every chain starts from, in the batched layout."""
    features, labels = load_data()
    features, labels = features.numpy(), labels.numpy()
    present = {key: runner for key, runner in runners.items() if not isinstance(runner, str)}
    runs, warmup_seconds = interleaved_rounds(present, num_steps, warmup_steps, max_rounds, budget_s)
    timed = {
        key: Timed(
            min(done, key=lambda run: run.seconds),
            warmup_seconds[key],
            accuracy(done[-1].params, features, labels),
            distance(done[-1].params, start),
        )
        for key, done in runs.items()
    }
    return timed, len(next(iter(runs.values())))


def summary(rates: dict[tuple[str, int], float], chain_counts: tuple[int, ...]) -> list[dict[str, object]]:
    """The issue's target ratios from the measured chain-steps/s; "n/a" where a configuration is absent."""
    variants, _ = sgmcmc_variants()
    compiled = [label for label, options in SGMCMC_VARIANTS.items() if options.get("compile")]
    floor, sgd_floor = rates.get((FLOOR, 1)), rates.get((SGD_FLOOR, 1))

    def ratio(numerator: float | None, denominator: float | None) -> float | str:
        return "n/a" if numerator is None or denominator is None else numerator / denominator

    blackjax_loop = "BlackJAX sgld, jit step in a Python loop"
    blackjax_scan = "BlackJAX sgld, lax.scan over an epoch"

    rows = []

    def add(target: str, num_chains: int, value: float | str, goal: str, met: Callable[[float], bool]) -> None:
        verdict = "—" if isinstance(value, str) or goal == "none" else ("yes" if met(value) else "no")
        rows.append({"target": target, "K": num_chains, "measured": value, "goal": goal, "met": verdict})

    for label in variants:
        sgmcmc_rate = rates.get((label, 1))
        add(f"{label}: step time ÷ floor step time", 1, ratio(floor, sgmcmc_rate), "≤ 1.15", lambda v: v <= 1.15)
        add(
            f"{label}: step time ÷ the SGD-alone floor's (no noise; the issue's literal floor)",
            1,
            ratio(sgd_floor, sgmcmc_rate),
            "≤ 1.15",
            lambda v: v <= 1.15,
        )
    per_variant = [  # (baseline's name, its configuration, the K compared, goal, least ratio)
        ("batched limit", "batched limit (hand-written backprop)", [k for k in chain_counts if k >= 8], "≥ 0.7", 0.7),
        ("posteriors", POSTERIORS, chain_counts, "≥ 1", 1.0),
        ("BlackJAX (jit step)", blackjax_loop, chain_counts, "≥ 1", 1.0),
    ]
    for name, baseline, compared_counts, goal, least in per_variant:
        for label in variants:
            for num_chains in compared_counts:
                measured = ratio(rates.get((label, num_chains)), rates.get((baseline, num_chains)))
                add(f"{label} ÷ {name}", num_chains, measured, goal, lambda v, least=least: v >= least)
    best_of = [  # (which sgmcmc variants, baseline's name, its configuration, goal, least ratio)
        ("best sgmcmc compiled", compiled, "BlackJAX (jit step)", blackjax_loop, "≥ 1.3", 1.3),
        (
            "best sgmcmc",
            list(variants),
            "BlackJAX lax.scan (beyond the issue: no Python per step)",
            blackjax_scan,
            "none",
            0,
        ),
    ]
    for label, labels, name, baseline, goal, least in best_of:
        for num_chains in chain_counts:
            best = max((rates[(each, num_chains)] for each in labels if (each, num_chains) in rates), default=None)
            measured = ratio(best, rates.get((baseline, num_chains)))
            add(f"{label} ÷ {name}", num_chains, measured, goal, lambda v, least=least: v >= least)
    return rows


def machine(pinned: str, device: torch.device) -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor() or platform.machine(),
    )
    versions = [f"torch {torch.__version__} ({torch.get_num_threads()} thread) on {device}"]
    if device.type == "cuda":
        versions[0] += f" ({torch.cuda.get_device_name(device)})"
    for name in ("jax", "blackjax", "posteriors"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    if "jax" in sys.modules:
        versions[-3] += f" on {sys.modules['jax'].default_backend()}"
    return (
        f"{os.cpu_count()} CPUs visible ({model}), process {pinned}, Python {platform.python_version()}, "
        f"{', '.join(versions)}, XLA_FLAGS={os.environ['XLA_FLAGS']!r}"
    )


def report(
    timed: dict[tuple[str, int], Timed],
    runners: dict[tuple[str, int], Runner | str],
    notes: dict[str, str],
    num_steps: int,
    rounds: int,
    load: tuple[float, float],
    pinned: str,
    chain_counts: tuple[int, ...],
    device: torch.device,
) -> str:
    rates = {key: key[1] * num_steps / result.best.seconds for key, result in timed.items()}
    floor_key = (FLOOR, 1)
    num_parameters = sum(value.size for value in timed[floor_key].best.params.values())
    floor = rates[floor_key]
    rows = []
    for num_chains in chain_counts:
        for key, runner in runners.items():
            if key[1] != num_chains:
                continue
            if num_chains > 1 and key[0].startswith("batched limit"):
                rows.append(
                    {"configuration": f"K × floor (sequential), K={num_chains}", "K": num_chains, "rate": floor}
                )
            rows.append(
                {"configuration": key[0], "K": num_chains, "rate": runner if isinstance(runner, str) else rates[key]}
            )
    table_rows = []
    for row in rows:
        key, rate = (row["configuration"], row["K"]), row["rate"]
        limit = rates.get(("batched limit (hand-written backprop)", row["K"]))
        present = not isinstance(rate, str)
        result = timed.get(key) or (timed[floor_key] if row["configuration"].startswith("K × floor") else None)
        table_rows.append(
            {
                "configuration": row["configuration"],
                "K": row["K"],
                "chain-steps/s": rate,
                "ratio to floor": rate / floor if present else "—",
                "ratio to batched limit (same K)": rate / limit if present else "—",
                "CPU s / wall s": result.best.cpu_seconds / result.best.seconds if result else "—",
                "train accuracy, chain 0": result.accuracy if result else "—",
                "‖θ − θ₀‖, chain 0": result.distance if result else "—",
            }
        )
    notes = dict(notes)
    for label, options in SGMCMC_VARIANTS.items():
        warmups = [(key[1], result.warmup_seconds) for key, result in timed.items() if key[0] == label]
        if options.get("compile") and warmups:
            notes[f"{label}, first calls (the one-epoch warm-up run, which compiles; excluded from the timings)"] = (
                "; ".join(f"K={num_chains}: {seconds:.1f} s" for num_chains, seconds in warmups)
            )

    def number(column: str, value: float) -> str:
        if column == "chain-steps/s":
            return f"{value:,.0f}"
        if column == "train accuracy, chain 0":
            return f"{value:.3f}"
        return f"{value:.2f}"

    lines = [
        "# W1: Bayesian MLP 64-100-10 on digits, SGLD chain-steps per second",
        "",
        f"Digits (N = 1797, standardised), MLP 64-100-10 tanh, N(0, 1) prior, categorical likelihood, batch "
        f"{BATCH_SIZE}, every chain its own minibatches reshuffled per epoch, SGLD η = {STEP_SIZE:g}, T = 1, float32. "
        f"{num_steps} steps per run; fastest of {rounds} interleaved round(s) after a one-epoch warm-up.",
        "",
        f"Machine: {machine(pinned, device)}. "
        f"Load average (1 min) {load[0]:.2f} at the start, {load[1]:.2f} at the end.",
        "",
        f"Floor: {1e6 / floor:.0f} µs per step. Ratios divide chain-steps/s; above 1 is faster. "
        "CPU s / wall s: process CPU time over wall time of the fastest run (≤ 1 means one core). "
        "Train accuracy and ‖θ − θ₀‖: chain 0 after the last run, which in every configuration starts from "
        "the same θ₀. The accuracy checks that every configuration fits alike, which plain SGD does too; "
        "the distance checks that it samples: the noise alone moves a chain by about sqrt(2 η n P) = "
        f"{math.sqrt(2 * STEP_SIZE * num_steps * num_parameters):.0f} in the n = {num_steps} steps of a run "
        f"(P = {num_parameters:,} parameters), the N(0, 1) prior keeping it near sqrt(P) = "
        f"{math.sqrt(num_parameters):.0f} over long runs, while a run without the noise moves much less "
        "(about 10 in 2016 steps of plain SGD from the same start).",
        "",
        markdown_table(table_rows, number),
        "",
        *(f"{name}: {text}." for name, text in notes.items()),
        "",
        "## Targets of issue 9",
        "",
        markdown_table(summary(rates, chain_counts), lambda column, value: f"{value:.2f}"),
    ]
    return "\n".join(lines)


PROFILE_STEPS = 200
COMPILED_STEP_PARTS: dict[str, Callable[[str], bool]] = {  # profiler event name -> part; first match wins
    "matmuls (aten bmm, mm, addmm)": lambda name: name in ("aten::bmm", "aten::mm", "aten::addmm", "aten::baddbmm"),
    "normal draws (aten normal_, one call per chain)": lambda name: name == "aten::normal_",
    "tanh and its backward (inductor kernels)": lambda name: name.startswith("graph_") and "tanh" in name,
    "other inductor kernels (softmax, update, divergence check)": lambda name: name.startswith("graph_"),
    "dynamo guard evaluation": lambda name: name == "TorchDynamo Cache Lookup",
    "minibatch order and gather (randperm, index_select)": lambda name: (
        name in ("aten::randperm", "aten::index_select")
    ),
}
"""The parts of a compiled step: each torch.profiler event's own (self) CPU time, summed by part."""


def microseconds(call: Callable[[], object], calls: int = 200, rounds: int = 5) -> float:
    """µs a call: the fastest of ``rounds`` rounds of ``calls`` calls, after 10 warm-up calls.

    ``call`` must block until its work is done (a jax call: ``jax.block_until_ready``).
    """
    for _ in range(10):
        call()
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter() - started) / calls)
    return 1e6 * best


def step_microseconds(runner: Runner, num_steps: int = PROFILE_STEPS) -> float:
    """µs a step: the fastest of 3 runs of ``num_steps`` steps, after one warm-up run."""
    runner(num_steps)
    return 1e6 * min(runner(num_steps).seconds for _ in range(3)) / num_steps


def compiled_step_parts(runner: Runner) -> dict[str, float]:
    """µs a step of a compiled sgmcmc run: the step without the profiler (:func:`step_microseconds`),
    the profiled step, and the :data:`COMPILED_STEP_PARTS` of the profiled step."""
    with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):  # inductor kernels as profiler events
        whole = step_microseconds(runner)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            profiled = runner(PROFILE_STEPS).seconds
    parts = dict.fromkeys(COMPILED_STEP_PARTS, 0.0)
    for event in profiler.key_averages():
        part = next((part for part, matches in COMPILED_STEP_PARTS.items() if matches(event.key)), None)
        if part is not None:
            parts[part] += event.self_cpu_time_total / PROFILE_STEPS
    return {
        "whole step": whole,
        "whole step, profiled": 1e6 * profiled / PROFILE_STEPS,
        **parts,
        "the rest: other ops, wrappers, Python (whole step − the parts)": whole - sum(parts.values()),
    }


def eager_gradients(
    features: torch.Tensor, labels: torch.Tensor, network: nn.Module, num_chains: int
) -> dict[str, float]:
    """µs of the eager step's gradient of all chains on one minibatch each: as ``sample`` takes it
    (one ``autograd.grad`` of the vmapped log posterior; of the plain one for a single chain), and
    without vmap, one chain after another."""
    posterior = ModulePosterior(network, Classification(), num_data=len(labels), prior_scale=1.0)
    params = {name: value.expand(num_chains, *value.shape).clone() for name, value in posterior.params().items()}
    batch = (features[:BATCH_SIZE].expand(num_chains, -1, -1), labels[:BATCH_SIZE].expand(num_chains, -1))
    potential = ChainPotential(posterior.log_posterior, lambda chain_params: chain_params, True, True)

    def chain_by_chain() -> None:
        for chain in range(num_chains):
            leaves = {name: value[chain].requires_grad_() for name, value in params.items()}
            log_posterior = posterior.log_posterior(leaves, (batch[0][chain], batch[1][chain]))
            torch.autograd.grad(log_posterior, tuple(leaves.values()))

    return {
        "as sample takes it: one autograd.grad, vmapped from K = 2": microseconds(lambda: potential(params, batch)),
        "without vmap: one autograd.grad per chain, chain after chain": microseconds(chain_by_chain),
    }


def work_alone(num_chains: int, num_features: int) -> dict[str, float]:
    """µs of a W1 step's heavy work done alone, for all chains: the five matmuls (in the compiled
    graph's layouts), tanh of the hidden layer, and the noise; by torch, and by jax.jit when installed."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(num_chains, BATCH_SIZE, num_features, generator=generator)
    hidden = torch.randn(num_chains, BATCH_SIZE, HIDDEN, generator=generator)
    d_hidden, d_logits = torch.randn_like(hidden), torch.randn(num_chains, BATCH_SIZE, NUM_CLASSES)
    weight_1 = torch.randn(num_chains, HIDDEN, num_features, generator=generator)  # nn.Linear: (out, in)
    weight_2 = torch.randn(num_chains, NUM_CLASSES, HIDDEN, generator=generator)

    def products() -> None:
        torch.bmm(inputs, weight_1.transpose(1, 2))  # forward, layer 1
        torch.bmm(hidden, weight_2.transpose(1, 2))  # forward, layer 2
        torch.bmm(d_logits, weight_2)  # back to the hidden layer
        torch.bmm(d_hidden.transpose(1, 2), inputs)  # ∂/∂W1
        torch.bmm(d_logits.transpose(1, 2), hidden)  # ∂/∂W2

    size = num_params(num_features)
    noise = torch.empty(num_chains, size)
    generators = [torch.Generator().manual_seed(chain) for chain in range(num_chains)]

    def normal_draws() -> None:
        for chain, chain_generator in enumerate(generators):
            noise[chain].normal_(generator=chain_generator)

    def bias_tanh(hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.tanh(hidden + bias)

    bias = torch.zeros(num_chains, 1, HIDDEN)
    compiled_tanh = torch.compile(bias_tanh, dynamic=False)
    decomposed_tanh = torch.compile(bias_tanh, dynamic=False, options={"cpp.use_decompose_tanh": True})
    costs = {
        "torch: the five matmuls (torch.bmm)": microseconds(products),
        "torch: tanh of the hidden layer": microseconds(lambda: torch.tanh(hidden)),
        "torch.compile: tanh(hidden + bias), Sleef tanh (inductor's default)": microseconds(
            lambda: compiled_tanh(hidden, bias)
        ),
        "torch.compile: tanh(hidden + bias), cpp.use_decompose_tanh": microseconds(
            lambda: decomposed_tanh(hidden, bias)
        ),
        "torch: the noise, one normal_ per chain": microseconds(normal_draws),
    }
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return costs
    arrays = [jnp.asarray(value.numpy()) for value in (inputs, hidden, d_hidden, d_logits, weight_1, weight_2)]
    einsum = jnp.einsum
    jax_products = jax.jit(  # arguments, not closed-over constants, which XLA would fold at compile time
        lambda x, h, dh, dz, w1, w2: (
            einsum("kbi,khi->kbh", x, w1),
            einsum("kbh,kch->kbc", h, w2),
            einsum("kbc,kch->kbh", dz, w2),
            einsum("kbh,kbi->khi", dh, x),
            einsum("kbc,kbh->kch", dz, h),
        )
    )
    jax_tanh, jax_normal = jax.jit(jnp.tanh), jax.jit(lambda key: jax.random.normal(key, (num_chains, size)))
    key = jax.random.key(0)
    costs["XLA: the five matmuls (jax.jit of einsum)"] = microseconds(
        lambda: jax.block_until_ready(jax_products(*arrays))
    )
    costs["XLA: tanh of the hidden layer"] = microseconds(lambda: jax.block_until_ready(jax_tanh(arrays[1])))
    costs["XLA: the noise, one jax.random.normal"] = microseconds(lambda: jax.block_until_ready(jax_normal(key)))
    return costs


def profile(
    features: torch.Tensor, labels: torch.Tensor, network: nn.Module, chain_counts: tuple[int, ...], pinned: str
) -> str:
    """Where the time of a compiled W1 step goes, beside the same heavy work done alone by torch and XLA."""
    load_start = os.getloadavg()[0]
    columns = [f"K = {num_chains}" for num_chains in chain_counts]
    table: dict[str, dict[str, float | str]] = {}

    def put(row: str, column: str, value: float | str) -> None:
        table.setdefault(row, dict.fromkeys(columns, "n/a"))[column] = value

    matmul_flops = 2 * BATCH_SIZE * (2 * features.shape[1] * HIDDEN + 3 * HIDDEN * NUM_CLASSES)
    for num_chains, column in zip(chain_counts, columns, strict=True):
        eager = sgmcmc_runner(features, labels, network, num_chains, {})
        put("sgmcmc.SGLD: whole step", column, step_microseconds(eager))
        for name, value in eager_gradients(features, labels, network, num_chains).items():
            put(f"sgmcmc.SGLD: its gradient alone, {name}", column, value)
        compiled = sgmcmc_runner(features, labels, network, num_chains, {"compile": True})
        for part, value in compiled_step_parts(compiled).items():
            put(f"sgmcmc.SGLD, compile=True: {part}", column, value)
        if importlib.util.find_spec("blackjax"):
            layout_init = to_layout({name: value.detach() for name, value in network.named_parameters()})
            loop = blackjax_runners(features, labels, layout_init, num_chains)[0]
            epochs = len(labels) // BATCH_SIZE * 7  # its runner draws new orders a whole epoch at a time
            put("BlackJAX sgld, jit step in a Python loop: whole step", column, step_microseconds(loop, epochs))
        for name, value in work_alone(num_chains, features.shape[1]).items():
            put(f"alone, {name}", column, value)
            if "matmuls" in name:
                put(f"alone, {name}: GFLOP/s", column, num_chains * matmul_flops / value / 1e3)
    square = torch.randn(1024, 1024)
    large_gemm = 2 * 1024**3 / microseconds(lambda: torch.mm(square, square), calls=5) / 1e3
    rows = [{"µs a step of all K chains (GFLOP/s where marked)": row, **values} for row, values in table.items()]
    return "\n".join(
        [
            "# Where a W1 step's time goes",
            "",
            f"Machine: {machine(pinned, features.device)}. Load average (1 min) {load_start:.2f} at the start, "
            f"{os.getloadavg()[0]:.2f} at the end.",
            "",
            f"Whole steps: the fastest of 3 runs of {PROFILE_STEPS} steps without the profiler, after a "
            "warm-up run (BlackJAX: of 7 epochs). The compiled step's parts come from a run under "
            "torch.profiler (each event's own CPU time, summed by part; the profiled step shows what the "
            "profiler adds). The eager step's gradient is timed alone on one minibatch a chain, as "
            "`sample` takes it and without vmap, chain after chain. The 'alone' "
            f"rows time a step's heavy work by itself, for all chains: W1's five matmuls "
            f"({matmul_flops / 1e6:.2f} MFLOP a chain), tanh of the (K, {BATCH_SIZE}, {HIDDEN}) hidden "
            f"layer, and the noise ({num_params(features.shape[1]):,} normals a chain). For scale, one "
            f"1024 × 1024 float32 torch.mm runs at {large_gemm:.0f} GFLOP/s on this core.",
            "",
            markdown_table(rows, lambda column, value: f"{value:.0f}"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 round, print only (a smoke test)")
    parser.add_argument("--profile", action="store_true", help="profile where a step's time goes instead")
    parser.add_argument("--device", default="cpu", help="torch device of the torch configurations (default cpu)")
    parser.add_argument(
        "--chains",
        default=",".join(map(str, CHAIN_COUNTS)),
        help="comma-separated chain counts K (default %(default)s; e.g. 1,8,32,128,1024 on a GPU)",
    )
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    chain_counts = tuple(int(count) for count in arguments.chains.split(","))
    if chain_counts[0] != 1:
        parser.error("--chains must start with 1 (the one-chain targets compare with the floor)")
    if arguments.profile and device.type != "cpu":
        parser.error("--profile times CPU work (torch.profiler's CPU events); run it without --device")
    pinned = pin_to_one_core()
    torch.set_num_threads(1)
    features, labels = load_data()
    steps_per_epoch = len(labels) // BATCH_SIZE
    num_steps = steps_per_epoch * (QUICK_EPOCHS if arguments.quick else EPOCHS)
    check_batched_gradient(features, labels)
    features, labels = features.to(device), labels.to(device)
    torch.manual_seed(0)
    network = make_network(features.shape[1]).to(device)
    if arguments.profile:
        table = profile(features, labels, network, chain_counts, pinned)
        print(table)
        (RESULTS / "speed_mlp_profile.md").write_text(table + "\n")
        print(f"\nwritten to {RESULTS / 'speed_mlp_profile.md'}")
        return
    load_start = os.getloadavg()[0]
    runners, notes = configurations(features, labels, network, chain_counts)
    max_rounds, budget_s = (1, 0.0) if arguments.quick else (MAX_ROUNDS, TIME_BUDGET_S)
    start = as_numpy(to_layout(dict(network.named_parameters())))
    timed, rounds = time_runners(runners, start, num_steps, steps_per_epoch, max_rounds, budget_s)
    load = (load_start, os.getloadavg()[0])
    table = report(timed, runners, notes, num_steps, rounds, load, pinned, chain_counts, device)
    print(table)
    if not arguments.quick:
        results = RESULTS / ("speed_mlp.md" if device.type == "cpu" else f"speed_mlp_{device.type}.md")
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(table + "\n")
        print(f"\nwritten to {results}")


if __name__ == "__main__":
    main()
