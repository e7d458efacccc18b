"""SGNHT: p ← (1 − ξh) p + h ∇log p̃ + sqrt(2AhT) ξ_t, θ ← θ + h p, ξ ← ξ + h(p⊤p/n − T); Ding et al. 2014, Alg. 1."""

from __future__ import annotations

import math
from typing import Any

import torch

from sgmcmc._checks import positive
from sgmcmc.chains import ChainGenerators, at_least_float32, flat_layout, per_chain_sum
from sgmcmc.sampler import Potential, Sampler, State
from sgmcmc.schedules import Schedule

__all__ = ["SGNHT"]


class SGNHT(Sampler):
    """Stochastic gradient Nosé–Hoover thermostat (Ding, Fang, Babbush, Chen, Skeel & Neven 2014), Alg. 1.

    p ← p − ξ p h + h ∇log p̃(θ) + sqrt(2 A h T) N(0, I);  θ ← θ + h p;  ξ ← ξ + h (p⊤p/n − T),

    with n the number of parameters of one chain and ξ one thermostat per chain, started at A.
    The thermostat raises the friction ξ while the kinetic temperature p⊤p/n exceeds T, so
    unknown minibatch gradient noise is absorbed without an estimate of it (SGHMC needs β̂).
    ``step_size`` is the paper's h and ``diffusion`` its A (their Alg. 2 is the same rule in SGHMC's
    variables: η = h², friction ξ h). Stationary law: θ ∝ p(θ)^(1/T), p ~ N(0, T I).

    The trace records ``kinetic_energy`` p⊤p/2 (stationary mean n T/2) and ``thermostat`` ξ.

    Start it near the mode (e.g. after an optimizer warm-up): from far away the potential
    energy released heats the momentum, ξ overshoots, and it cools only at rate h·T per step,
    so the chain stays over-damped and too narrow for about ξ/h steps. Watch ``thermostat``.
    """

    stats = ("lp", "kinetic_energy", "thermostat")

    def __init__(
        self,
        log_posterior: Any,
        step_size: float | Schedule,
        diffusion: float = 1.0,
        temperature: float = 1.0,
    ) -> None:
        super().__init__(log_posterior, step_size, temperature)
        self.diffusion = positive("diffusion", diffusion)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "diffusion": self.diffusion}

    def init(self, params: dict[str, torch.Tensor], potential: Potential, generators: ChainGenerators) -> State:
        noise = generators.normal_like(params)
        momentum = {name: math.sqrt(self.temperature_at(0)) * value for name, value in noise.items()}
        num_chains = next(iter(params.values())).shape[0]
        # in at least float32, as the kinetic temperature that drives it: in float16 its small steps would be lost
        dtype = at_least_float32(flat_layout(params)[1])
        thermostat = torch.full((num_chains,), self.diffusion, dtype=dtype, device=generators.device)
        return {"params": params, "momentum": momentum, "thermostat": thermostat}

    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        params, momentum, thermostat = state["params"], state["momentum"], state["thermostat"]
        squared_norm = per_chain_sum({name: p**2 for name, p in momentum.items()})
        log_posterior, gradient = potential(params)
        noise = generators.normal_like(params)
        noise_scale = math.sqrt(2.0 * self.diffusion * step_size * temperature)
        momentum = {
            name: p
            - thermostat.view(-1, *[1] * (p.ndim - 1)).to(p.dtype) * p * step_size
            + step_size * gradient[name]
            + noise_scale * noise[name]
            for name, p in momentum.items()
        }
        params = {name: theta + step_size * momentum[name] for name, theta in params.items()}
        dimension = sum(p[0].numel() for p in momentum.values())
        new_squared_norm = per_chain_sum({name: p**2 for name, p in momentum.items()})
        thermostat = thermostat + step_size * (new_squared_norm / dimension - temperature)
        new_state = {"params": params, "momentum": momentum, "thermostat": thermostat}
        return new_state, {"lp": log_posterior, "kinetic_energy": squared_norm / 2.0, "thermostat": state["thermostat"]}
