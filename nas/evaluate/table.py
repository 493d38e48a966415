"""The ``nas compare`` table as people read it: its columns and the one mean ± std format.

``compare.md`` (:func:`nas.evaluate.compare.run_compare`) and the page of ``nas report``
(from ``compare.csv``) format their rows here, so a number reads the same in both. No
torch and no matplotlib: ``nas report`` imports this before torch loads.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["mean_std", "is_summary", "table_header", "table_cells", "format_table"]


def mean_std(mean: float, std: float | None, n: int, digits: int = 2) -> str:
    """``mean ± std``, or just ``mean`` when fewer than two values stand behind it: one
    value has no spread, and "± 0.00" would claim a spread of zero."""
    if n < 2 or std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def is_summary(row: dict[str, Any]) -> bool:
    """A group's summary row (:func:`nas.evaluate.compare.group_summary`): it counts
    ``members``; in ``compare.csv`` the other rows leave that column empty."""
    return row.get("members") not in (None, "")


def _acc(r: dict[str, Any]) -> str:
    if r.get("acc_mean") is None:
        return ""
    count = int(r["members"] if is_summary(r) else r.get("seeds") or 0)
    n = f"n={count} genotypes" if is_summary(r) else f"n={count}"
    std = r.get("acc_std")
    return f"{mean_std(100 * r['acc_mean'], None if std is None else 100 * std, count)} ({n})"


def _kib(r: dict[str, Any]) -> str:
    return f"{r['deploy_bytes'] / 1024:.1f}"


def _latency(r: dict[str, Any]) -> str:
    return f"{r['latency_ms']:.2f}" + (" (busy CPU)" if r.get("latency_noisy") else "")


#: (row key, column title, format string or a function of the whole row)
_COLUMNS: list[tuple[str, str, Any]] = [
    ("name", "genotype", "{}"),
    ("channels", "C", "{}"),
    ("acc_mean", "test acc (mean ± std)", _acc),
    ("params_M", "params (M)", "{:.3f}"),
    ("macs_M", "MACs (M)", "{:.1f}"),
    ("deploy_bytes", "deploy KiB", _kib),
    ("latency_ms", "latency (ms)", _latency),
    ("train_images_per_s", "train img/s", "{:.0f}"),
    ("peak_train_mem_MB", "peak train mem (MB)", "{:.0f}"),
]


def table_header() -> list[str]:
    return [title for _, title, _ in _COLUMNS]


def table_cells(row: dict[str, Any]) -> list[str]:
    """One row's cells; a value the row lacks (``None``) is an empty cell."""
    cells = []
    for key, _, fmt in _COLUMNS:
        if row.get(key) is None:
            cells.append("")
        else:
            cells.append(fmt(row) if callable(fmt) else fmt.format(row[key]))
    return cells


def format_table(rows: list[dict[str, Any]], latency_note: str) -> str:
    """Markdown table, one row per compared genotype and one per group (its means)."""
    head = table_header()
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    if any(r.get("latency_noisy") for r in rows):
        latency_note += ("\n(busy CPU): latency measured while the CPU was oversubscribed; "
                         "re-measure on an idle machine (`nas deploy RUN`)")
    if any(is_summary(r) for r in rows):
        latency_note += ("\nGroup rows (`NAME (n=K)`) are means over the group's members: "
                         "accuracy is the mean ± std of the members' mean accuracies, every "
                         "other column the members' mean.")
    return "\n".join(lines) + f"\n\n{latency_note}\n"
