"""Checkpoints of a run: written atomically, checked against the run that resumes them.

A checkpoint holds everything the next step depends on (the sampler state, every chain's
generator state, every chain's position in its minibatch stream, the divergence record) and
the trace so far (its draws, or their count when they stream to a file), so a resumed run
continues bit for bit like one that was never stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["write_atomically", "save_checkpoint", "load_checkpoint", "check_same_run"]

FORMAT_VERSION = 5
"""2: the data's fingerprint has Σ|x| too, and the checkpoint keeps a probe of the model. 3: the
settings hold each functional's shape and dtype, not only its name. 4: they hold the kind of data
(none, rows or pre-made batches), and the trace file as an absolute path. 5: the probe holds the
functionals' values, and the data's state the generators' states at the epoch's start, not its shuffles."""


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file over ``path``.

    Readers see either no file (or the previous one) or the complete new one, never a partial
    file; if ``write`` raises, the temporary file is removed. The temporary file sits beside
    ``path`` (same file system, so the rename is atomic) and keeps its suffix, so writers that
    pick a format from it still work. In a run across processes, call it on rank 0 only.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: Path, contents: dict[str, Any]) -> None:
    """Write ``contents`` to ``path`` atomically (:func:`write_atomically`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda temporary: torch.save({"format_version": FORMAT_VERSION, **contents}, temporary))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The contents of a checkpoint written by :func:`save_checkpoint`, tensors on the CPU."""
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as error:  # not a torch.save file: pickle's, zipfile's and torch's errors name no file
        raise ValueError(f"{path} is not an sgmcmc checkpoint (it cannot be read: {error!r})") from error
    if not isinstance(contents, dict) or contents.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not an sgmcmc checkpoint of format {FORMAT_VERSION}")
    return contents


def check_same_run(saved: dict[str, Any], current: dict[str, Any], path: Path) -> None:
    """Raise if the checkpoint at ``path`` was written by a run configured differently."""
    differences = [
        f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}"
        for key in sorted(saved.keys() | current.keys())
        if saved.get(key) != current.get(key)
    ]
    if differences:
        raise ValueError(
            f"checkpoint {path} belongs to a different run; delete it or restore the settings ("
            + "; ".join(differences)
            + ")"
        )
