"""The trace of a run: kept draws, their sample stats and functionals, and the ArviZ export.

Draws are collected on the device and moved to the host in chunks, either into memory or
appended to a netCDF file (an ArviZ InferenceData layout: one HDF5 group per ArviZ group, dims
``chain``, ``draw``, ``<name>_dim_<i>``). A file is rewritten in place after every chunk and
closed between chunks, so at any moment it is a valid trace of the draws written so far; its
``steps_done`` attribute says how far the run got. It is written without HDF5's file lock, which
another process reading it (a notebook watching the run) would hold and so stop the run.
"""

from __future__ import annotations

import ast
import datetime
import hashlib
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import torch
import xarray as xr
from torch.utils import _pytree as pytree

__all__ = ["Trace", "TraceRecorder", "GROUPS", "group_dataset"]

GROUPS = ("posterior", "functionals", "gradients", "sample_stats")
"""The groups of a trace, in the order they are exported: the kept parameters, the user's
functionals of them, ∇log p̃ at the kept parameters (on request) and the per-draw stats."""

_TARGET_CHUNK_BYTES = 1 << 20


@dataclass
class Trace:
    """Kept draws of every chain, after burn-in and thinning.

    Attributes:
        posterior: name -> array of shape (num_chains, num_draws, *param_shape), the kept params.
        sample_stats: name -> array of shape (num_chains, num_draws); always ``lp`` (the
            log-posterior estimate at the draw), ``step_size`` and ``diverging``.
        attrs: the sampler, its hyperparameters, the seed, ``steps_done`` and library versions.
        draw_coords: name -> array of shape (num_draws,), labels shared by the chains: always
            ``step``, the step index of each draw; cyclical samplers add ``cycle``.
        final_state: the sampler state after the last step (tensors with a leading chain dim);
            None for a trace loaded from a file.
        functionals: name -> array of shape (num_chains, num_draws, *value_shape), each
            user-given functional evaluated at every draw.
        gradients: name -> array shaped like ``posterior[name]``: ∇log p̃ at the draw on the
            batch of its step, the plain minibatch estimate (not a sampler's variance-reduced one,
            such as SGLD-CV's), when ``keep_gradients=True``.
        path: the netCDF file holding the draws when the run streamed them to disk (then the
            groups read each variable from the file when it is indexed), else None.
    """

    posterior: Mapping[str, np.ndarray]
    sample_stats: Mapping[str, np.ndarray]
    attrs: dict[str, Any]
    draw_coords: dict[str, np.ndarray]
    final_state: dict[str, Any] | None = field(default=None, repr=False)
    functionals: Mapping[str, np.ndarray] = field(default_factory=dict)
    gradients: Mapping[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None

    @property
    def num_chains(self) -> int:
        if isinstance(self.sample_stats, _StoredGroup):  # from the file's dims, without reading a variable
            return self.sample_stats.num_chains
        return self.sample_stats["lp"].shape[0]

    @property
    def num_draws(self) -> int:
        return len(next(iter(self.draw_coords.values())))

    @property
    def diverged_at_step(self) -> np.ndarray:
        """Per chain, the step at which it diverged and was frozen, −1 where it did not: shape (num_chains,).

        Read from ``attrs["diverged_at_step"]`` (a repr string, as netCDF keeps lists), also of a trace loaded
        from its file. It names a chain that diverged after its last kept draw, which no ``diverging`` flag
        marks."""
        return np.array(ast.literal_eval(str(self.attrs["diverged_at_step"])), dtype=np.int64).reshape(-1)

    def groups(self) -> dict[str, Mapping[str, np.ndarray]]:
        """The non-empty groups, in :data:`GROUPS` order."""
        return {name: getattr(self, name) for name in GROUPS if len(getattr(self, name))}

    def _dataset(self, variables: Mapping[str, np.ndarray]) -> xr.Dataset:
        coords = {
            "chain": np.arange(self.num_chains),
            "draw": np.arange(self.num_draws),
            **{name: ("draw", values) for name, values in self.draw_coords.items()},
        }
        data_vars = {
            name: (("chain", "draw", *_dims(name, values.ndim - 2)), values) for name, values in variables.items()
        }
        return xr.Dataset(data_vars, coords=coords, attrs=self.attrs)

    def to_arviz(self) -> Any:
        """An ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).

        Groups ``posterior`` (dims chain, draw, ``<name>_dim_<i>``…), ``sample_stats`` and, when
        present, ``functionals`` and ``gradients``, so ``az.summary(idata, group="functionals")``
        gives R-hat and ESS of the functionals. The :attr:`draw_coords` are coordinates along
        ``draw``, so ``group_dataset(idata, "posterior").groupby("cycle")`` groups the draws of a
        cyclical sampler by cycle. A trace streamed to disk is opened lazily from its file, which stays open for reading
        until closed (ArviZ 0.x: ``for group in idata.groups(): idata[group].close()``; 1.x:
        ``idata.close()``): a run that writes that file again (a resume) needs it closed first.
        """
        import arviz as az  # imported on use: importing ArviZ is slow and, in 0.x, warns

        if self.path is not None:
            self.sample_stats.check_unchanged()
            stored = az.from_netcdf(str(self.path))
            # this trace's draws: a run still writing the file may have appended more since it was opened
            draws = {"draw": slice(0, self.num_draws)}
            if isinstance(stored, xr.DataTree):  # ArviZ 1.x; its root node has no draw dim
                stored = stored.isel(draws, missing_dims="ignore")
                nodes = list(stored.children.values())
            else:
                stored = stored.isel(**draws)
                nodes = [stored[group] for group in stored.groups()]
            for node in nodes:  # the run's record as of these draws (steps_done, diverged_at_step), not the file's now
                node.attrs.update(self.attrs)
            return stored
        groups = {name: self._dataset(variables) for name, variables in self.groups().items()}
        if int(az.__version__.split(".")[0]) < 1:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not defined in the InferenceData scheme")
                return az.InferenceData(**groups)
        return xr.DataTree.from_dict(groups)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        """The trace in a netCDF file written by a streaming run (``sample(..., trace_file=path)``), or by
        ArviZ's ``to_netcdf`` from :meth:`to_arviz` (which keeps the run's attrs on each group).

        Variables are read from the file when indexed, so a trace larger than memory can be
        opened; the file of an interrupted run holds the draws written before it stopped.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"{path} is a directory; give the trace file in it (such as {path / 'trace.nc'})")
        if not path.is_file():
            raise FileNotFoundError(f"no trace file at {path}")
        if not h5py.is_hdf5(path):
            raise ValueError(f"{path} is not an sgmcmc trace: it is not a netCDF-4 (HDF5) file")
        with h5netcdf.File(path, "r") as file:
            present = [name for name in GROUPS if name in file.groups]
            if "sample_stats" not in present:
                raise ValueError(f"{path} is not an sgmcmc trace: it has no sample_stats group")
            stats = file.groups["sample_stats"]
            # a streamed file keeps the run's attrs at its root (where its progress is updated); ArviZ on each group
            attrs = {
                key: value.item() if isinstance(value, np.generic) else value
                for key, value in {**stats.attrs, **file.attrs}.items()
            }
            coords = [name for name, variable in stats.variables.items() if variable.dimensions == ("draw",)]
            draw_coords = {name: np.asarray(stats.variables[name][...]) for name in coords if name != "draw"}
            if "step" not in draw_coords:
                raise ValueError(f"{path} is not an sgmcmc trace: its sample_stats has no step coordinate")
        groups = {name: _StoredGroup(path, name, len(draw_coords["step"])) for name in present}
        return cls(
            posterior=groups.get("posterior", {}),
            sample_stats=groups["sample_stats"],
            attrs=attrs,
            draw_coords=draw_coords,
            functionals=groups.get("functionals", {}),
            gradients=groups.get("gradients", {}),
            path=path,
        )


def group_dataset(idata: Any, group: str) -> xr.Dataset:
    """One group of :meth:`Trace.to_arviz`'s result (or of ``az.from_netcdf``'s) as an ``xarray.Dataset``,
    under either ArviZ: 0.x's ``InferenceData`` holds Datasets, 1.x's ``DataTree`` holds tree nodes, which
    take neither ``node[["name"]]`` nor ``groupby``."""
    node = idata[group]
    return node.to_dataset() if isinstance(node, xr.DataTree) else node


def _dims(name: str, ndim: int) -> tuple[str, ...]:
    return tuple(f"{name}_dim_{axis}" for axis in range(ndim))


def netcdf_attr(value: Any) -> Any:
    """``value`` as a netCDF attribute: numbers and strings as they are, anything else as its repr,
    with a digest of the tensors it holds (a repr rounds them, and elides large ones).

    The repr is of the tensors' values on the CPU, so the attribute (which a checkpoint compares)
    does not change with the device they were given on.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)  # plain str: h5py cannot store subclasses such as torch's TorchVersion
    if isinstance(value, (int, float)):
        return value
    on_cpu = pytree.tree_map_only(torch.Tensor, lambda tensor: tensor.detach().cpu(), value)
    digest = tensor_digest(on_cpu)
    return repr(on_cpu) if digest is None else f"{on_cpu!r} (sha256 {digest})"


def tensor_digest(value: Any) -> str | None:
    """A digest of the dtypes, shapes and values of the tensors ``value`` holds (wherever they lie), or
    None if it holds none."""
    tensors = [leaf for leaf in pytree.tree_leaves(value) if isinstance(leaf, torch.Tensor)]
    if not tensors:
        return None
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class _StoredGroup(Mapping[str, np.ndarray]):
    """One group of a trace file; indexing reads that variable's first ``num_draws`` draws (decoded by xarray),
    the draws the file held when it was opened, whose coordinates the trace keeps: a run still writing the file
    appends more, and a resumed one cuts it back to its checkpoint and writes the same draws again. A file now
    shorter than that, or written by a later run (another ``created_at``), is refused, not read."""

    def __init__(self, path: Path, group: str, num_draws: int) -> None:
        self.path, self.group, self.num_draws = path, group, num_draws
        with h5netcdf.File(path, "r") as file:
            variables = file.groups[group].variables
            self._names = [name for name, variable in variables.items() if variable.dimensions[:2] == ("chain", "draw")]
            self._created_at = file.groups[group].attrs.get("created_at")
            self.num_chains = file.groups[group].dimensions["chain"].size

    def _check_unchanged(self, dataset: xr.Dataset) -> None:
        if dataset.attrs.get("created_at") != self._created_at:
            raise RuntimeError(
                f"{self.path} now holds another run (created_at {dataset.attrs.get('created_at')}, not "
                f"{self._created_at}): it was written again after this trace was opened"
            )
        if dataset.sizes["draw"] < self.num_draws:
            raise RuntimeError(
                f"{self.path} now holds {dataset.sizes['draw']} draws, fewer than the {self.num_draws} it held "
                "when this trace was opened: a resumed run has cut it back to its checkpoint; load it again"
            )

    @contextmanager
    def _opened(self) -> Iterator[xr.Dataset]:
        """The group's dataset, once it is known to hold the run and the draws it held when opened."""
        with xr.open_dataset(self.path, group=self.group, engine="h5netcdf") as dataset:
            self._check_unchanged(dataset)
            yield dataset

    def check_unchanged(self) -> None:
        """Raise if the file now holds another run, or fewer draws than when this group was opened."""
        with self._opened():
            pass

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._names:
            raise KeyError(name)
        with self._opened() as dataset:
            return dataset[name][:, : self.num_draws].values

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True)
class Variable:
    """The per-chain, per-draw shape and dtype of one recorded variable."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def of(cls, value: torch.Tensor) -> Variable:
        """The variable recorded from ``value`` of shape (num_chains, *shape)."""
        return cls(tuple(value.shape[1:]), torch.empty(0, dtype=value.dtype).numpy().dtype)

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.from_numpy(np.empty(0, self.dtype)).dtype


Layout = dict[str, dict[str, Variable]]
"""group -> variable name -> :class:`Variable`."""


class _TraceFile:
    """A netCDF trace file that grows along ``draw``: created empty, appended to chunk by chunk."""

    def __init__(self, path: Path, layout: Layout, coord_names: list[str], num_chains: int) -> None:
        self.path = path
        self.layout = {group: variables for group, variables in layout.items() if variables}
        self.coord_names = coord_names
        self.num_chains = num_chains

    def _open(self, mode: str) -> h5netcdf.File:
        """The file opened to write (``mode`` "w" or "a"), without HDF5's file lock (a reader in another
        process holds it shared), or, where HDF5 finds it held open in this process, an OSError that says
        what may hold it."""
        try:
            return h5netcdf.File(self.path, mode, locking=False)
        except OSError as error:
            if "already open" not in str(error) and "lock" not in str(error):
                raise
            raise OSError(
                f"cannot open the trace file {self.path} to write ({error}). If this process still holds it "
                "open for reading, e.g. an InferenceData from Trace.to_arviz() or az.from_netcdf() of this "
                "file, close that first (ArviZ 0.x: for group in idata.groups(): idata[group].close(); "
                "ArviZ 1.x: idata.close())"
            ) from error

    def create(self, attrs: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._open("w") as file:
            file.attrs.update(attrs)
            for group_name, variables in self.layout.items():
                group = file.create_group(group_name)
                group.dimensions = {
                    "chain": self.num_chains,
                    "draw": None,
                    **{
                        dim: size
                        for name, variable in variables.items()
                        for dim, size in zip(_dims(name, len(variable.shape)), variable.shape, strict=True)
                    },
                }
                group.create_variable("chain", ("chain",), data=np.arange(self.num_chains))
                for coord in ["draw", *self.coord_names]:
                    group.create_variable(coord, ("draw",), dtype=np.int64, chunks=(1024,))
                for name, variable in variables.items():
                    draw_bytes = variable.dtype.itemsize * max(1, int(np.prod(variable.shape)))
                    draws_per_chunk = max(1, min(1024, _TARGET_CHUNK_BYTES // draw_bytes))
                    stored = group.create_variable(
                        name,
                        ("chain", "draw", *_dims(name, len(variable.shape))),
                        dtype=np.int8 if variable.dtype == bool else variable.dtype,
                        chunks=(1, draws_per_chunk, *(max(1, size) for size in variable.shape)),  # HDF5: > 0
                    )
                    if variable.dtype == bool:
                        stored.attrs["dtype"] = "bool"
                    stored.attrs["coordinates"] = " ".join(self.coord_names)
                group.attrs.update(attrs)

    def write_attrs(self, attrs: dict[str, Any]) -> None:
        """Update the attrs of the file and of each of its groups."""
        with self._open("a") as file:
            file.attrs.update(attrs)
            for group_name in self.layout:
                file.groups[group_name].attrs.update(attrs)

    def write(
        self, start: int, chunk: dict[str, dict[str, np.ndarray]], coords: dict[str, np.ndarray], attrs: dict
    ) -> None:
        """Write draws ``start``… of every group (the file grows to hold them; a rewrite is harmless)."""
        with self._open("a") as file:
            end = start + len(coords["draw"])
            for group_name, variables in self.layout.items():
                group = file.groups[group_name]
                group.resize_dimension("draw", end)
                for coord, values in coords.items():
                    group.variables[coord][start:end] = values
                for name in variables:
                    group.variables[name][:, start:end] = chunk[group_name][name]
                group.attrs.update(attrs)
            file.attrs.update(attrs)

    def truncate(self, num_draws: int, created_at: str | None) -> None:
        """Drop every draw after the first ``num_draws`` (a resumed run rewrites them), once the file is
        found to be the one its run created at ``created_at`` (None: a checkpoint that did not record it)."""
        with self._open("a") as file:
            found = file.attrs.get("created_at")
            missing = [
                f"{group_name}/{name}"
                for group_name, variables in self.layout.items()
                for name in variables
                if group_name not in file.groups or name not in file.groups[group_name].variables
            ]
            if (created_at is not None and found != created_at) or missing:
                # checked before anything is cut: the file may hold another run's draws
                raise ValueError(
                    f"trace file {self.path} is not the one the checkpoint's run wrote (that was created at "
                    f"{created_at}, this one at {found}"
                    + (f", and it lacks {missing}" if missing else "")
                    + "); it was left untouched. Put the run's own file back, or delete the checkpoint to start "
                    "afresh"
                )
            written = file.groups["sample_stats"].dimensions["draw"].size
            if written < num_draws:
                raise ValueError(f"trace file {self.path} holds {written} draws; the checkpoint needs {num_draws}")
            for group_name in self.layout:
                file.groups[group_name].resize_dimension("draw", num_draws)


def _host_array(shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    """An uninitialised host array for every draw of one variable, or a clear error when it cannot fit."""
    try:
        return np.empty(shape, dtype)
    except MemoryError as error:
        gigabytes = np.dtype(dtype).itemsize * int(np.prod(shape)) / 1e9
        raise MemoryError(
            f"the in-memory trace of {name!r} would take {gigabytes:.1f} GB (shape {shape}); stream it to disk "
            "with trace_file=..., keep fewer draws (thin, burn_in) or fewer parameters (keep=...)"
        ) from error


class TraceRecorder:
    """Collects kept draws in a preallocated buffer on the device and copies them to the host in chunks.

    In memory, the host arrays are allocated once for every draw the run can keep, so the trace is
    never copied again (no concatenation at the end); with ``path`` each chunk is appended to the file.

    Args:
        layout: group -> name -> :class:`Variable` of every recorded value (groups of :data:`GROUPS`).
        coord_names: names of the per-draw labels beyond ``draw`` (``step``, and e.g. ``cycle``).
        num_chains: the number of chains.
        attrs: the run's attributes, written to the file and the trace.
        max_draws: the most draws the run keeps (the size of the in-memory arrays).
        path: where to stream the draws as a netCDF file; None keeps them in memory.
        chunk_bytes: the most bytes of draws held on the device before they move to the host (a
            chunk is at most 256 draws, at least one).
        run_attrs: ``() -> attrs`` that change as the run goes on (the chains' divergence record),
            written to the file with ``steps_done`` whenever that is, and to the finished trace.
    """

    def __init__(
        self,
        layout: Layout,
        coord_names: list[str],
        num_chains: int,
        attrs: dict[str, Any],
        max_draws: int,
        path: str | Path | None = None,
        chunk_bytes: int = 64 << 20,
        run_attrs: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.run_attrs = run_attrs
        self.layout = {group: layout.get(group, {}) for group in GROUPS}
        self.coord_names = coord_names
        self.num_chains = num_chains
        self.attrs = {
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            **{key: netcdf_attr(value) for key, value in attrs.items()},
        }
        draw_bytes = num_chains * sum(
            variable.dtype.itemsize * int(np.prod(variable.shape))
            for group in layout.values()
            for variable in group.values()
        )
        self.chunk_size = max(1, min(256, chunk_bytes // max(draw_bytes, 1), max_draws))
        self.file = None if path is None else _TraceFile(Path(path), self.layout, coord_names, num_chains)
        # group -> name -> (num_chains, chunk_size, *shape) on the device, made at the first draw
        self._buffer: dict[str, dict[str, torch.Tensor]] | None = None
        self._pending_coords: list[dict[str, int]] = []
        self._num_flushed = 0
        self.non_finite_functionals: dict[str, int] = {}
        """Functional name -> how many of the (chain, draw) values flushed so far hold a NaN or ±inf."""
        self._values: dict[str, dict[str, np.ndarray]] = {}
        self._coords: dict[str, np.ndarray] = {}
        if self.file is None:
            self._values = {
                group: {
                    name: _host_array((num_chains, max_draws, *variable.shape), variable.dtype, f"{group}/{name}")
                    for name, variable in variables.items()
                }
                for group, variables in self.layout.items()
            }
            self._coords = {name: np.empty(max_draws, np.int64) for name in ["draw", *coord_names]}

    def start(self, steps_done: int) -> None:
        """Create the trace file (a fresh run); a resumed run calls :meth:`restore` instead."""
        if self.file is not None:
            self.file.create({**self.attrs, **self._progress(steps_done)})

    def _progress(self, steps_done: int) -> dict[str, Any]:
        """The attrs that say how far the run got: a file read mid-run, or left by a killed run, has them."""
        return {"steps_done": steps_done, **{key: netcdf_attr(value) for key, value in self.run_attrs().items()}}

    @property
    def num_draws(self) -> int:
        return self._num_flushed + len(self._pending_coords)

    def append(self, values: dict[str, dict[str, torch.Tensor]], coords: dict[str, int], steps_done: int) -> None:
        """Record one draw: group -> name -> tensor (num_chains, *shape), and its labels; ``steps_done`` is
        how far the run got, which the file records with the chunk this draw completes."""
        if self._buffer is None:
            self._buffer = {
                group: {
                    # in the recorded dtype, not the value's: a bfloat16 lp is recorded as float64
                    name: value.new_empty(
                        (self.num_chains, self.chunk_size, *value.shape[1:]), dtype=self.layout[group][name].torch_dtype
                    )
                    for name, value in v.items()
                }
                for group, v in values.items()
            }
        slot = len(self._pending_coords)
        buffers = self._buffer
        torch._foreach_copy_(
            [buffers[group][name].select(1, slot) for group, variables in values.items() for name in variables],
            [value.detach() for variables in values.values() for value in variables.values()],
        )
        self._pending_coords.append({"draw": self.num_draws, **coords})
        if len(self._pending_coords) == self.chunk_size:
            self.flush(steps_done)

    def flush(self, steps_done: int) -> None:
        """Move pending draws to the host (and the file); record how far the run got in the file's attrs."""
        count = len(self._pending_coords)
        if count == 0:
            if self.file is not None:
                self.file.write_attrs(self._progress(steps_done))
            return
        assert self._buffer is not None
        # on a CPU device these are views of the buffer: both destinations below copy them before it is reused
        chunk = {
            group: {name: self._buffer[group][name][:, :count].cpu().numpy() for name in variables}
            for group, variables in self.layout.items()
        }
        coords = {
            name: np.array([draw[name] for draw in self._pending_coords], np.int64)
            for name in ["draw", *self.coord_names]
        }
        start, end = self._num_flushed, self._num_flushed + count
        # the draws count as flushed only once written: a flush cut short (Ctrl-C) is redone whole by the next
        if self.file is not None:
            self.file.write(start, chunk, coords, self._progress(steps_done))
        else:
            for group, variables in chunk.items():
                for name, values in variables.items():
                    self._values[group][name][:, start:end] = values
            for name, values in coords.items():
                self._coords[name][start:end] = values
        self._num_flushed, self._pending_coords = end, []
        # counted once written, as the draws are: on the host already, so no sync of its own
        for name, values in chunk.get("functionals", {}).items():
            if values.dtype.kind in "fc":
                non_finite = int((~np.isfinite(values)).reshape(*values.shape[:2], -1).any(axis=-1).sum())
                if non_finite:
                    self.non_finite_functionals[name] = self.non_finite_functionals.get(name, 0) + non_finite

    def checkpoint(self, steps_done: int) -> dict[str, Any]:
        """What a checkpoint needs to restore the trace: the draws so far (in memory) or their count."""
        self.flush(steps_done)
        counts = {"num_draws": self._num_flushed, "non_finite_functionals": dict(self.non_finite_functionals)}
        if self.file is not None:
            return {**counts, "created_at": self.attrs["created_at"]}
        # copies: a view would make torch.save write the whole preallocated array
        return {
            **counts,
            "values": {
                group: {name: torch.from_numpy(v[:, : self._num_flushed].copy()) for name, v in variables.items()}
                for group, variables in self._values.items()
            },
            "coords": {name: torch.from_numpy(v[: self._num_flushed].copy()) for name, v in self._coords.items()},
        }

    def restore(self, checkpoint: dict[str, Any], steps_done: int) -> None:
        """Continue from a :meth:`checkpoint` taken after ``steps_done`` steps: reload its draws, or cut
        the file back to them (and its ``steps_done`` with them)."""
        self._num_flushed = checkpoint["num_draws"]
        self.non_finite_functionals = dict(checkpoint["non_finite_functionals"])
        if self.file is not None:
            if not self.file.path.is_file():
                raise FileNotFoundError(f"resuming needs the trace file {self.file.path}, which is missing")
            self.file.truncate(self._num_flushed, checkpoint.get("created_at"))
            self.attrs["created_at"] = checkpoint.get("created_at", self.attrs["created_at"])
            self.file.write_attrs(self._progress(steps_done))
            return
        for group, variables in checkpoint["values"].items():
            for name, values in variables.items():
                self._values[group][name][:, : self._num_flushed] = values.numpy()
        for name, values in checkpoint["coords"].items():
            self._coords[name][: self._num_flushed] = values.numpy()

    def finish(self, steps_done: int, final_state: dict[str, Any]) -> Trace:
        """The :class:`Trace` of every draw recorded so far."""
        self.flush(steps_done)
        if self.file is not None:
            trace = Trace.load(self.file.path)
            trace.final_state = final_state
            return trace
        # views, not copies: the host arrays were made for this trace (a stopped run leaves the tail unused)
        groups = {
            group: {name: values[:, : self._num_flushed] for name, values in variables.items()}
            for group, variables in self._values.items()
        }
        coords = {name: values[: self._num_flushed] for name, values in self._coords.items() if name != "draw"}
        return Trace(
            posterior=groups["posterior"],
            sample_stats=groups["sample_stats"],
            attrs={**self.attrs, **self._progress(steps_done)},
            draw_coords=coords,
            final_state=final_state,
            functionals=groups["functionals"],
            gradients=groups["gradients"],
        )
