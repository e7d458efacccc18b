"""``torch.optim.Optimizer`` front doors to the samplers' update rules, for an ordinary training loop.

Each optimizer calls the same update function as its sampler (``langevin_step``,
``sghmc_step``, ``psgld_step``, ``asgld_step``): one implementation, two front doors. The loss
you back-propagate is −log p̃(θ), the full-data scale of the samplers (e.g. N × mean NLL minus
the log prior), so ``lr`` is the samplers' step size η. The samplers' law is ∝ exp(−loss/T), so
the loss divided by N (a mean loss) at ``temperature=1`` samples a posterior tempered N-fold,
far too wide. With a mean loss, these settings move θ exactly as η on the full-data loss:
``temperature=1/N`` and ``lr`` = N η for SGLD and SGHMC (and SGHMC's ``noise_estimate`` divided
by N); ``temperature=1/N``, ``lr`` = η and ``eps`` divided by N for PSGLD, whose preconditioner
scales with the gradient. ``seed`` gives the noise stream: with one parameter
tensor, ``optim.SGLD([theta], lr, seed=s)`` moves θ exactly as
``sgmcmc.SGLD(...).sample(theta, num_chains=1, seed=s)`` on the same gradients. ``state_dict()``
holds the noise stream's state beside the momentum and preconditioner, so a run resumed with
``load_state_dict`` goes on with the noise it would have drawn. A ``torch.optim.lr_scheduler``
may change ``lr`` between steps; each step checks it is finite and ≥ 0, and the other
hyperparameters of every param group as the constructor does. ``lr`` = 0 leaves θ still, except
under SGHMC: its momentum v, made at earlier steps' η as in the sampler (Chen et al.'s eq. 15
with η changing between steps, as cyclical SGHMC uses it), carries on, θ ← θ + (1 − α) v, and
fades geometrically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from sgmcmc._checks import below_one, floating_point, nonnegative, positive
from sgmcmc.asgld import asgld_step
from sgmcmc.chains import ChainGenerators, chain_seeds, zero_moments_like
from sgmcmc.psgld import psgld_step
from sgmcmc.sghmc import check_friction, mass_in_dtype, sghmc_step, stationary_momentum
from sgmcmc.sgld import langevin_step

__all__ = ["SGLD", "SGHMC", "PSGLD", "ASGLD"]


def _refuse_set(params: Any) -> None:
    """Raise if ``params`` is a set: its order changes from one process to the next, and with it which
    noise each parameter draws and which saved state ``load_state_dict`` gives it."""
    if isinstance(params, (set, frozenset)):
        raise TypeError(
            "parameters must be in an ordered collection (a list), not a set: a set's order changes between "
            "runs, and with it each parameter's noise and the state a resumed run gives it"
        )


class _UpdateRuleOptimizer(torch.optim.Optimizer):
    """Shared plumbing: each group's parameters as a dict of (1, *shape) views, and one noise stream."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], seed: int) -> None:
        _refuse_set(params)
        super().__init__(params, defaults)  # checks every group in add_param_group
        # the first parameter of any group: torch.optim accepts an empty group among others
        device = next((p.device for group in self.param_groups for p in group["params"]), None)
        if device is None:  # its noise stream needs the parameters' device
            raise ValueError(f"{type(self).__name__} got no parameters: every param group is empty")
        self._generators = ChainGenerators(chain_seeds(seed, 1), device)

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim.Optimizer.state_dict`` plus ``"noise_generator"``, the noise stream's state."""
        return {**super().state_dict(), "noise_generator": self._generators.get_states()[0]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, the noise stream included, so a resumed run draws fresh noise.

        A state dict without ``"noise_generator"`` (a plain ``torch.optim`` one) is refused: the
        stream would restart from ``seed`` and repeat the noise the run has already used.
        """
        if "noise_generator" not in state_dict:
            raise ValueError(
                "state_dict has no 'noise_generator': it was not made by this optimizer's state_dict(), and "
                "resuming without it would repeat the noise the run already drew"
            )
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("noise_generator")
        super().load_state_dict(state_dict)
        # torch.optim casts every floating state tensor to its parameter's dtype: float16 parameters would
        # get pSGLD's V and ASGLD's μ, C back in float16, where they overflow (values are already inf by
        # then), so each saved tensor is put back, never narrower than it was saved
        saved_order = [index for group in state_dict["param_groups"] for index in group["params"]]
        parameters = [parameter for group in self.param_groups for parameter in group["params"]]
        for index, parameter in zip(saved_order, parameters, strict=True):  # as torch.optim pairs them
            for key, value in state_dict["state"].get(index, {}).items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    dtype = torch.promote_types(value.dtype, parameter.dtype)
                    self.state[parameter][key] = value.to(device=parameter.device, dtype=dtype, copy=True)
        self._generators.set_states([generator_state])

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as ``torch.optim.Optimizer`` does), checking the hyperparameters it sets and
        that its parameters are real floating point (a complex one would get half the noise variance in
        each of its parts)."""
        params = param_group["params"]
        _refuse_set(params)
        params = [params] if isinstance(params, torch.Tensor) else list(params)  # list(): it may be an iterator
        # (name, tensor) as named_parameters() yields; torch.optim names what is not a tensor
        tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
        tensors = [tensor for tensor in tensors if isinstance(tensor, torch.Tensor)]
        for index, tensor in enumerate(tensors):
            floating_point(f"parameter {index} of param group {len(self.param_groups)}", tensor)
        group = {**self.defaults, **param_group, "params": tensors}
        positive("lr", group["lr"])
        self._check(group)
        super().add_param_group({**param_group, "params": params})

    def _check(self, group: dict[str, Any]) -> None:
        """Raise, naming the hyperparameter, if one of ``group``'s other than ``lr`` is out of range (its
        "params": the tensors)."""

    def _state(
        self, parameters: dict[str, torch.Tensor], key: str, make: Callable[[dict[str, torch.Tensor]], dict]
    ) -> dict[str, torch.Tensor]:
        """Each parameter's state ``key``, a (1, *shape) tensor; ``make(params)`` creates the missing ones."""
        missing = {name: p.detach().unsqueeze(0) for name, p in parameters.items() if key not in self.state[p]}
        if missing:
            for name, value in make(missing).items():
                self.state[parameters[name]][key] = value
        return {name: self.state[p][key] for name, p in parameters.items()}

    def _store(self, parameters: dict[str, torch.Tensor], key: str, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self.state[parameters[name]][key] = value

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for index, group in enumerate(self.param_groups):
            # an LR scheduler sets it between steps, and a user may set any other: NaN would silently make
            # every parameter NaN, and a negative one fail in the noise's square root (lr 0, where a cosine
            # schedule may end, stays still); checked for every group before any moves, so a refused step
            # leaves all parameters as they were
            nonnegative(f"lr of param group {index}", group["lr"])
            try:
                self._check(group)
            except ValueError as error:
                raise ValueError(f"param group {index}: {error}") from None
        for group in self.param_groups:
            # named by position in the group, so state stays with its parameter when others have no grad
            parameters = {str(index): p for index, p in enumerate(group["params"]) if p.grad is not None}
            if parameters:
                params = {name: p.detach().unsqueeze(0) for name, p in parameters.items()}
                # the update is dense whatever the gradient (the noise moves every entry)
                gradient = {name: -p.grad.to_dense().unsqueeze(0) for name, p in parameters.items()}
                updated = self._update(group, parameters, params, gradient)
                for name, parameter in parameters.items():
                    parameter.copy_(updated[name][0])
        return loss

    def _update(
        self, group: dict, parameters: dict[str, torch.Tensor], params: dict, gradient: dict
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class SGLD(_UpdateRuleOptimizer):
    """θ ← θ − lr ∇loss + sqrt(2 lr T) ξ: :func:`sgmcmc.sgld.langevin_step` with ∇log p̃ = −∇loss.

    Back-propagate the full-data loss −log p̃(θ); a mean loss needs ``temperature=1/N`` (module docstring).
    """

    def __init__(self, params: Iterable[Any], lr: float, temperature: float = 1.0, seed: int = 0) -> None:
        super().__init__(params, {"lr": lr, "temperature": temperature}, seed)

    def _check(self, group: dict[str, Any]) -> None:
        super()._check(group)
        nonnegative("temperature", group["temperature"])

    def _update(self, group, parameters, params, gradient):
        noise = self._generators.normal_like(params)
        return langevin_step(params, gradient, noise, group["lr"], group["temperature"])


class SGHMC(_UpdateRuleOptimizer):
    """SGHMC (:func:`sgmcmc.sghmc.sghmc_step`) with a scalar mass; the momentum lives in the optimizer state.

    Back-propagate the full-data loss −log p̃(θ); a mean loss needs ``temperature=1/N`` (module docstring).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        friction: float,
        mass: float = 1.0,
        noise_estimate: float = 0.0,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        defaults = {
            "lr": lr,
            "friction": friction,
            "mass": mass,
            "noise_estimate": noise_estimate,
            "temperature": temperature,
        }
        super().__init__(params, defaults, seed)

    def _check(self, group: dict[str, Any]) -> None:
        super()._check(group)
        check_friction(group["friction"], group["noise_estimate"], nonnegative("temperature", group["temperature"]))
        mass = torch.tensor(positive("mass", group["mass"]), dtype=torch.float64)
        for dtype in {parameter.dtype for parameter in group["params"]}:
            mass_in_dtype(mass, dtype, "mass")

    def _update(self, group, parameters, params, gradient):
        mass = {name: torch.full_like(value, group["mass"]) for name, value in params.items()}
        momentum = self._state(
            parameters,
            "momentum",
            lambda missing: stationary_momentum(
                {name: mass[name] for name in missing}, group["lr"], group["temperature"], self._generators
            ),
        )
        noise = self._generators.normal_like(params)
        updated, new_momentum = sghmc_step(
            params,
            momentum,
            gradient,
            noise,
            mass,
            group["lr"],
            group["friction"],
            group["noise_estimate"],
            group["temperature"],
        )
        self._store(parameters, "momentum", new_momentum)
        return updated


class PSGLD(_UpdateRuleOptimizer):
    """pSGLD without the Γ term (:func:`sgmcmc.psgld.psgld_step`); Γ needs curvature, which only the sampler has.

    Back-propagate the full-data loss −log p̃(θ); a mean loss needs ``temperature=1/N`` and ``eps``/N
    (module docstring).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        alpha: float = 0.99,
        eps: float = 1e-5,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "temperature": temperature}, seed)

    def _check(self, group: dict[str, Any]) -> None:
        super()._check(group)
        below_one("alpha", group["alpha"])
        positive("eps", group["eps"])
        nonnegative("temperature", group["temperature"])

    def _update(self, group, parameters, params, gradient):
        square_average = self._state(parameters, "square_average", zero_moments_like)
        noise = self._generators.normal_like(params)
        updated, new_square_average = psgld_step(
            params, square_average, gradient, noise, group["lr"], group["alpha"], group["eps"], group["temperature"]
        )
        self._store(parameters, "square_average", new_square_average)
        return updated


class ASGLD(_UpdateRuleOptimizer):
    """ASGLD, seed 003's Algorithm 1 (:func:`sgmcmc.asgld.asgld_step`); μ and C live in the optimizer state."""

    def __init__(
        self, params: Iterable[Any], lr: float, momentum: float = 0.9, noise: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "noise": noise}, seed)

    def _check(self, group: dict[str, Any]) -> None:
        super()._check(group)
        below_one("momentum", group["momentum"])
        nonnegative("noise", group["noise"])

    def _update(self, group, parameters, params, gradient):
        mean = self._state(parameters, "mean", zero_moments_like)
        variance = self._state(parameters, "variance", zero_moments_like)
        loss_gradient = {name: -g for name, g in gradient.items()}
        noise = self._generators.normal_like(params)
        updated, new_mean, new_variance = asgld_step(
            params, mean, variance, loss_gradient, noise, group["lr"], group["momentum"], group["noise"]
        )
        self._store(parameters, "mean", new_mean)
        self._store(parameters, "variance", new_variance)
        return updated
