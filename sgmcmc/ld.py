"""LD: full-batch Langevin θ' = θ + η ∇log p(θ) + sqrt(2ηT) ξ; MALA adds Roberts & Tweedie (1996)'s accept step."""

from __future__ import annotations

from typing import Any

import torch

from sgmcmc._checks import flag
from sgmcmc.chains import ChainGenerators, per_chain_sum, select_chains
from sgmcmc.sampler import Potential, Sampler, State
from sgmcmc.schedules import Schedule
from sgmcmc.sgld import langevin_step

__all__ = ["LD"]


class LD(Sampler):
    """Unadjusted Langevin (Euler–Maruyama of dθ = ∇log p dt + sqrt(2T) dW) on the full data.

    With ``metropolis=True`` the Langevin move is a proposal θ' accepted with probability
    α = min(1, π(θ') q(θ | θ') / (π(θ) q(θ' | θ))), π ∝ p^(1/T),
    q(θ' | θ) = N(θ'; θ + η ∇log p(θ), 2ηT I): MALA, exact for every step size.
    The trace's ``acceptance_rate`` is α of the move proposed from each draw.
    """

    full_batch = True

    def __init__(
        self,
        log_posterior: Any,
        step_size: float | Schedule,
        temperature: float = 1.0,
        metropolis: bool = False,
    ) -> None:
        super().__init__(log_posterior, step_size, temperature)
        self.metropolis = flag("metropolis", metropolis)
        if self.metropolis and self.temperature == 0:
            raise ValueError("metropolis=True needs temperature > 0 (the target p^(1/T) is undefined at T = 0)")
        self.stats = ("lp", "acceptance_rate") if self.metropolis else ("lp",)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "metropolis": self.metropolis}

    def init(self, params: dict[str, torch.Tensor], potential: Potential, generators: ChainGenerators) -> State:
        log_posterior, gradient = potential(params)
        return {"params": params, "lp": log_posterior, "gradient": gradient}

    @staticmethod
    def _log_proposal(to: dict[str, torch.Tensor], start: State, step_size: float, temperature: float) -> torch.Tensor:
        """log q(to | start) up to a constant: −|to − start − η ∇log p(start)|² / (4ηT)."""
        residual = {
            name: to[name] - theta - step_size * start["gradient"][name] for name, theta in start["params"].items()
        }
        return -per_chain_sum({name: value**2 for name, value in residual.items()}) / (4.0 * step_size * temperature)

    def step(
        self, state: State, potential: Potential, step_size: float, temperature: float, generators: ChainGenerators
    ) -> tuple[State, dict[str, torch.Tensor]]:
        noise = generators.normal_like(state["params"])
        proposal_params = langevin_step(state["params"], state["gradient"], noise, step_size, temperature)
        log_posterior, gradient = potential(proposal_params)
        proposal = {"params": proposal_params, "lp": log_posterior, "gradient": gradient}
        if not self.metropolis:
            return proposal, {"lp": state["lp"]}
        log_acceptance = (
            (proposal["lp"] - state["lp"]) / temperature
            + self._log_proposal(state["params"], proposal, step_size, temperature)
            - self._log_proposal(proposal_params, state, step_size, temperature)
        )
        accept = torch.log(generators.uniform(log_acceptance.dtype)) < log_acceptance
        new_state = select_chains(accept, proposal, state)
        acceptance_rate = torch.exp(torch.clamp(torch.nan_to_num(log_acceptance, nan=-torch.inf), max=0.0))
        return new_state, {"lp": state["lp"], "acceptance_rate": acceptance_rate}
