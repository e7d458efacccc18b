"""Any ``torch.nn.Module`` as a Bayesian model: a likelihood of its outputs and a Gaussian prior.

The sampled parameters are the module's ``named_parameters()`` that require grad, passed to the
module through ``torch.func.functional_call``, so one module serves every chain under
``torch.func.vmap``. Parameters frozen with ``requires_grad_(False)`` (say, a pretrained feature
extractor under a Bayesian last layer) are held fixed at their values, as buffers (e.g. batch-norm
statistics) are: batch norm and dropout must be in eval mode.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm as HookSpectralNorm

from sgmcmc._checks import count, positive, warn_caller
from sgmcmc.chains import as_dtype, at_least_float32, start_seeds
from sgmcmc.log_density import minibatch_log_posterior

__all__ = ["Classification", "Regression", "ModulePosterior"]

Params = dict[str, torch.Tensor]


class Classification:
    """Categorical likelihood of class labels given logits: log p(y | x, θ) = log softmax(f_θ(x))_y."""

    task = "classification"

    def log_likelihood(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example log-likelihood, shape (|B|,), of logits (|B|, classes) and integer labels (|B|,)."""
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            # checked by dtype, which vmap and torch.compile allow: a value check would need a host sync
            raise TypeError(
                f"Classification takes integer class labels as targets, got dtype {targets.dtype}; convert "
                "them with .long() (a label cast from floats is truncated: 0.7 would be class 0)"
            )
        if targets.shape != outputs.shape[:-1]:
            raise ValueError(
                f"Classification takes labels of shape (|B|,) for logits (|B|, classes), got labels "
                f"{tuple(targets.shape)} for logits {tuple(outputs.shape)} (labels of shape (|B|, 1): .squeeze(-1))"
            )
        if outputs.shape[-1] < 2:
            raise ValueError(
                f"Classification takes logits for 2 or more classes, got outputs of shape {tuple(outputs.shape)}; "
                "a binary model with one logit z can output torch.cat([torch.zeros_like(z), z], -1), whose "
                "softmax is (1 − sigmoid(z), sigmoid(z))"
            )
        # log_softmax + gather, not cross_entropy: under vmap, nll_loss is an order of magnitude slower
        log_probabilities = outputs.log_softmax(dim=-1)
        try:
            return log_probabilities.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
        except RuntimeError as error:  # a label out of range: gather's message does not say what the index was
            raise ValueError(
                f"Classification takes labels 0 … {outputs.shape[-1] - 1} for logits of {outputs.shape[-1]} classes, "
                f"and a label is outside them ({error}); labels counted from 1 need − 1, and more classes need more "
                "outputs"
            ) from error

    def predictive(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (…, classes) from logits."""
        return outputs.softmax(dim=-1)


class Regression:
    """Gaussian likelihood with a known noise scale: y ~ N(f_θ(x), noise_scale²).

    Args:
        noise_scale: σ, the standard deviation of the observation noise (in the targets' units).
    """

    task = "regression"

    def __init__(self, noise_scale: float = 1.0) -> None:
        self.noise_scale = positive("noise_scale", noise_scale)

    def log_likelihood(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-example log-likelihood, shape (|B|,), of outputs (|B|, 1) or (|B|,) and targets (|B|,)."""
        if targets.ndim != 1 or outputs.shape not in ((len(targets), 1), (len(targets),)):
            raise ValueError(
                f"Regression takes targets of shape (|B|,) and outputs (|B|, 1) or (|B|,), got targets "
                f"{tuple(targets.shape)} and outputs {tuple(outputs.shape)} (targets of shape (|B|, 1): .squeeze(-1))"
            )
        mean = outputs.reshape(targets.shape)
        return -0.5 * ((targets - mean) / self.noise_scale) ** 2 - math.log(self.noise_scale * math.sqrt(2 * math.pi))

    def predictive(self, outputs: torch.Tensor) -> torch.Tensor:
        """The predictive mean (|B|,) from outputs (|B|, 1) or (|B|,) (one batch of one point too)."""
        return outputs if outputs.ndim == 1 else outputs.squeeze(-1)


def _depends_on_training_mode(module: nn.Module) -> bool:
    """Whether ``module`` in training mode would update its buffers (batch or instance norm with running
    statistics) or draw from the global RNG (dropout, also inside recurrent and attention layers, and
    RReLU's random slopes). Dropout called as a function in a custom ``forward`` cannot be seen here."""
    if isinstance(module, nn.modules.batchnorm._NormBase):
        return isinstance(module, nn.modules.batchnorm._BatchNorm) or module.track_running_stats
    if isinstance(module, (nn.RNNBase, nn.MultiheadAttention)):
        return module.dropout > 0
    # spectral norm's power iteration updates its u and v buffers at every call in training mode
    spectral_norm_hooks = any(isinstance(hook, HookSpectralNorm) for hook in module._forward_pre_hooks.values())
    return spectral_norm_hooks or isinstance(module, (nn.modules.dropout._DropoutNd, nn.RReLU, _SpectralNorm))


@contextlib.contextmanager
def _attention_fastpath_off(module_has_attention: bool) -> Iterator[None]:
    """In eval mode ``nn.MultiheadAttention`` and the Transformer layers run torch's fused kernels, which
    have no derivative under ``torch.func``'s transforms (sampling more than one chain failed); their
    composite path is the same function. Dynamo refuses the switch, and compiles the composite path anyway."""
    if not module_has_attention or torch.compiler.is_compiling():
        yield
        return
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _sum_of_squares(value: torch.Tensor) -> torch.Tensor:
    """Σ value², in :func:`sgmcmc.chains.at_least_float32`: in float16, 256² is already inf, and the log
    prior's constant of a network of some 70,000 weights is below float16's −65504."""
    return as_dtype(value, at_least_float32(value.dtype)).square().sum()


def _reset(module: nn.Module) -> Callable[[], None] | None:
    """The method that redraws ``module``'s own parameters, or None (torch names it ``_reset_parameters`` in a few)."""
    return getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)


class ModulePosterior:
    """p(θ | data) ∝ Π_i p(y_i | f_θ(x_i)) Π_j N(θ_j; 0, s_j²) for the parameters θ of ``module``
    that require grad (the frozen ones are held fixed and have no prior).

    Args:
        module: the network f_θ; its current parameter values are :meth:`params`.
        likelihood: :class:`Classification`, :class:`Regression` or any object with
            ``log_likelihood(outputs, targets) -> (|B|,)`` and ``predictive(outputs)``.
        num_data: N, the number of training examples (the minibatch estimate scales by N/|B|).
        prior_scale: s, the prior standard deviation: one float for every parameter, or a dict
            of ``fnmatch`` patterns over parameter names to scales, the first match applying
            (e.g. ``{"*.bias": 10.0, "*": 1.0}``).

    Batches are ``(inputs, targets)`` with inputs (|B|, …) for the module.
    """

    def __init__(
        self,
        module: nn.Module,
        likelihood: Any,
        num_data: int,
        prior_scale: float | Mapping[str, float] = 1.0,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if isinstance(likelihood, type):
            raise TypeError(
                f"likelihood is the class {likelihood.__name__}; give an instance, such as {likelihood.__name__}()"
            )
        missing = [name for name in ("log_likelihood", "predictive") if not callable(getattr(likelihood, name, None))]
        if missing:
            raise TypeError(
                f"likelihood must have log_likelihood(outputs, targets) and predictive(outputs) methods, as "
                f"Classification() and Regression() do; {type(likelihood).__name__} {likelihood!r} lacks {missing}"
            )
        self.module = module
        self.likelihood = likelihood
        self.num_data = count("num_data", num_data, 1)
        self._shapes = {name: value.shape for name, value in self._sampled(module)}
        names = list(self._shapes)
        if not names:
            frozen = sum(1 for _ in module.parameters())
            raise ValueError(
                f"{type(module).__name__} has no parameters to sample"
                + (f": all {frozen} of its parameters have requires_grad=False" if frozen else "")
            )
        self.prior_scales = {name: self._prior_scale(name, prior_scale) for name in names}
        if isinstance(prior_scale, Mapping):
            unmatched = [pattern for pattern in prior_scale if not fnmatch.filter(names, pattern)]
            if unmatched:  # a typo, or "*.bias" for a top-level module's "bias": its scale would silently not apply
                raise ValueError(f"prior_scale patterns {unmatched} match no sampled parameter; the names are {names}")
            applied = {next(p for p in prior_scale if fnmatch.fnmatchcase(name, p)) for name in names}
            shadowed = [pattern for pattern in prior_scale if pattern not in applied]
            if shadowed:  # {"*": 1.0, "*.bias": 10.0}: the bias scale would silently not apply either
                raise ValueError(
                    f"prior_scale patterns {shadowed} match only parameters that an earlier pattern matches, and the "
                    "first match applies: put the more specific patterns first (e.g. {'*.bias': 10.0, '*': 1.0})"
                )
        self._names_by_scale: dict[float, list[str]] = {}
        for name, scale in self.prior_scales.items():
            self._names_by_scale.setdefault(scale, []).append(name)
        self._log_normaliser = -sum(
            shape.numel() * (math.log(self.prior_scales[name]) + 0.5 * math.log(2 * math.pi))
            for name, shape in self._shapes.items()
        )
        self.log_posterior = minibatch_log_posterior(self.log_prior, self.log_likelihood, self.num_data)
        self._has_attention = any(
            isinstance(submodule, (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer))
            for submodule in module.modules()
        )
        self._mode_dependent = [
            (name, submodule) for name, submodule in module.named_modules() if _depends_on_training_mode(submodule)
        ]
        batch_statistics = [
            name
            for name, submodule in module.named_modules()
            if isinstance(submodule, nn.modules.batchnorm._BatchNorm) and not submodule.track_running_stats
        ]
        if batch_statistics:
            raise ValueError(
                f"batch norm submodules {batch_statistics} have track_running_stats=False, so they normalise by "
                "each batch's own statistics even in eval mode: an example's likelihood then depends on the others "
                "in its batch, and the minibatch estimate (N/|B|) Σ is biased; make them with "
                "track_running_stats=True (with running statistics estimated beforehand)"
            )

    @staticmethod
    def _sampled(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return [(name, value) for name, value in module.named_parameters() if value.requires_grad]

    @staticmethod
    def _prior_scale(name: str, prior_scale: float | Mapping[str, float]) -> float:
        if not isinstance(prior_scale, Mapping):
            return positive("prior_scale", prior_scale)
        for pattern, scale in prior_scale.items():
            if fnmatch.fnmatchcase(name, pattern):
                return positive(f"prior_scale[{pattern!r}]", scale)
        raise ValueError(f"parameter {name!r} matches no pattern of prior_scale {list(prior_scale)}; add '*'")

    def params(self) -> Params:
        """The module's current sampled parameters, detached: an ``init`` for :meth:`sgmcmc.Sampler.sample`."""
        return {name: value.detach().clone() for name, value in self._sampled(self.module)}

    def initial_params(self, num_chains: int, seed: int) -> Params:
        """``num_chains`` independent initialisations, stacked (use with ``stacked_init=True``).

        Chain c's parameters are the module's own initialisation (``reset_parameters``, or torch's
        private ``_reset_parameters`` as in ``nn.MultiheadAttention``, of every submodule) under
        chain c's seed of :func:`~sgmcmc.chains.start_seeds` (independent of other seeds' starts and
        of the chains' noise streams), drawn on the CPU and moved to each parameter's device (the
        same starts on every device); the global RNGs are left as they were. A parameter registered
        on a module with neither cannot be redrawn: it starts at the module's value in every chain,
        and a ``RuntimeWarning`` names it.
        """
        num_chains = count("num_chains", num_chains, 1)
        fixed = [
            f"{module_name}.{name}" if module_name else name
            for module_name, module in self.module.named_modules()
            if _reset(module) is None
            for name, value in module.named_parameters(recurse=False)
            if value.requires_grad
        ]
        if fixed:
            warn_caller(
                f"parameters {fixed} belong to modules without reset_parameters(), so every chain starts them at "
                "the module's current values, not at draws from seed; give those modules a reset_parameters() "
                "or spread the starts with sample(..., init_jitter=...)",
                RuntimeWarning,
            )
        starts = []
        for chain_seed in start_seeds(seed, num_chains):
            # drawn on the CPU, whose RNG alone fork_rng restores here: the same starts on every device
            fresh = copy.deepcopy(self.module).cpu()
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(chain_seed)  # torch.manual_seed would reseed the GPUs too
                for submodule in fresh.modules():
                    reset = _reset(submodule)
                    if reset is not None:
                        reset()
            starts.append(dict(fresh.named_parameters()))
        devices = {name: value.device for name, value in self._sampled(self.module)}
        stacked = {name: torch.stack([start[name].detach() for start in starts]) for name in self.prior_scales}
        return {name: value.to(devices[name]) for name, value in stacked.items()}

    def __call__(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        """f_θ(inputs): the module's outputs with sampled parameters ``params`` (one chain)."""
        if params.keys() != self.prior_scales.keys():
            # another key would be sampled under no prior (a frozen parameter, a buffer), a missing one not at all
            raise ValueError(
                f"params must have exactly the sampled parameters' names {list(self.prior_scales)} (from "
                f"params() or initial_params()); unexpected {sorted(params.keys() - self.prior_scales.keys())}, "
                f"missing {sorted(self.prior_scales.keys() - params.keys())}"
            )
        reshaped = {name: tuple(value.shape) for name, value in params.items() if value.shape != self._shapes[name]}
        if reshaped:
            expected = {name: tuple(self._shapes[name]) for name in reshaped}
            raise ValueError(
                f"params of one network have the module's shapes {expected}, got {reshaped}; params stacked over "
                "chains (initial_params()) are sampled with stacked_init=True"
            )
        training = [name for name, submodule in self._mode_dependent if submodule.training]
        if training:
            # batch norm would update its buffers at every call, dropout draw from the global RNG
            raise ValueError(
                f"submodules {training} of the module are in training mode; call module.eval() first (batch norm "
                "then uses its running statistics, held fixed, and dropout is off)"
            )
        try:
            with _attention_fastpath_off(self._has_attention):
                outputs = functional_call(self.module, params, (inputs,))
        except RuntimeError as error:
            floating = sorted({str(value.dtype) for value in params.values() if value.is_floating_point()})
            if isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and str(inputs.dtype) not in floating:
                # numpy's float64 features and a float32 network: torch's message names neither
                raise TypeError(
                    f"ModulePosterior: the inputs are {inputs.dtype} but the module's sampled parameters are "
                    f"{', '.join(floating)}, and the module failed on them ({error}); convert the data to the "
                    "parameters' dtype (e.g. inputs.float()), or the module to the data's (module.double())"
                ) from error
            raise
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(
                f"ModulePosterior: the module returned a {type(outputs).__name__}, not one tensor of outputs (logits "
                "or means) for the likelihood; wrap it in a module whose forward returns that tensor"
            )
        return outputs

    def log_prior(self, params: Params) -> torch.Tensor:
        """Σ_j log N(θ_j; 0, s_j²) = Σ_j [−θ_j²/(2 s_j²) − log s_j − log(2π)/2], shape ()."""
        # one scaling per prior scale, not per parameter: under vmap each op has a fixed cost of
        # tens of µs whatever its size (a torch.cat per scale saves more ops eagerly, but costs a copy
        # that made the compiled step 5% slower)
        log_prior = self._log_normaliser
        for scale, names in self._names_by_scale.items():
            log_prior = log_prior - sum(_sum_of_squares(params[name]) for name in names) / (2 * scale**2)
        return log_prior

    def log_likelihood(self, params: Params, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """log p(y_i | f_θ(x_i)) for each example of the batch, shape (|B|,)."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            described = f"a dict with keys {list(batch)}" if isinstance(batch, Mapping) else type(batch).__name__
            raise TypeError(
                f"ModulePosterior takes batches of (inputs, targets), got {described}; have the loader yield "
                "pairs, or write a log_likelihood of your own for sgmcmc.minibatch_log_posterior"
            )
        inputs, targets = batch
        return self.likelihood.log_likelihood(self(params, inputs), targets)

    def predictive(self, params: Params, inputs: torch.Tensor) -> torch.Tensor:
        """The likelihood's predictive (class probabilities, or the mean) at ``inputs`` for one chain."""
        return self.likelihood.predictive(self(params, inputs))
