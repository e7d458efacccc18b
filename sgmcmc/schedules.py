"""Step-size schedules: the step size η_k used at step k = 0, 1, 2, … of a run.

Every sampler accepts a float (a constant step) or any :class:`Schedule`. A schedule also
answers whether it satisfies the Robbins–Monro conditions Σ η_k = ∞ and Σ η_k² < ∞, under
which a decreasing-step SGLD run converges to the exact posterior (Welling & Teh 2011, eq. 2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from sgmcmc._checks import count, nonnegative, positive

__all__ = ["Schedule", "Constant", "Polynomial", "Cyclical", "as_schedule"]


class Schedule(ABC):
    """A step-size schedule: ``schedule(k)`` is the step size η_k at step k ≥ 0 (an int; the built-in
    schedules refuse anything else, where a negative k would give Polynomial a complex number)."""

    @abstractmethod
    def __call__(self, step: int) -> float: ...

    @abstractmethod
    def satisfies_robbins_monro(self) -> bool:
        """Whether Σ_k η_k = ∞ and Σ_k η_k² < ∞."""

    def values(self, num_steps: int) -> np.ndarray:
        """η_0 … η_{num_steps−1} as an array of shape (num_steps,)."""
        num_steps = count("num_steps", num_steps, 0)
        return np.array([self(step) for step in range(num_steps)], dtype=np.float64)

    def __repr__(self) -> str:
        # the trace's attrs and a checkpoint's same-run check hold the repr: name and attributes, no address
        attributes = ", ".join(f"{name}={value!r}" for name, value in vars(self).items())
        return f"{type(self).__name__}({attributes})"


@dataclass(frozen=True)
class Constant(Schedule):
    """η_k = step_size for every k. Never Robbins–Monro: the stationary law keeps an O(η) bias."""

    step_size: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "step_size", positive("step_size", self.step_size))

    def __call__(self, step: int) -> float:
        count("step", step, 0)
        return self.step_size

    def satisfies_robbins_monro(self) -> bool:
        return False


@dataclass(frozen=True)
class Polynomial(Schedule):
    """η_k = a (b + k)^(−γ), the decay of Welling & Teh (2011), Sec. 2 (used with γ = 0.55 in Sec. 5.1).

    Robbins–Monro holds iff 0.5 < γ ≤ 1: Σ (b + k)^(−γ) diverges iff γ ≤ 1 and
    Σ (b + k)^(−2γ) converges iff γ > 0.5. γ = 0 is the constant step a·b^0 = a.
    """

    a: float
    b: float = 1.0
    gamma: float = 0.55

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", positive("a", self.a))
        object.__setattr__(self, "b", positive("b", self.b))
        object.__setattr__(self, "gamma", nonnegative("gamma", self.gamma))
        try:
            first = self(0)
        except OverflowError:
            first = math.inf
        if not 0 < first < math.inf:
            raise ValueError(
                f"the first step a·b^(−γ) = {self.a}·{self.b}^(−{self.gamma}) is {first}; "
                "it must be a finite number > 0"
            )

    def __call__(self, step: int) -> float:
        return self.a * (self.b + count("step", step, 0)) ** (-self.gamma)

    def satisfies_robbins_monro(self) -> bool:
        return 0.5 < self.gamma <= 1.0


@dataclass(frozen=True)
class Cyclical(Schedule):
    """The cosine cyclical step of Zhang et al. (2020), eq. (1), with exploration fraction β.

    η_k = η_0/2 · [cos(π · mod(k, L) / L) + 1],  L = ⌈K/M⌉ the cycle length,

    for our step k = 0, 1, … (the paper's k − 1), K = ``total_steps``, M = ``num_cycles``. Within
    each cycle the first fraction β (``exploration``) of the steps explore (r = mod(k, L)/L < β)
    and the rest sample. Periodic, so never Robbins–Monro.

    Refused: a plan whose K steps hold fewer than M cycles (K = 10, M = 6: cycles of 2 steps, 5 of
    them), or whose last cycle never reaches its sampling stage (K = 10, M = 4, β = 0.5: the 4th
    cycle is one exploring step), for which the paper's formula allows but a run would not do
    what M says. A K that is a multiple of M, with cycles long enough for β, avoids both.
    """

    initial_step_size: float
    num_cycles: int
    total_steps: int
    exploration: float = 0.8

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_step_size", positive("initial_step_size", self.initial_step_size))
        # stored as plain ints: their repr goes into a run's attrs, which a checkpoint compares
        object.__setattr__(self, "num_cycles", count("num_cycles", self.num_cycles, 1))
        object.__setattr__(self, "total_steps", count("total_steps", self.total_steps, self.num_cycles))
        exploration = nonnegative("exploration", self.exploration)
        if exploration >= 1:
            raise ValueError(f"exploration must be in [0, 1) so that each cycle samples, got {exploration}")
        object.__setattr__(self, "exploration", exploration)
        num_cycles, total_steps, length = self.num_cycles, self.total_steps, self.cycle_length
        cycles_run = self.cycle(total_steps - 1) + 1
        if cycles_run < num_cycles:
            raise ValueError(
                f"total_steps={total_steps} in cycles of ⌈{total_steps}/{num_cycles}⌉ = {length} steps make only "
                f"{cycles_run} cycles, not num_cycles={num_cycles}; make total_steps a multiple of num_cycles"
            )
        if not self.is_sampling(length - 1):
            raise ValueError(
                f"cycles of {length} steps never reach their sampling stage with exploration={exploration} "
                "(a cycle samples from its step ⌈exploration · length⌉ on, counting from 0); make the cycles longer "
                "(more total_steps or fewer num_cycles) or exploration smaller"
            )
        if not self.is_sampling(total_steps - 1):
            last = total_steps - (num_cycles - 1) * length
            raise ValueError(
                f"the last of the {num_cycles} cycles has only {last} step(s) (a cycle has {length}), all exploring "
                f"(exploration={exploration}), so it never samples; make total_steps a multiple of num_cycles"
            )

    @property
    def cycle_length(self) -> int:
        """L = ⌈K/M⌉ steps."""
        return math.ceil(self.total_steps / self.num_cycles)

    def _position(self, step: int) -> float:
        """r = mod(k, L)/L ∈ [0, 1), where the step lies within its cycle."""
        return (count("step", step, 0) % self.cycle_length) / self.cycle_length

    def __call__(self, step: int) -> float:
        return self.initial_step_size / 2 * (math.cos(math.pi * self._position(step)) + 1)

    def cycle(self, step: int) -> int:
        """The index (from 0) of the cycle that ``step`` belongs to."""
        return count("step", step, 0) // self.cycle_length

    def is_sampling(self, step: int) -> bool:
        """Whether ``step`` is in the sampling stage (r ≥ β) of its cycle, not the exploration stage."""
        return self._position(step) >= self.exploration

    def satisfies_robbins_monro(self) -> bool:
        return False


def as_schedule(step_size: float | Schedule) -> Schedule:
    """A float becomes :class:`Constant`; a schedule is returned as it is."""
    if isinstance(step_size, Schedule):
        return step_size
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float, np.integer, np.floating)):
        raise TypeError(f"step_size must be a float or a sgmcmc.schedules.Schedule, got {type(step_size).__name__}")
    return Constant(step_size)
