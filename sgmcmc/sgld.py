"""SGLD: θ ← θ + η ∇log p̃(θ) + sqrt(2ηT) ξ, Welling & Teh (2011), eq. (4) with ε = 2η."""

from __future__ import annotations

import math

import torch

from sgmcmc.chains import ChainGenerators
from sgmcmc.sampler import Potential, Sampler, State

__all__ = ["SGLD", "langevin_step"]


def langevin_step(
    params: dict[str, torch.Tensor],
    gradient: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    step_size: float,
    temperature: float,
) -> dict[str, torch.Tensor]:
    """Euler–Maruyama step of dθ = ∇log p(θ) dt + sqrt(2T) dW: θ + η ∇log p̃(θ) + sqrt(2ηT) ξ.

    All tensors are (num_chains, *shape); ``noise`` is ξ ~ N(0, I).
    """
    noise_scale = math.sqrt(2.0 * step_size * temperature)
    return {name: theta + step_size * gradient[name] + noise_scale * noise[name] for name, theta in params.items()}


class SGLD(Sampler):
    """Stochastic gradient Langevin dynamics (Welling & Teh 2011).

    θ_{k+1} = θ_k + η_k ∇log p̃(θ_k) + sqrt(2 η_k T) ξ_k, ξ_k ~ N(0, I), with ∇log p̃ the
    minibatch estimate of the full-data gradient. The paper's eq. (4) writes
    Δθ = (ε/2) ∇log p̃ + N(0, ε): its ε is our 2η. At T = 0 this is SGD on −log p̃ with
    learning rate η.
    """

    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        log_posterior, gradient = potential(state["params"])
        noise = generators.normal_like(state["params"])
        params = langevin_step(state["params"], gradient, noise, step_size, temperature)
        return {"params": params}, {"lp": log_posterior}
