"""The trace of a run: kept draws on the host, their sample stats, and the ArviZ export."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr

__all__ = ["Trace", "TraceRecorder"]


@dataclass
class Trace:
    """Kept draws of every chain, after burn-in and thinning.

    Attributes:
        posterior: name -> array of shape (num_chains, num_draws, *param_shape).
        sample_stats: name -> array of shape (num_chains, num_draws); always ``lp`` (the
            log-posterior estimate at the draw), ``step_size`` and ``diverging``.
        attrs: the sampler, its hyperparameters, the seed and library versions.
        draw_coords: name -> array of shape (num_draws,), labels shared by the chains: always
            ``step``, the step index of each draw; cyclical samplers add ``cycle``.
        final_state: the sampler state after the last step (tensors with a leading chain dim).
    """

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray]
    attrs: dict[str, Any]
    draw_coords: dict[str, np.ndarray]
    final_state: dict[str, Any] = field(repr=False)

    @property
    def num_chains(self) -> int:
        return next(iter(self.sample_stats.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.sample_stats.values())).shape[1]

    def _dataset(self, variables: dict[str, np.ndarray]) -> xr.Dataset:
        coords = {
            "chain": np.arange(self.num_chains),
            "draw": np.arange(self.num_draws),
            **{name: ("draw", values) for name, values in self.draw_coords.items()},
        }
        data_vars = {
            name: (("chain", "draw", *(f"{name}_dim_{axis}" for axis in range(values.ndim - 2))), values)
            for name, values in variables.items()
        }
        return xr.Dataset(data_vars, coords=coords, attrs=self.attrs)

    def to_arviz(self) -> Any:
        """An ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (ArviZ 1.x).

        Groups ``posterior`` (dims chain, draw, ``<name>_dim_<i>``…) and ``sample_stats``; the
        :attr:`draw_coords` are coordinates along ``draw``, so ``idata.posterior.groupby("cycle")``
        groups the draws of a cyclical sampler by cycle.
        """
        import arviz as az  # imported on use: importing ArviZ is slow and, in 0.x, warns

        groups = {"posterior": self._dataset(self.posterior), "sample_stats": self._dataset(self.sample_stats)}
        if int(az.__version__.split(".")[0]) < 1:
            return az.InferenceData(**groups)
        return xr.DataTree.from_dict(groups)


def _netcdf_attr(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        return value
    return repr(value)


class TraceRecorder:
    """Collects kept draws on the device and moves them to the host every ``chunk_size`` draws.

    Args:
        params: the chains' params (name -> (num_chains, *shape)), giving names, shapes and dtypes.
        stat_names: the names of the per-draw sample stats, each recorded with shape (num_chains,).
    """

    def __init__(self, params: dict[str, torch.Tensor], stat_names: list[str], chunk_size: int = 256) -> None:
        self.chunk_size = chunk_size
        num_chains = next(iter(params.values())).shape[0]
        self._empty = {
            **{
                f"posterior/{name}": torch.empty((num_chains, 0, *value.shape[1:]), dtype=value.dtype).numpy()
                for name, value in params.items()
            },
            **{
                f"sample_stats/{name}": np.zeros((num_chains, 0), dtype=bool if name == "diverging" else np.float64)
                for name in stat_names
            },
        }
        self._pending: list[dict[str, torch.Tensor]] = []
        self._chunks: list[dict[str, np.ndarray]] = []
        self._coords: list[dict[str, int]] = []

    def append(self, params: dict[str, torch.Tensor], stats: dict[str, torch.Tensor], coords: dict[str, int]) -> None:
        """Record one draw: ``params`` (name -> (num_chains, *shape)), ``stats`` (name -> (num_chains,)) and
        its ``coords``, labels shared by all chains."""
        draw = {f"posterior/{name}": value.detach().clone() for name, value in params.items()}
        draw.update({f"sample_stats/{name}": value.detach().clone() for name, value in stats.items()})
        self._pending.append(draw)
        self._coords.append(coords)
        if len(self._pending) >= self.chunk_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._chunks.append(
                {key: torch.stack([draw[key] for draw in self._pending], dim=1).cpu().numpy() for key in self._empty}
            )
            self._pending = []

    def finish(self, attrs: dict[str, Any], final_state: dict[str, Any]) -> Trace:
        """The :class:`Trace` of every draw recorded so far."""
        self._flush()
        groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}, "sample_stats": {}}
        for key, empty in self._empty.items():
            group, name = key.split("/", 1)
            groups[group][name] = np.concatenate([empty, *(chunk[key] for chunk in self._chunks)], axis=1)
        attrs = {
            "created_at": datetime.datetime.now(datetime.UTC).isoformat(),
            **{key: _netcdf_attr(value) for key, value in attrs.items()},
        }
        names = self._coords[0] if self._coords else {"step": 0}
        coords = {name: np.array([draw[name] for draw in self._coords], dtype=np.int64) for name in names}
        return Trace(groups["posterior"], groups["sample_stats"], attrs, coords, final_state)
