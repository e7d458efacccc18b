"""SGHMC: v ← v + η M⁻¹ ∇log p̃(θ) − α v + N(0, 2(αT − β̂) η M⁻¹), θ ← θ + v; Chen, Fox & Guestrin (2014), eq. (15)."""

from __future__ import annotations

import math
from typing import Any

import torch

from sgmcmc._checks import count, nonnegative, positive
from sgmcmc.chains import ChainGenerators, at_least_float32, per_chain_sum, select_chains
from sgmcmc.sampler import Potential, Sampler, State
from sgmcmc.schedules import Schedule

__all__ = [
    "SGHMC",
    "cancelled_gradient_noise",
    "check_friction",
    "refreshed_momentum",
    "sghmc_step",
    "stationary_momentum",
]

Mass = float | torch.Tensor | dict[str, float | torch.Tensor]


def _checked_mass(mass: Any) -> Mass:
    """``mass`` if it is a float > 0, a tensor, or a dict of them; else an error naming the bad value.

    A tensor's shape and values are checked against the params in :func:`mass_like`.
    """
    values = mass.items() if isinstance(mass, dict) else [(None, mass)]
    for name, value in values:
        where = "mass" if name is None else f"mass of {name!r}"
        if not isinstance(value, torch.Tensor):
            positive(where, value)
    return mass


def mass_like(mass: Mass, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The diagonal mass shaped like ``params`` (num_chains, *shape), from a float, a tensor or a dict."""
    if isinstance(mass, dict):
        missing = set(params) - set(mass)
        if missing or set(mass) - set(params):
            raise ValueError(f"mass must give every parameter: params {list(params)}, mass {list(mass)}")
        per_parameter = mass
    elif isinstance(mass, torch.Tensor) and len(params) > 1:
        raise ValueError("mass is one tensor but params is a dict; give a dict of masses (or one float)")
    else:
        per_parameter = {name: mass for name in params}
    masses = {}
    for name, value in per_parameter.items():
        shape = tuple(params[name].shape[1:])
        if isinstance(value, torch.Tensor):
            if tuple(value.shape) != shape:
                raise ValueError(f"mass of {name!r} has shape {tuple(value.shape)}; need {shape}")
            if not value.is_floating_point() or not (torch.isfinite(value) & (value > 0)).all():
                raise ValueError(f"mass of {name!r} must hold finite floating values > 0")
        else:
            value = torch.tensor(positive(f"mass of {name!r}", value), dtype=torch.float64)
        value = mass_in_dtype(value, params[name].dtype, f"mass of {name!r}")
        # detached, as init is: a mass that requires grad would chain every step's momentum into one graph;
        # one copy (the caller's tensor may change later), viewed across chains: a constant of the state
        masses[name] = value.detach().to(params[name].device).clone().expand_as(params[name])
    return masses


def mass_in_dtype(mass: torch.Tensor, dtype: torch.dtype, where: str) -> torch.Tensor:
    """``mass`` in ``dtype`` (on its own device), or a ValueError naming ``where`` if it rounds to 0 or inf there."""
    value = mass.to(dtype=dtype)
    if not (torch.isfinite(value) & (value > 0)).all():
        raise ValueError(
            f"{where} rounds to 0 or inf in the params' dtype {dtype}; give a mass in its range (float16 holds "
            "about 6e-8 to 6.5e4), or sample in a wider dtype"
        )
    return value


def check_friction(friction: float, noise_estimate: float, temperature: float) -> tuple[float, float]:
    """(α, β̂) as floats, or a ValueError: 0 < α ≤ 1, and 0 ≤ β̂ ≤ αT (β̂ ≤ α when T = 0).

    β̂ ≤ αT keeps the injected variance 2(αT − β̂)η ≥ 0; above T = 1 it allows β̂ > α."""
    friction = positive("friction", friction)
    if friction > 1:
        raise ValueError(f"friction must be <= 1 (the momentum decays by 1 − friction each step), got {friction}")
    noise_estimate = nonnegative("noise_estimate", noise_estimate)
    if temperature == 0 and noise_estimate > friction:
        raise ValueError(f"noise_estimate ({noise_estimate}) > friction ({friction}): at T = 0 β̂ must lie in [0, α]")
    if temperature > 0 and noise_estimate > friction * temperature:
        raise ValueError(
            f"noise_estimate ({noise_estimate}) > friction × temperature ({friction} × {temperature}) would make "
            "the injected noise variance 2(friction · temperature − noise_estimate)·η negative"
        )
    return friction, noise_estimate


def stationary_momentum(
    mass: dict[str, torch.Tensor], step_size: float, temperature: float, generators: ChainGenerators
) -> dict[str, torch.Tensor]:
    """v ~ N(0, η T M⁻¹), shaped like ``mass`` (num_chains, *shape)."""
    noise = generators.normal_like(mass)
    # the variance η T / M is never formed: in float16 one below 6e-8 (η = 1e-7 is common) rounds to 0
    return {name: noise[name] * (math.sqrt(step_size * temperature) * torch.rsqrt(mass[name])) for name in mass}


def refreshed_momentum(
    mass: dict[str, torch.Tensor],
    gradient: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    step_size: float,
    friction: float,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """v ~ N(−(η/2) c M⁻¹ ∇log p̃(θ), η T c M⁻¹), c = 1/(1 − α/2): the step's momentum given θ; ``noise`` is
    ξ ~ N(0, I) shaped like ``mass`` (num_chains, *shape).

    The v that :func:`sghmc_step` carries has just moved θ to where it is (a kick, then a drift), so in
    the stationary chain it leans back against the gradient at θ, and its variance is the stationary
    one of v ← (1 − α)v + N(0, 2αηT M⁻¹). On a Gaussian target this is the exact conditional law of v
    given θ under the discrete chain (the test suite checks it against the Lyapunov solution), so a
    refresh leaves the chain's law as it was (with a minibatch gradient, together with
    :func:`cancelled_gradient_noise`). A draw from N(0, ηT M⁻¹), independent of θ, narrows θ's law
    instead, by O(1/n) for a refresh every n steps however small η (var θ 0.83 against 1.00 at
    n = 5 on N(0, 1), α = 0.1, before this was fixed).
    """
    inflation = 1.0 / (1.0 - friction / 2.0)
    noise_scale = math.sqrt(step_size * temperature * inflation)
    return {
        name: -(0.5 * step_size * inflation) * gradient[name] / mass[name]
        + noise_scale * torch.rsqrt(mass[name]) * noise[name]
        for name in mass
    }


def cancelled_gradient_noise(
    mass: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    step_size: float,
    friction: float,
    noise_estimate: float,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """Gradient noise N(0, a(2 − a) V), V = 2β̂M/η, a = (1 − α)/(2 − α): what a refresh takes out of its step's kick.

    The refreshed v leans on this step's minibatch gradient g̃ = g + z, which the kick then adds
    again: v' = (1 − α)v + ηM⁻¹g̃ + … carries z with weight η(1 − a), not η, so a(2 − a) η²M⁻²V of
    the gradient noise that β̂ = ηV/2 (for M = 1) took out of the injected noise goes missing. This
    independent draw (``noise``, ξ ~ N(0, I) shaped like ``mass``), added to the kick's gradient,
    puts it back (exactly, for a Gaussian target and noise). At T = 0, where SGHMC injects no noise
    (an optimizer, or cyclical exploration), it is 0, as it is for β̂ = 0.
    """
    share = (1.0 - friction) / (2.0 - friction)
    scale = math.sqrt(share * (2.0 - share) * 2.0 * noise_estimate / step_size) if temperature > 0 else 0.0
    return {name: scale * torch.sqrt(mass[name]) * noise[name] for name in mass}


def sghmc_step(
    params: dict[str, torch.Tensor],
    momentum: dict[str, torch.Tensor],
    gradient: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    mass: dict[str, torch.Tensor],
    step_size: float,
    friction: float,
    noise_estimate: float,
    temperature: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """v ← v + η M⁻¹ ∇log p̃(θ) − α v + N(0, 2(αT − β̂) η M⁻¹), θ ← θ + v; all tensors (num_chains, *shape).

    The gradient noise η²M⁻²V = 2β̂ηM⁻¹ does not scale with T, so T scales only the friction's share.
    At T = 0 (an optimizer, or cyclical exploration) no noise is injected.
    """
    noise_scale = math.sqrt(2.0 * max(friction * temperature - noise_estimate, 0.0) * step_size)
    # the noise's scale, not its variance, meets the params' dtype: in float16 a variance below 6e-8 rounds to 0
    momentum = {
        name: v
        + step_size * gradient[name] / mass[name]
        - friction * v
        + noise_scale * torch.rsqrt(mass[name]) * noise[name]
        for name, v in momentum.items()
    }
    return {name: theta + momentum[name] for name, theta in params.items()}, momentum


class SGHMC(Sampler):
    """Stochastic gradient Hamiltonian Monte Carlo (Chen, Fox & Guestrin 2014), practical form, eq. (15).

    v ← v + η M⁻¹ ∇log p̃(θ) − α v + N(0, 2(αT − β̂) η M⁻¹),  θ ← θ + v.

    Mapping to the paper's (ε, C, B̂, M) with momentum r = M v / ε: η = ε² (``step_size``),
    α = ε M⁻¹ C (``friction``), β̂ = ε M⁻¹ B̂ (``noise_estimate``, the gradient noise the
    sampler assumes and does not inject; a minibatch gradient with covariance V gives
    β̂ = η V / 2 for M = 1, whatever T). With M = 1 and T = 1 this is the paper's eq. (15) verbatim.
    The temperature scales the friction's noise 2αηT (fluctuation-dissipation), not the gradient's, which
    is why β̂ is subtracted from αT. Stationary law: θ ∝ p(θ)^(1/T), v ~ N(0, η T M⁻¹) as η and α → 0
    (see ``kinetic_energy`` below). ``friction = 1`` with β̂ = 0 is SGLD with step η; large friction
    α < 1 behaves like SGLD with step η/α (the high-friction limit).

    Args:
        friction: α in (0, 1]; at most 1, where the momentum is forgotten at every step.
        mass: M, diagonal: a float, or a tensor (a dict of them for dict params) of each
            parameter's shape.
        noise_estimate: β̂ in [0, αT] (in [0, α] at T = 0).
        resample_momentum_every: draw v afresh every this many steps, from its law given θ
            under the chain (:func:`refreshed_momentum`); None keeps the momentum for the whole run.

    The trace's ``kinetic_energy`` is r⊤M⁻¹r/2 = Σ M v²/(2η), whose stationary mean is
    d·T/(2 − α) up to O(η): v's stationary variance is ηT M⁻¹/(1 − α/2), the continuous-time
    d·T/2 only as α → 0.
    """

    stats = ("lp", "kinetic_energy")

    def __init__(
        self,
        log_posterior: Any,
        step_size: float | Schedule,
        friction: float,
        mass: Mass = 1.0,
        noise_estimate: float = 0.0,
        temperature: float = 1.0,
        resample_momentum_every: int | None = None,
    ) -> None:
        super().__init__(log_posterior, step_size, temperature)
        self.friction, self.noise_estimate = check_friction(friction, noise_estimate, self.temperature)
        self.mass = _checked_mass(mass)
        self.resample_momentum_every = (
            None if resample_momentum_every is None else count("resample_momentum_every", resample_momentum_every, 1)
        )

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "friction": self.friction,
            "noise_estimate": self.noise_estimate,
            "mass": self.mass,
            "resample_momentum_every": self.resample_momentum_every or 0,
        }

    def init(self, params: dict[str, torch.Tensor], potential: Potential, generators: ChainGenerators) -> State:
        mass = mass_like(self.mass, params)
        momentum = stationary_momentum(mass, self.step_size(0), self.temperature_at(0), generators)
        steps = torch.zeros(next(iter(params.values())).shape[0], dtype=torch.long, device=generators.device)
        return {"params": params, "momentum": momentum, "mass": mass, "steps": steps}

    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        params, momentum, mass = state["params"], state["momentum"], state["mass"]
        log_posterior, gradient = potential(params)
        if self.resample_momentum_every is not None:
            refresh = (state["steps"] % self.resample_momentum_every == 0) & (state["steps"] > 0)
            # drawn at every step, so that a compiled step draws alike at each; one call per chain for both
            uses = ("momentum", "gradient") if self.noise_estimate > 0 else ("momentum",)
            draws = generators.normal_like({(use, name): value for use in uses for name, value in mass.items()})
            noise = {use: {name: draws[use, name] for name in mass} for use in uses}
            fresh = refreshed_momentum(mass, gradient, noise["momentum"], step_size, self.friction, temperature)
            momentum = select_chains(refresh, fresh, momentum)
            if self.noise_estimate > 0:
                restored = cancelled_gradient_noise(
                    mass, noise["gradient"], step_size, self.friction, self.noise_estimate, temperature
                )
                gradient = select_chains(refresh, {name: g + restored[name] for name, g in gradient.items()}, gradient)
        kinetic_energy = per_chain_sum(
            {name: mass[name] * v.to(at_least_float32(v.dtype)) ** 2 for name, v in momentum.items()}
        ) / (2.0 * step_size)
        noise = generators.normal_like(params)
        params, momentum = sghmc_step(
            params, momentum, gradient, noise, mass, step_size, self.friction, self.noise_estimate, temperature
        )
        new_state = {"params": params, "momentum": momentum, "mass": mass, "steps": state["steps"] + 1}
        return new_state, {"lp": log_posterior, "kinetic_energy": kinetic_energy}
