"""pSGLD: V ← αV + (1−α)g², G = 1/(λ + √V), θ ← θ + η(G g + TΓ) + √(2ηTG) ξ; Li et al. (2016), Alg. 1."""

from __future__ import annotations

import math
from typing import Any

import torch

from sgmcmc._checks import below_one, flag, positive, warn_caller
from sgmcmc.chains import ChainGenerators, zero_moments_like
from sgmcmc.sampler import Potential, Sampler, State
from sgmcmc.schedules import Schedule

__all__ = ["PSGLD", "psgld_step"]


def psgld_step(
    params: dict[str, torch.Tensor],
    square_average: dict[str, torch.Tensor],
    gradient: dict[str, torch.Tensor],
    noise: dict[str, torch.Tensor],
    step_size: float,
    alpha: float,
    eps: float,
    temperature: float,
    hessian_diagonal: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One pSGLD update of (θ, V); all tensors (num_chains, *shape), g = ∇log p̃(θ).

    V ← α V + (1 − α) g ⊙ g,  G = 1 ⊘ (λ + √V),
    θ ← θ + η (G ⊙ g + T Γ) + √(2ηT G) ⊙ ξ,
    Γ_i = ∂G_i/∂θ_i = −(1 − α) G_i² g_i H_ii / √V_i, with H_ii the diagonal of ∇²log p̃
    (``hessian_diagonal``); without it Γ = 0, the paper's practical choice.
    """
    # V and G in V's dtype, at least float32 (zero_moments_like): in float16 a gradient above 256 squares to inf
    square_average = {
        name: alpha * square_average[name] + (1 - alpha) * g.to(square_average[name].dtype) ** 2
        for name, g in gradient.items()
    }
    root = {name: torch.sqrt(v) for name, v in square_average.items()}
    preconditioner = {name: 1.0 / (eps + r) for name, r in root.items()}
    noise_scale = math.sqrt(2.0 * step_size * temperature)
    updated = {}
    for name, theta in params.items():
        drift = preconditioner[name] * gradient[name]
        if hessian_diagonal is not None:
            gamma = -(1 - alpha) * preconditioner[name] ** 2 * gradient[name] * hessian_diagonal[name]
            drift = drift + temperature * torch.where(root[name] > 0, gamma / root[name], torch.zeros_like(gamma))
        increment = step_size * drift + noise_scale * torch.sqrt(preconditioner[name]) * noise[name]
        updated[name] = theta + increment.to(theta.dtype)
    return updated, square_average


class PSGLD(Sampler):
    """Preconditioned SGLD (Li, Chen, Carlson & Carin 2016), RMSProp's diagonal preconditioner.

    V ← α V + (1 − α) g ⊙ g,  G = diag(1 ⊘ (λ + √V)),
    θ ← θ + η (G ∇log p̃(θ) + T Γ(θ)) + N(0, 2 η T G),  Γ_i = Σ_j ∂G_ij/∂θ_j.

    Mapping to Algorithm 1 of the paper (ε, ḡ the per-example mean gradient): η has the place of
    ε/2, but our V is built from the full-data gradient estimate g = ∇log p̃ = ∇log p + N ḡ, not
    from ḡ, so where the likelihood dominates the paper's (ε, λ) are (2η/N, eps/N), not (2η, eps).

    ``gamma_correction=True`` adds Γ, with the Hessian diagonal H_ii estimated without bias by
    Hutchinson's z ⊙ (∇²log p̃ · z), z Rademacher: one extra Hessian-vector product per step.
    The paper drops Γ; without it the stationary law is biased wherever G varies with θ, the
    more so the smaller α (V then follows the current gradient). Measured (docs/preconditioning.md):
    Γ does not remove that bias in practice and is singular as V → 0 (at the start, V = 0), where
    it throws chains far out, so the default is ``gamma_correction=False``; for sampling prefer
    α close to 1 (0.999 left about a tenth of the bias of 0.9 on badly scaled Gaussians).
    Do not start exactly at a mode with exact gradients: V_0 = 0 and g = 0 there make the first
    step's G = 1/λ, noise of sd √(2η/λ); jitter the start (``init_jitter``). ``sample`` warns
    when the full-data gradient at the start has entries with √(1−α)|g| ≤ λ.
    """

    def __init__(
        self,
        log_posterior: Any,
        step_size: float | Schedule,
        alpha: float = 0.99,
        eps: float = 1e-5,
        temperature: float = 1.0,
        gamma_correction: bool = False,
    ) -> None:
        super().__init__(log_posterior, step_size, temperature)
        self.alpha = below_one("alpha", alpha)
        self.eps = positive("eps", eps)
        self.gamma_correction = flag("gamma_correction", gamma_correction)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "alpha": self.alpha,
            "eps": self.eps,
            "gamma_correction": self.gamma_correction,
        }

    def init(self, params: dict[str, torch.Tensor], potential: Potential, generators: ChainGenerators) -> State:
        self._warn_of_a_vanishing_first_gradient(params, potential)
        return {"params": params, "square_average": zero_moments_like(params)}

    def _warn_of_a_vanishing_first_gradient(self, params: dict[str, torch.Tensor], potential: Potential) -> None:
        """V_0 = 0: where √(1−α)|g| ≤ λ at the start, the first step's G is near its cap 1/λ, and its
        noise (sd up to √(2η/λ)) throws the chain far out (at a mode, or a weight of an all-zero feature at 0)."""
        _, gradient = potential(params)
        threshold = self.eps / math.sqrt(1 - self.alpha)
        vanishing = {
            name: (g.reshape(g.shape[0], -1).abs() <= threshold).any(dim=1).nonzero().flatten().tolist()
            for name, g in gradient.items()
        }
        vanishing = {name: chains for name, chains in vanishing.items() if chains}
        if vanishing:
            listed = "; ".join(f"{name!r} in chains {chains}" for name, chains in vanishing.items())
            warn_caller(
                f"PSGLD: the full-data gradient at the initial params is about 0 (|g| <= eps/sqrt(1 - alpha) = "
                f"{threshold:.3g}) in entries of {listed}; with V_0 = 0 their first step's preconditioner is near "
                f"1/eps and its noise sd up to sqrt(2 step_size / eps), which throws the chain far out. Start "
                "away from where the gradient vanishes (init_jitter, or not exactly at a mode)",
                RuntimeWarning,
            )

    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        params = state["params"]
        hessian_diagonal = None
        if self.gamma_correction:
            probe = {name: z.sign() for name, z in generators.normal_like(params).items()}
            log_posterior, gradient, product = potential.with_hessian_vector_product(params, probe)
            hessian_diagonal = {name: probe[name] * product[name] for name in params}
        else:
            log_posterior, gradient = potential(params)
        noise = generators.normal_like(params)
        params, square_average = psgld_step(
            params,
            state["square_average"],
            gradient,
            noise,
            step_size,
            self.alpha,
            self.eps,
            temperature,
            hessian_diagonal,
        )
        return {"params": params, "square_average": square_average}, {"lp": log_posterior}
