"""ASGLD: μ ← ρμ + (1−ρ)g, C ← ρC + (1−ρ)(g − μ_t)(g − μ_{t−1}), ξ ~ N(μ, C), θ ← θ − η(g + ψξ); seed 003, Alg. 1."""

from __future__ import annotations

from typing import Any

import torch

from sgmcmc._checks import below_one, nonnegative
from sgmcmc.chains import ChainGenerators, zero_moments_like
from sgmcmc.sampler import Potential, Sampler, State
from sgmcmc.schedules import Schedule

__all__ = ["ASGLD", "asgld_step"]


def asgld_step(
    params: dict[str, torch.Tensor],
    mean: dict[str, torch.Tensor],
    variance: dict[str, torch.Tensor],
    loss_gradient: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    step_size: float,
    momentum: float,
    noise_scale: float,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Algorithm 1, one step t, elementwise; ``loss_gradient`` is g_t = −∇log p̃(θ_t), ``noise`` z ~ N(0, I).

    μ_t = ρ μ_{t−1} + (1 − ρ) g_t;  C_t = ρ C_{t−1} + (1 − ρ)(g_t − μ_t)(g_t − μ_{t−1});
    ξ_t = μ_t + √C_t z ~ N(μ_t, C_t);  θ_{t+1} = θ_t − η (g_t + ψ ξ_t).  Returns (θ, μ, C): μ and C in
    their own dtype, at least float32 (:func:`sgmcmc.chains.zero_moments_like`), θ in its own.
    """
    new_mean = {name: momentum * mean[name] + (1 - momentum) * g for name, g in loss_gradient.items()}
    new_variance = {
        name: momentum * variance[name] + (1 - momentum) * (g - new_mean[name]) * (g - mean[name])
        for name, g in loss_gradient.items()
    }
    updated = {
        name: theta
        - (
            step_size
            * (
                loss_gradient[name]
                + noise_scale * (new_mean[name] + torch.sqrt(new_variance[name].clamp_min(0)) * noise[name])
            )
        ).to(theta.dtype)
        for name, theta in params.items()
    }
    return updated, new_mean, new_variance


class ASGLD(Sampler):
    """Adaptively preconditioned SGLD (Bhardwaj 2019, arXiv:1906.04324, Algorithm 1): SGD with gradient-shaped noise.

    g_t is the stochastic gradient of the loss −log p̃ (our full-data scale, so η is a mean-loss
    learning rate divided by N). ``momentum`` is ρ, the decay of the running moments μ and C
    (μ_0 = C_0 = 0); ``noise`` is ψ. ψ = 0 is plain SGD. C_t = ρC + (1−ρ)ρ(g_t − μ_{t−1})² ≥ 0.

    This is an optimizer, not a sampler with a known stationary law: the noise N(μ, C) has a
    non-zero mean (ψ μ adds to the gradient step) and a covariance that shrinks with the
    gradient fluctuations, so there is no temperature and its draws do not target p(θ). Use
    it to train; for posterior samples use SGLD, SGHMC, or pSGLD with α close to 1.
    """

    def __init__(
        self, log_posterior: Any, step_size: float | Schedule, momentum: float = 0.9, noise: float = 1.0
    ) -> None:
        super().__init__(log_posterior, step_size)
        self.momentum = below_one("momentum", momentum)
        self.noise = nonnegative("noise", noise)

    def hyperparameters(self) -> dict[str, Any]:
        return {"step_size": self.step_size, "momentum": self.momentum, "noise": self.noise}

    def init(self, params: dict[str, torch.Tensor], potential: Potential, generators: ChainGenerators) -> State:
        # μ_0 and C_0 are distinct tensors: aliased ones would be recompiled for under compile=True
        return {"params": params, "mean": zero_moments_like(params), "variance": zero_moments_like(params)}

    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        log_posterior, gradient = potential(state["params"])
        loss_gradient = {name: -g for name, g in gradient.items()}
        noise = generators.normal_like(state["params"])
        params, mean, variance = asgld_step(
            state["params"],
            state["mean"],
            state["variance"],
            loss_gradient,
            noise,
            step_size,
            self.momentum,
            self.noise,
        )
        return {"params": params, "mean": mean, "variance": variance}, {"lp": log_posterior}
