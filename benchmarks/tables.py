"""The markdown table every benchmark prints and writes to results/."""

from __future__ import annotations

from collections.abc import Callable


def markdown_table(rows: list[dict[str, object]], number_format: Callable[[str, float], str] | None = None) -> str:
    """Rows of equal keys as a markdown table; floats as ``number_format(column, value)``, default 4 digits."""
    number_format = number_format or (lambda column, value: f"{value:.4g}")
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [number_format(key, value) if isinstance(value, float) else str(value) for key, value in row.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
