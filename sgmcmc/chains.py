"""Per-chain random streams: one seed gives every chain its own ``torch.Generator``.

Chain c's stream depends only on its own seed, never on how many chains run beside it, so a
chain run alone with its seed reproduces the same chain run in a batch of any size. Kernels
draw their randomness through :class:`ChainGenerators`, never from the global torch RNG.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

from sgmcmc._checks import count, warn_caller

__all__ = [
    "chain_seeds",
    "seeds_of_chains",
    "start_seeds",
    "ChainGenerators",
    "RecordingGenerators",
    "ReplayedDraws",
    "select_chains",
    "per_chain_sum",
    "at_least_float32",
    "zero_moments_like",
]


def _checked_seed(value: Any, requirement: str) -> int:
    """``value`` as an int if it is an integer in [0, 2**64), the range of a 64-bit seed; else a ValueError
    saying ``requirement``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 2**64:
        raise ValueError(f"{requirement} in [0, 2**64), got {value!r}")
    return int(value)


def _chain_sequences(seed: int, num_chains: int) -> list[np.random.SeedSequence]:
    seed = _checked_seed(seed, "seed must be an integer")
    return np.random.SeedSequence(seed).spawn(count("num_chains", num_chains, 1))


def chain_seeds(seed: int, num_chains: int) -> list[int]:
    """Independent 64-bit seeds for chains 0 … num_chains−1, derived from one ``seed``.

    Uses ``numpy.random.SeedSequence(seed).spawn``, whose children are prefix-stable:
    ``chain_seeds(s, 2) == chain_seeds(s, 4)[:2]``.
    """
    return [int(child.generate_state(1, dtype=np.uint64)[0]) for child in _chain_sequences(seed, num_chains)]


def start_seeds(seed: int, num_chains: int) -> list[int]:
    """Seeds for the starting points of chains 0 … num_chains−1, derived from one ``seed``.

    Chain c's is spawned from chain c's own ``SeedSequence`` child (the one :func:`chain_seeds` draws
    its noise seed from), so the starts of different seeds do not coincide (with ``seed + c``, seed
    0's chain 1 would start where seed 1's chain 0 does), they are independent of the chains' noise
    streams, and they are prefix-stable like :func:`chain_seeds`.
    """
    return [
        int(child.spawn(1)[0].generate_state(1, dtype=np.uint64)[0]) for child in _chain_sequences(seed, num_chains)
    ]


def seeds_of_chains(seed: int | Sequence[int], num_chains: int) -> list[int]:
    """Every chain's seed from a sampler's ``seed`` argument: :func:`chain_seeds` of one integer, or
    the per-chain seeds given as a sequence or 1-d array (checked: one integer in [0, 2**64) per chain)."""
    if isinstance(seed, np.ndarray) and seed.ndim == 1:
        seed = seed.tolist()
    if isinstance(seed, Sequence) and not isinstance(seed, str):
        if len(seed) != num_chains:
            raise ValueError(f"seed gives {len(seed)} per-chain seeds for num_chains={num_chains}")
        seeds = [_checked_seed(value, "per-chain seeds must be integers") for value in seed]
        chains_of: dict[int, list[int]] = {}
        for chain, value in enumerate(seeds):
            chains_of.setdefault(value, []).append(chain)
        repeated = [chains for chains in chains_of.values() if len(chains) > 1]
        if repeated:
            warn_caller(
                f"per-chain seeds repeat: chains {' and '.join(map(str, repeated))} share a seed, so they draw the "
                "same noise and minibatches and are not independent (from one start they are one chain), which "
                "R-hat and ESS assume; give each chain its own seed, or one integer seed for all",
                RuntimeWarning,
            )
        return seeds
    return chain_seeds(seed, num_chains)


def select_chains(mask: torch.Tensor, new: Any, old: Any) -> Any:
    """Per chain, the leaves of ``new`` where ``mask`` (num_chains,) is True, else those of ``old``.

    A leaf that ``new`` carries over from ``old`` (the same tensor) is kept as it is: a constant
    of the state, such as SGLD-CV's centre expanded over chains, stays one copy. Where ``mask`` is
    all True on the CPU, outside a compiled graph, ``new`` itself is returned: reading one boolean
    there costs about a µs and saves a ``torch.where`` per leaf (every step's divergence guard selects).
    A GPU would wait for that read (a host sync), and a compiled graph fuses the selects.
    """
    if mask.device.type == "cpu" and not torch.compiler.is_compiling() and bool(mask.all()):
        return new

    def select(new_leaf: torch.Tensor, old_leaf: torch.Tensor) -> torch.Tensor:
        if new_leaf is old_leaf:
            return new_leaf
        return torch.where(mask.view(-1, *[1] * (new_leaf.ndim - 1)), new_leaf, old_leaf)

    return pytree.tree_map(select, new, old)


def at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """The dtype of sums, squares and running moments of tensors of ``dtype``: float32 for a narrower one.

    In float16 a gradient above 256 squares to inf, a variance below 6e-8 rounds to 0, and a sum of
    some 10⁵ elements of order 1 overflows; the runner would take each inf for a divergence."""
    return torch.promote_types(dtype, torch.float32)


def zero_moments_like(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Zeros shaped like ``params``, in :func:`at_least_float32` of each: the start of a running moment."""
    return {name: torch.zeros_like(value, dtype=at_least_float32(value.dtype)) for name, value in params.items()}


def per_chain_sum(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over every element of every tensor (each (num_chains, *shape)), per chain: shape (num_chains,), in
    :func:`at_least_float32` of each."""
    return sum(
        value.reshape(value.shape[0], -1).sum(dim=1, dtype=at_least_float32(value.dtype)) for value in tensors.values()
    )


def flat_layout(params: dict[str, torch.Tensor]) -> tuple[int, torch.dtype]:
    """The size and dtype of one chain's ``params`` laid end to end: Σ numel per chain, promoted dtype."""
    dtype = functools.reduce(torch.promote_types, (value.dtype for value in params.values()))
    return sum(value.shape[1:].numel() for value in params.values()), dtype


def split_like(flat: torch.Tensor, like: dict[str, torch.Tensor], leading_dims: int = 1) -> dict[str, torch.Tensor]:
    """``flat`` (…, P) cut along its last dim into tensors named and typed like ``like``: name -> (…, *shape).

    Each tensor of ``like`` is (leading dims, *shape), its first ``leading_dims`` dims (by default one:
    the chain dim of stacked params) not part of a piece; P is the sum of the shapes' sizes.
    """
    shapes = [value.shape[leading_dims:] for value in like.values()]
    pieces = torch.split(flat, [shape.numel() for shape in shapes], dim=-1)
    return {
        name: as_dtype(piece.reshape(piece.shape[:-1] + shape), value.dtype)
        for (name, value), shape, piece in zip(like.items(), shapes, pieces, strict=True)
    }


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)``, which returns ``tensor`` itself when the dtype is the same but costs a dispatch
    (of some µs eagerly, more under vmap) even then: the comparison first is free."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


class ChainGenerators:
    """One ``torch.Generator`` per chain on ``device``; every draw has a leading chain dim."""

    def __init__(self, seeds: Sequence[int], device: torch.device) -> None:
        self.seeds = [int(seed) for seed in seeds]
        self.device = device
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in self.seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def get_states(self) -> list[torch.Tensor]:
        """Every chain's generator state, for a checkpoint."""
        return [generator.get_state() for generator in self.generators]

    def set_states(self, states: Sequence[torch.Tensor]) -> None:
        """Restore the states of :meth:`get_states`."""
        if len(states) != len(self.generators):
            raise ValueError(f"{len(states)} generator states for {len(self.generators)} chains")
        for generator, state in zip(self.generators, states, strict=True):
            generator.set_state(state.cpu())  # a generator's state is a CPU tensor, even a CUDA generator's

    def normal_like(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """ξ ~ N(0, I) shaped like ``params`` (each (num_chains, *shape)), one draw per chain."""
        return split_like(self.normal(*flat_layout(params)), params)

    def normal(self, size: int, dtype: torch.dtype) -> torch.Tensor:
        """ξ ~ N(0, I) of shape (num_chains, size): one ``randn`` call per chain, on its own generator."""
        flat = torch.empty(len(self.generators), size, dtype=dtype, device=self.device)
        for chain, generator in enumerate(self.generators):
            flat[chain].normal_(generator=generator)
        return flat

    def draw(self, requests: Sequence[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, Any]]:
        """Make the draws a :class:`RecordingGenerators` recorded, as ``(method, value)`` pairs."""
        return [(method, getattr(self, method)(*args)) for method, args in requests]

    def uniform(self, dtype: torch.dtype) -> torch.Tensor:
        """u ~ U(0, 1), shape (num_chains,)."""
        return torch.cat([torch.rand(1, generator=g, dtype=dtype, device=self.device) for g in self.generators])

    def permutations(self, n: int) -> torch.Tensor:
        """A random permutation of 0 … n−1 per chain, shape (num_chains, n): int32 where n allows it (the
        same permutation as int64's), which halves what the shuffles of a large data set hold, written in
        place (a stack of the chains' permutations would hold them twice)."""
        dtype = torch.int32 if n <= torch.iinfo(torch.int32).max else torch.int64
        rows = torch.empty(len(self.generators), n, dtype=dtype, device=self.device)
        for chain, generator in enumerate(self.generators):
            torch.randperm(n, generator=generator, out=rows[chain])
        return rows


class RecordingGenerators:
    """A :class:`ChainGenerators` that notes what each call asked for (sizes and dtypes, not values).

    A compiled step cannot call per-chain generators, so the runner records the draws of one
    eager step and, before each compiled step, makes the same draws with :meth:`ChainGenerators.draw`
    and hands them in through :class:`ReplayedDraws`: every chain keeps its own stream.
    """

    def __init__(self, generators: ChainGenerators) -> None:
        self.generators = generators
        self.device = generators.device
        self.requests: list[tuple[str, tuple[Any, ...]]] = []

    def __len__(self) -> int:
        return len(self.generators)

    def _record(self, method: str, *args: Any) -> Any:
        self.requests.append((method, args))
        return getattr(self.generators, method)(*args)

    def normal_like(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return split_like(self.normal(*flat_layout(params)), params)

    def normal(self, size: int, dtype: torch.dtype) -> torch.Tensor:
        return self._record("normal", size, dtype)

    def uniform(self, dtype: torch.dtype) -> torch.Tensor:
        return self._record("uniform", dtype)

    def permutations(self, n: int) -> torch.Tensor:
        return self._record("permutations", n)


class ReplayedDraws:
    """Stands in for :class:`ChainGenerators` inside a compiled step: returns, in order, draws
    made before the step by :meth:`ChainGenerators.draw` (``(method, value)`` pairs)."""

    def __init__(self, draws: Sequence[tuple[str, Any]], device: torch.device, num_chains: int) -> None:
        self.draws = draws
        self.device = device
        self.num_chains = num_chains
        self.position = 0

    def __len__(self) -> int:
        return self.num_chains

    def _next(self, method: str) -> Any:
        if self.position >= len(self.draws) or self.draws[self.position][0] != method:
            made = [made_method for made_method, _ in self.draws]
            raise RuntimeError(
                f"the sampler asked for {method} as random draw {self.position} of a compiled step, but its "
                f"first step drew {made}: with compile=True a step must draw the same kinds of randomness "
                "every time (draw, then select with torch.where, instead of drawing on some steps only)"
            )
        self.position += 1
        return self.draws[self.position - 1][1]

    def normal_like(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return split_like(self._next("normal"), params)

    def normal(self, size: int, dtype: torch.dtype) -> torch.Tensor:
        return self._next("normal")

    def uniform(self, dtype: torch.dtype) -> torch.Tensor:
        return self._next("uniform")

    def permutations(self, n: int) -> torch.Tensor:
        return self._next("permutations")
