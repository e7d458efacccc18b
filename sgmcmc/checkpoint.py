"""Checkpoints of a run: written atomically, checked against the run that resumes them.

A checkpoint holds everything the next step depends on (the sampler state, every chain's
generator state, every chain's position in its minibatch stream, the divergence record) and
the trace so far (its draws, or their count when they stream to a file), so a resumed run
continues bit for bit like one that was never stopped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "check_same_run"]

FORMAT_VERSION = 1


def save_checkpoint(path: Path, contents: dict[str, Any]) -> None:
    """Write ``contents`` to ``path`` atomically: to a temporary file, then renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"format_version": FORMAT_VERSION, **contents}, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    """The contents of a checkpoint written by :func:`save_checkpoint`, tensors on ``device``."""
    contents = torch.load(path, map_location=device, weights_only=True)
    if contents.get("format_version") != FORMAT_VERSION:
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
