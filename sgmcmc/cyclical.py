"""cSGLD, cSGHMC: SGLD/SGHMC on the cosine cycle of eq. (1), noise-free while exploring; Zhang et al. 2020, Alg. 1."""

from __future__ import annotations

from typing import Any

from sgmcmc._checks import warn_caller
from sgmcmc.schedules import Cyclical
from sgmcmc.sghmc import SGHMC, Mass
from sgmcmc.sgld import SGLD

__all__ = ["CyclicalSGLD", "CyclicalSGHMC"]


class _CyclicalStages:
    """The two stages of every cycle (Zhang et al. 2020, Alg. 1), shared by cSGLD and cSGHMC.

    Exploration (the first β of a cycle): the update with temperature 0, i.e. SGD (with
    momentum for cSGHMC), and no draw is kept. Sampling (the rest): the sampler at its
    temperature, and the states these updates make are kept, each labelled with its ``cycle``.
    The engine records the state at step k before update k, so that state is kept when update
    k − 1 sampled: the state an exploration stage ends in is an optimiser's, not a draw.
    """

    step_size: Cyclical
    temperature: float

    @staticmethod
    def _check_schedule(step_size: Any) -> None:
        if not isinstance(step_size, Cyclical):
            raise TypeError(
                f"step_size of a cyclical sampler must be a sgmcmc.schedules.Cyclical, got {type(step_size).__name__}"
            )
        last_cycle = range((step_size.num_cycles - 1) * step_size.cycle_length, step_size.total_steps)
        if sum(step_size.is_sampling(step) for step in last_cycle) < 2:
            # the state after the last sampling update is the run's final state, which no draw records
            warn_caller(
                f"the last of the {step_size.num_cycles} cycles of {step_size!r} samples at one step only, so the "
                "sampler keeps no draw of it (its one sampled state is the run's final_state) and the trace has "
                f"{step_size.num_cycles - 1} cycles; make the cycles longer or exploration smaller",
                UserWarning,
            )

    def temperature_at(self, step: int) -> float:
        return self.temperature if self.step_size.is_sampling(step) else 0.0

    def keeps(self, step: int) -> bool:
        return step > 0 and self.step_size.is_sampling(step - 1)

    def draw_coords(self, step: int) -> dict[str, int]:
        return {"cycle": self.step_size.cycle(max(step - 1, 0))}


class CyclicalSGLD(_CyclicalStages, SGLD):
    """Cyclical SGLD (Zhang et al. 2020): SGD while exploring, SGLD while sampling, on a :class:`Cyclical` step."""

    def __init__(self, log_posterior: Any, step_size: Cyclical, temperature: float = 1.0) -> None:
        self._check_schedule(step_size)
        super().__init__(log_posterior, step_size, temperature)


class CyclicalSGHMC(_CyclicalStages, SGHMC):
    """Cyclical SGHMC (Zhang et al. 2020): SGD with momentum while exploring, SGHMC while sampling."""

    def __init__(
        self,
        log_posterior: Any,
        step_size: Cyclical,
        friction: float,
        mass: Mass = 1.0,
        noise_estimate: float = 0.0,
        temperature: float = 1.0,
        resample_momentum_every: int | None = None,
    ) -> None:
        self._check_schedule(step_size)
        super().__init__(log_posterior, step_size, friction, mass, noise_estimate, temperature, resample_momentum_every)
