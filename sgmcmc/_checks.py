"""Argument checks shared by every module: each raises naming the argument and its value."""

from __future__ import annotations

import contextlib
import math
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch


def real(name: str, value: Any) -> float:
    """``value`` as a float, or a TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def flag(name: str, value: Any) -> bool:
    """``value`` as a bool, or a TypeError naming ``name`` (a string such as "False" is not a flag)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def positive(name: str, value: Any) -> float:
    """A finite float > 0, or a ValueError naming ``name``."""
    value = real(name, value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def nonnegative(name: str, value: Any) -> float:
    """A finite float >= 0, or a ValueError naming ``name``."""
    value = real(name, value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def below_one(name: str, value: Any) -> float:
    """A float in [0, 1) (a decay rate), or a ValueError naming ``name``."""
    value = nonnegative(name, value)
    if value >= 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def count(name: str, value: Any, minimum: int) -> int:
    """An integer >= ``minimum``, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def sampling_device(name: str, value: Any) -> torch.device:
    """``value`` as a ``torch.device`` that holds data, or a ValueError naming ``name``."""
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name} must name a torch device, such as cpu or cuda, got {value!r}") from error
    if device.type == "meta":  # tensors there have shapes and no values: nothing can be sampled or checked
        raise ValueError(f"{name} is the meta device, whose tensors hold no values; give cpu or cuda")
    if device.type == "cuda":  # checked without touching a GPU: each rank of a job would make a context on GPU 0
        if not torch.cuda.is_available():  # a CPU-only torch: its bare AssertionError
            raise ValueError(f"{name} {str(device)!r} needs a CUDA GPU, and this torch sees none")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {str(device)!r} names a GPU past the {torch.cuda.device_count()} this torch sees")
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as error:  # an index past the devices, a backend this build lacks
            reason = str(error).strip().split(". ")[0]  # torch's next sentences list every dispatch key
            raise ValueError(f"{name} {str(device)!r} cannot be used here: {reason}") from error
    return device


def recordable(where: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` if numpy (and so a trace) has its dtype; else a TypeError naming ``where``."""
    try:
        torch.empty(0, dtype=value.dtype).numpy()
    except TypeError:
        raise TypeError(
            f"{where} has dtype {value.dtype}, which numpy and so the trace cannot hold; "
            "use float16, float32 or float64"
        ) from None
    return value


def floating_point(where: str, value: torch.Tensor) -> torch.Tensor:
    """``value`` if its dtype is real floating point; else a TypeError naming ``where``."""
    if not value.is_floating_point():
        raise TypeError(f"{where} has dtype {value.dtype}; it must be floating point")
    return value


def parameter_tensor(where: str, value: Any) -> torch.Tensor:
    """``value`` if it is a finite floating-point tensor of a dtype numpy has; else a TypeError or
    ValueError naming ``where``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is a {type(value).__name__}, not a torch.Tensor")
    if value.layout != torch.strided:
        raise TypeError(f"{where} is a {value.layout} tensor; parameters must be dense: pass tensor.to_dense()")
    floating_point(where, value)
    recordable(where, value)
    if not torch.isfinite(value).all():
        raise ValueError(f"{where} holds non-finite values")
    return value


def has_elements(where: str, named: dict[str, torch.Tensor]) -> None:
    """A ValueError naming ``where`` and the shapes when no tensor of ``named`` has an element (P = 0)."""
    if all(value.numel() == 0 for value in named.values()):
        shapes = {name: tuple(value.shape) for name, value in named.items()}
        raise ValueError(f"{where} has no elements (shapes {shapes}): there is no parameter to sample or fit")


def autograd_allowed(where: str) -> None:
    """A RuntimeError naming ``where`` under ``torch.inference_mode()``, in which nothing can be
    differentiated (``torch.no_grad()`` is fine: the package turns gradients back on where it needs them)."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{where} differentiates log_posterior, which torch.inference_mode() forbids; call it outside "
            "inference mode (under torch.no_grad() it works)"
        )


@contextlib.contextmanager
def output_folder(path: Path) -> Iterator[Path]:
    """Make the folder ``path`` (and its parents) for a command's output; if the block raises (a usage error
    found by the work itself) while the folder, made here, is still empty, remove it: no empty folder is left."""
    made = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if made and path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        raise


_PACKAGE_DIRECTORY = Path(__file__).resolve().parent


def warn_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` attributed to the nearest caller outside sgmcmc, however deep in the package it is
    raised (Python 3.12's ``skip_file_prefixes``, for 3.11 too)."""
    frame, stacklevel = sys._getframe(0), 1
    while frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(_PACKAGE_DIRECTORY):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, category, stacklevel=stacklevel)
