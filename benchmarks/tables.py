"""What the benchmarks share: the markdown table each prints and writes to results/, timing, one core."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

Result = TypeVar("Result")


def markdown_table(rows: list[dict[str, object]], number_format: Callable[[str, float], str] | None = None) -> str:
    """Rows of equal keys as a markdown table; floats as ``number_format(column, value)``, default 4 digits."""
    number_format = number_format or (lambda column, value: f"{value:.4g}")
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [number_format(key, value) if isinstance(value, float) else str(value) for key, value in row.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def interleaved_rounds(
    configurations: Mapping[Hashable, Callable[[int], Result]],
    num_steps: int,
    warmup_steps: int,
    max_rounds: int,
    budget_s: float,
) -> tuple[dict[Hashable, list[Result]], dict[Hashable, float]]:
    """Each configuration's results of up to ``max_rounds`` rounds, ``configuration(num_steps)`` once per
    round in turn, after one ``configuration(warmup_steps)`` each; no new round after ``budget_s`` seconds.
    Also each configuration's warm-up seconds (its first call, which pays any compilation).

    Interleaving exposes every configuration to the same load on a shared machine, and the
    caller's minimum over rounds is the least disturbed measurement.
    """
    warmup_seconds = {}
    for key, configuration in configurations.items():
        started = time.perf_counter()
        configuration(warmup_steps)
        warmup_seconds[key] = time.perf_counter() - started
    results: dict[Hashable, list[Result]] = {key: [] for key in configurations}
    deadline = time.perf_counter() + budget_s
    for _ in range(max_rounds):
        for key, configuration in configurations.items():
            results[key].append(configuration(num_steps))
        if time.perf_counter() > deadline:
            break
    return results, warmup_seconds


def pin_to_one_core() -> str:
    """Pin this process to one of its CPUs (Linux) and say which: XLA's runtime starts helper threads
    even with single-threaded flags, so a thread count alone does not keep a JAX peer on one core."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    return f"pinned to CPU {sorted(os.sched_getaffinity(0))}"
