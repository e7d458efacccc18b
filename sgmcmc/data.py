"""Minibatch streams: every chain draws its own independent sequence of batches.

``data`` given to a sampler may be

* a :class:`Minibatches` (tensors with a batch size) or a ``torch.utils.data.DataLoader`` over a
  ``TensorDataset`` (or a ``Subset`` of one) with the default ``collate_fn`` and a sequential,
  random or ``SubsetRandomSampler``: each chain shuffles the loader's rows with its own
  generator every epoch and takes ``batch_size`` rows per step (an incomplete last batch is
  dropped, as ``drop_last=True``); the loader's order is not used, so it cannot couple the
  chains, but the rows a subset selects are the rows sampled;
* any other re-iterable of equally shaped batches (a list of tensors or of tuples/dicts of
  tensors, a DataLoader over another dataset, with another sampler or with its own
  ``collate_fn``): it is read once (under a fixed torch seed, so a loader that shuffles with the
  global RNG yields the same batches in every run), and each chain visits the batches in its own
  random order every epoch. The samplers that use all of the data at once (``LD``, ``SGLDCV``'s mode
  gradient, ``PSGLD``'s start, ``find_mode``) join the batches along dim 0, so for them every
  tensor of a batch must hold its examples along dim 0.

Batches for all chains are gathered with one indexing operation per tensor.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils.data import (
    DataLoader,
    RandomSampler,
    SequentialSampler,
    Subset,
    SubsetRandomSampler,
    TensorDataset,
    default_collate,
)

from sgmcmc._checks import count, warn_caller
from sgmcmc.chains import ChainGenerators

__all__ = ["Minibatches", "ChainData", "chain_data"]


def _check_dense(where: str, tensor: torch.Tensor) -> None:
    """Raise, naming ``where``, if ``tensor`` is sparse: rows are gathered from data tensors by indexing."""
    if tensor.layout != torch.strided:
        raise TypeError(
            f"{where} is a {tensor.layout} tensor; data tensors must be dense, as rows are gathered from them "
            "by indexing: pass tensor.to_dense()"
        )


def _check_dense_and_finite(where: str, tensor: torch.Tensor, row_numbers: torch.Tensor | None = None) -> None:
    """Raise, naming ``where``, if ``tensor`` is sparse, or (naming the first bad row) if it is floating
    or complex and holds NaN or inf; the row is named by ``row_numbers[row]`` when ``tensor`` holds rows
    gathered from a larger one."""
    _check_dense(where, tensor)
    if (tensor.is_floating_point() or tensor.is_complex()) and not torch.isfinite(tensor).all():
        bad_rows = (~torch.isfinite(tensor)).reshape(tensor.shape[0], -1).any(dim=1)
        first = int(bad_rows.nonzero()[0])
        row = first if row_numbers is None else int(row_numbers[first])
        raise ValueError(f"{where} holds non-finite values (NaN or inf), first in row {row}")


def _check_tensors(tensors: tuple[torch.Tensor, ...]) -> int:
    if not tensors:
        raise ValueError("data has no tensors")
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"data tensor {position} is a {type(tensor).__name__}, not a torch.Tensor")
        if tensor.ndim == 0:
            raise ValueError(f"data tensor {position} is 0-dim; rows must be along dim 0")
    num_rows = tensors[0].shape[0]
    for position, tensor in enumerate(tensors):
        if tensor.shape[0] != num_rows:
            raise ValueError(
                f"data tensors must share their first dim (rows): tensor 0 has {num_rows}, "
                f"tensor {position} has {tensor.shape[0]}"
            )
    if num_rows == 0:
        raise ValueError("data is empty: its tensors have 0 rows")
    for position, tensor in enumerate(tensors):
        _check_dense_and_finite(f"data tensor {position}", tensor)
    return num_rows


class Minibatches:
    """A data set of ``tensors`` (rows along dim 0) read in minibatches of ``batch_size`` rows.

    A batch is the tuple ``(t_1[rows], t_2[rows], …)``, or the tensor ``t_1[rows]`` alone when
    one tensor is given. Iterating yields the batches in order, like an unshuffled DataLoader.

    A sampler gives each chain a fresh permutation of the rows every epoch and takes
    ``len(self)`` batches from it; the N mod ``batch_size`` rows left over are other rows in
    every epoch, so each row is used equally often on average and the estimate stays unbiased.
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int) -> None:
        self.num_rows = _check_tensors(tensors)
        batch_size = count("batch_size", batch_size, 1)
        if batch_size > self.num_rows:
            raise ValueError(f"batch_size {batch_size} is larger than the {self.num_rows} rows of data")
        self.tensors = tensors
        self.batch_size = batch_size

    @property
    def rows(self) -> Any:
        """All rows in the structure of one batch."""
        return self.tensors if len(self.tensors) > 1 else self.tensors[0]

    def __len__(self) -> int:
        return self.num_rows // self.batch_size

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = slice(start, start + self.batch_size)
            yield pytree.tree_map(lambda t, rows=rows: t[rows], self.rows)


class ChainData:
    """Independent minibatch streams for a group of chains, all advanced by one call.

    ``units`` is a pytree of tensors whose dim 0 indexes the units a chain samples: rows
    (``rows=True``, ``units_per_step`` rows a batch) or whole pre-made batches (one a step).
    """

    def __init__(self, units: Any, units_per_step: int, rows: bool) -> None:
        self.units = units
        self.units_per_step = units_per_step
        self.rows = rows
        self.num_units = pytree.tree_leaves(units)[0].shape[0]
        self.steps_per_epoch = self.num_units // units_per_step
        self._permutations: torch.Tensor | None = None
        self._epoch_start_generators: list[torch.Tensor] | None = None
        self._keeps_epoch_starts = False
        self._position = 0

    def keep_epoch_starts(self) -> None:
        """Note the generators' states at each epoch's start, which :meth:`get_state` saves (only a
        checkpointed run needs them: at K = 1024 chains, reading them took 0.7 ms an epoch)."""
        self._keeps_epoch_starts = True

    def to(self, device: torch.device) -> ChainData:
        moved = ChainData(pytree.tree_map(lambda t: t.to(device), self.units), self.units_per_step, self.rows)
        moved._keeps_epoch_starts = self._keeps_epoch_starts
        return moved

    @property
    def example_counts(self) -> list[int]:
        """The numbers of examples the data may hold: its rows; for pre-made batches, the batches times a
        batch's rows, which any of its tensors may carry (a dict batch may hold a per-batch tensor first,
        as :func:`sgmcmc.minibatch_log_posterior` allows), so one count per distinct length of dim 1."""
        if self.rows:
            return [self.num_units]
        return sorted({self.num_units * leaf.shape[1] for leaf in pytree.tree_leaves(self.units)})

    def check_num_data(self, log_posterior: Any, num_shards: int = 1) -> None:
        """Warn when ``log_posterior.num_data``, if it has one, is not the number of examples the data covers:
        these rows, or ``num_shards`` ranks' shards of them each."""
        num_data = getattr(log_posterior, "num_data", None)
        counts = self.example_counts
        if num_data is None or num_data in [num_shards * examples for examples in counts]:
            return
        if num_shards == 1:
            held = f"the data holds {' or '.join(map(str, counts))} examples"
            advice = "the number of examples the data covers (not, say, the number of batches)"
        else:
            covered = " or ".join(f"{num_shards} × {examples} = {num_shards * examples}" for examples in counts)
            held = f"the {num_shards} ranks' shards hold {covered} examples"
            advice = (
                "the size of the WHOLE data set (sharded_num_rows(N)) and each rank's shard its own share (shard_rows)"
            )
        warn_caller(
            f"log_posterior was made with num_data={num_data} but {held}; the minibatch estimate scales the "
            f"likelihood by num_data/|B|, so num_data must be {advice}",
            RuntimeWarning,
        )

    def full_batch(self) -> Any:
        """The whole data set as one batch (pre-made batches concatenated along dim 0)."""
        if self.rows:
            return self.units
        return pytree.tree_map(lambda t: t.flatten(0, 1), self.units)

    def first_batch(self) -> Any:
        """One chain's first batch in the data's own order (used to check ``log_posterior``)."""
        if self.rows:
            return pytree.tree_map(lambda t: t[: self.units_per_step], self.units)
        return pytree.tree_map(lambda t: t[0], self.units)

    @functools.cached_property
    def _fingerprint(self) -> torch.Tensor:
        """Σ x, Σ x² and Σ |x| of every tensor, (tensors, 3) in float64 on the CPU: data of the same size but
        other values differ (computed once: every checkpoint of a run saves it)."""
        leaves = [leaf.double() for leaf in pytree.tree_leaves(self.units)]
        return torch.stack([torch.stack([leaf.sum(), leaf.square().sum(), leaf.abs().sum()]) for leaf in leaves]).cpu()

    def _same_fingerprint(self, saved: torch.Tensor) -> bool:
        """Whether ``saved`` is this data's fingerprint up to the rounding of summing in another order (a
        loader read once in a new shuffle): within 1e-9 of Σ|x| (for Σx and Σ|x|) and of Σx²."""
        now = self._fingerprint
        if saved.shape != now.shape:
            return False
        scale = now[:, [2, 1, 2]]
        return bool(((saved - now).abs() <= 1e-9 * scale).all())

    def get_state(self) -> dict[str, Any]:
        """The position in every chain's epoch, for a checkpoint: the generators' states at the epoch's start,
        from which :meth:`set_state` makes the epoch's shuffles again (num_chains × rows of them, far larger).
        Needs :meth:`keep_epoch_starts` called before the first :meth:`next`."""
        if not self._keeps_epoch_starts:
            raise RuntimeError(
                "ChainData.get_state() needs keep_epoch_starts() called before the first next(): without the "
                "generators' states at the epoch's start the saved position could not be restored"
            )
        return {
            "epoch_start_generators": self._epoch_start_generators,
            "position": self._position,
            "num_units": self.num_units,
            "units_per_step": self.units_per_step,
            "fingerprint": self._fingerprint,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state`; the data must have as many rows (or batches) as when it was saved."""
        if state["num_units"] != self.num_units:
            raise ValueError(
                f"the checkpoint's data had {state['num_units']} units (rows or batches), this has {self.num_units}"
            )
        if state.get("units_per_step", self.units_per_step) != self.units_per_step:
            raise ValueError(
                f"the checkpoint's data had batches of {state['units_per_step']} rows, this has {self.units_per_step}"
            )
        if not self._same_fingerprint(state["fingerprint"]):
            raise ValueError(
                "the checkpoint was written with other data of the same size (the sums of its tensors differ); "
                "pass the data it was written with, or delete the checkpoint to start afresh"
            )
        device = pytree.tree_leaves(self.units)[0].device
        self._epoch_start_generators, self._permutations = state["epoch_start_generators"], None
        if self._epoch_start_generators is not None:
            shuffler = ChainGenerators([0] * len(self._epoch_start_generators), device)
            shuffler.set_states(self._epoch_start_generators)
            self._permutations = shuffler.permutations(self.num_units)
        self._position = state["position"]

    def next(self, generators: ChainGenerators) -> Any:
        """The next batch of every chain, each leaf with a leading chain dim."""
        if self._position == 0:
            if self._keeps_epoch_starts:
                self._epoch_start_generators = generators.get_states()
            self._permutations = generators.permutations(self.num_units)
        start = self._position * self.units_per_step
        indices = self._permutations[:, start : start + self.units_per_step]
        self._position = (self._position + 1) % self.steps_per_epoch
        if not self.rows:
            indices = indices[:, 0]
        # index_select, not t[indices]: the same gather, 4× faster on CPU for a (K, B) index
        flat = indices.reshape(-1)
        return pytree.tree_map(lambda t: t.index_select(0, flat).view(*indices.shape, *t.shape[1:]), self.units)


def _stack_batches(batches: list[Any]) -> Any:
    leaves0, spec0 = pytree.tree_flatten(batches[0])
    for number, batch in enumerate(batches):
        leaves, spec = pytree.tree_flatten(batch)
        if spec != spec0:
            raise ValueError(f"batch {number} has structure {spec}, batch 0 has {spec0}")
        for leaf, leaf0 in zip(leaves, leaves0, strict=True):
            if not isinstance(leaf, torch.Tensor):
                raise TypeError(f"batch {number} holds a {type(leaf).__name__}; batches must hold tensors")
            if leaf.ndim == 0:
                raise ValueError(
                    f"batch {number} holds a 0-dim tensor; batches need a leading batch dim (a DataLoader "
                    "with batch_size=None yields single examples: give it a batch_size)"
                )
            if leaf.shape[0] == 0:
                raise ValueError(f"batch {number} has no rows")
            _check_dense_and_finite(f"batch {number}", leaf)
            if leaf.shape != leaf0.shape or leaf.dtype != leaf0.dtype:
                raise ValueError(
                    f"batch {number} has a tensor of shape {tuple(leaf.shape)} ({leaf.dtype}) where batch 0 "
                    f"has {tuple(leaf0.shape)} ({leaf0.dtype}); chains are stacked, so all batches must be "
                    "alike. Batches that are not rows of tensors are read once and kept for the whole run, so "
                    "DataLoader(drop_last=True) would leave the same rows out of every epoch: for rows, use "
                    "sgmcmc.Minibatches or a DataLoader over a TensorDataset (a new random remainder is left "
                    "out each epoch), or a batch size that divides the number of examples"
                )
    return pytree.tree_map(lambda *leaves: torch.stack(leaves), *batches)


def _is_tensor_dataset(dataset: Any) -> bool:
    """Whether ``dataset`` is a ``TensorDataset``, or a ``Subset`` of one (as ``random_split`` makes)."""
    return isinstance(dataset.dataset if isinstance(dataset, Subset) else dataset, TensorDataset)


def _rows_of_loader(loader: DataLoader) -> tuple[torch.Tensor, ...] | None:
    """The rows a DataLoader reads, as tensors, when it only shuffles or selects rows of a
    ``TensorDataset``; ``None`` when it does more (a dataset subclass, a weighted or custom sampler,
    a ``collate_fn``), so that it must be read as it yields."""
    if not loader.batch_size or loader.collate_fn is not default_collate:
        return None
    dataset, indices = loader.dataset, None
    if type(dataset) is Subset:  # as torch.utils.data.random_split makes
        dataset, indices = dataset.dataset, list(dataset.indices)
    if type(dataset) is not TensorDataset:
        return None
    sampler = loader.sampler
    if type(sampler) is SubsetRandomSampler:
        indices = [int(index) if indices is None else indices[index] for index in sampler.indices]
    elif not (
        # over the loader's own dataset: a sampler over another source of fewer rows reads only those
        (type(sampler) is SequentialSampler and len(sampler) == len(loader.dataset))
        or (type(sampler) is RandomSampler and not sampler.replacement and sampler.num_samples == len(loader.dataset))
    ):
        return None
    if indices is None:
        return dataset.tensors
    rows = torch.as_tensor(indices, dtype=torch.long)
    for position, tensor in enumerate(dataset.tensors):  # before the indexing, which sparse tensors lack
        _check_dense(f"data tensor {position} of the DataLoader's TensorDataset", tensor)
    selected = tuple(tensor[rows.to(tensor.device)] for tensor in dataset.tensors)
    for position, tensor in enumerate(selected):
        # named by the dataset's row, which the user can look up, not by its place among the selected rows
        _check_dense_and_finite(f"data tensor {position} of the DataLoader's TensorDataset", tensor, row_numbers=rows)
    return selected


def full_data_arguments(data: Any, device: torch.device, log_posterior: Any = None) -> tuple[Any, ...]:
    """The extra arguments of ``log_posterior`` on all of ``data`` at once: ``(batch,)`` on ``device``,
    or ``()`` without data (for ``find_mode`` and the Laplace approximation). Given ``log_posterior``,
    warn if its ``num_data`` is not the data's size (:meth:`ChainData.check_num_data`)."""
    stream = chain_data(data)
    if stream is None:
        return ()
    if log_posterior is not None:
        stream.check_num_data(log_posterior)
    return (stream.to(device).full_batch(),)


def chain_data(data: Any) -> ChainData | None:
    """Wrap a sampler's ``data`` argument as :class:`ChainData` (``None`` stays ``None``)."""
    if data is None:
        return None
    if isinstance(data, Minibatches):
        return ChainData(data.rows, data.batch_size, rows=True)
    if isinstance(data, DataLoader) and data.batch_sampler is None and _is_tensor_dataset(data.dataset):
        # without batching (no batch_size, no batch_sampler) each row would be read as a batch of its
        # elements: (d,) features as d examples
        raise ValueError(
            "data is a DataLoader with batch_size=None, which yields its TensorDataset's rows one at a time; "
            "give it a batch_size (or use sgmcmc.Minibatches(*tensors, batch_size=...)); if each row is a whole "
            "batch, pass list(loader)"
        )
    tensors = _rows_of_loader(data) if isinstance(data, DataLoader) else None
    if tensors is not None:
        loader = Minibatches(*tensors, batch_size=data.batch_size)
        return ChainData(list(loader.tensors), loader.batch_size, rows=True)
    if isinstance(data, torch.Tensor):
        raise TypeError("data is a bare tensor; wrap it as sgmcmc.Minibatches(tensor, batch_size=...)")
    if isinstance(data, tuple) and all(isinstance(item, torch.Tensor) for item in data):
        # (features, targets) would otherwise be read as two pre-made batches
        raise TypeError(
            "data is a tuple of tensors; for rows of (features, targets, …) use "
            "sgmcmc.Minibatches(*data, batch_size=...); give pre-made batches as a list"
        )
    if isinstance(data, Mapping) and all(isinstance(item, torch.Tensor) for item in data.values()):
        # iterating would yield its keys
        raise TypeError(
            "data is a dict of tensors; for rows use sgmcmc.Minibatches(*data.values(), batch_size=...), "
            "whose batches are tuples in that order; give pre-made batches as a list of dicts"
        )
    if not isinstance(data, Iterable):
        raise TypeError(f"data must be a re-iterable of batches, got {type(data).__name__}")
    # under a fixed seed, so that a loader that shuffles with the global RNG gives the same batches in
    # every run and on resuming (which checks the data only up to order), and leaves that RNG alone
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)  # torch.manual_seed would reseed the GPUs' generators too
        if iter(data) is data:
            raise TypeError("data is a one-shot iterator; give a re-iterable (a list, a DataLoader, Minibatches)")
        batches = list(data)
    if not batches:
        raise ValueError("data yielded no batches (empty loader)")
    return ChainData(_stack_batches(batches), 1, rows=False)
