"""Is a difference in a ``nas compare`` table larger than the training-seed noise?

A mean ± std hides how few runs stand behind it. For each entry against a reference (each
training seed's accuracy) and for each pair of groups (each member's mean accuracy), this
module runs an exact two-sided permutation test on the difference of means: no normality
assumption, and it says plainly when the counts are too small for any p below 0.05 (with
3 seeds against 3 the smallest possible p is 0.1).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

EXACT_LIMIT = 200_000  # splits enumerated exactly; above this, sampled (fixed seed)


def permutation_p(a: Sequence[float], b: Sequence[float], samples: int = 100_000) -> float:
    """Two-sided p of ``|mean(a) - mean(b)|`` under random relabelling of ``a + b``."""
    if len(a) < 1 or len(b) < 1:
        raise ValueError("permutation_p needs at least one value on each side")
    pooled = [*a, *b]
    total, n = sum(pooled), len(a)
    observed = abs(statistics.fmean(a) - statistics.fmean(b))
    tol = 1e-12 * max(1.0, observed)

    def stat(idx: Sequence[int]) -> float:
        s = sum(pooled[i] for i in idx)
        return abs(s / n - (total - s) / (len(pooled) - n))

    if math.comb(len(pooled), n) <= EXACT_LIMIT:
        splits = list(itertools.combinations(range(len(pooled)), n))
        return sum(stat(s) >= observed - tol for s in splits) / len(splits)
    rng = random.Random(0)
    hits = sum(stat(rng.sample(range(len(pooled)), n)) >= observed - tol
               for _ in range(samples))
    return (hits + 1) / (samples + 1)


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p the exact test can return for these counts: the most
    extreme split alone, or with its mirror image when both sides are the same size."""
    return (2 if n_a == n_b else 1) / math.comb(n_a + n_b, n_a)


def _seeds(row: dict[str, Any]) -> list[float]:
    text = str(row.get("acc_per_seed") or "")
    return [float(v) for v in text.split()]


def significance_rows(rows: Sequence[dict[str, Any]],
                      reference: str | None = None) -> list[dict[str, Any]]:
    """Tests for the rows of :func:`nas.evaluate.compare.run_compare` (or its CSV).

    Every individual entry is tested against ``reference`` (default: ``DARTS_V2`` when
    present, else the first entry) over training seeds; every pair of groups over their
    members' mean accuracies.
    """
    singles = [r for r in rows if _seeds(r)]
    if not singles:
        return []
    names = [r["name"] for r in singles]
    if reference is None:
        reference = "DARTS_V2" if "DARTS_V2" in names else names[0]
    if reference not in names:
        raise ValueError(f"reference: no entry named {reference!r} (have {', '.join(names)})")
    ref = _seeds(singles[names.index(reference)])
    out = []
    for r in singles:
        if r["name"] == reference:
            continue
        mine = _seeds(r)
        out.append(_test(r["name"], reference, mine, ref, "training seeds"))
    groups: dict[str, list[float]] = {}
    for r in singles:
        if r.get("group"):
            groups.setdefault(r["group"], []).append(statistics.fmean(_seeds(r)))
    for g, h in itertools.combinations(groups, 2):
        out.append(_test(f"{g} (n={len(groups[g])})", f"{h} (n={len(groups[h])})",
                         groups[g], groups[h], "genotypes (member means)"))
    return out


def _test(name: str, against: str, a: list[float], b: list[float], unit: str
          ) -> dict[str, Any]:
    return {
        "entry": name, "against": against, "unit": unit, "n": len(a), "n_against": len(b),
        "diff_pp": 100 * (statistics.fmean(a) - statistics.fmean(b)),
        "p": permutation_p(a, b) if len(a) > 1 or len(b) > 1 else float("nan"),
        "smallest_p": smallest_p(len(a), len(b)),
    }


def format_significance(tests: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per test, then how to read it."""
    lines = ["| entry | against | over | n vs n | Δ accuracy (pp) | p (exact, two-sided) |"
             " smallest possible p |", "|---|---|---|---|---|---|---|"]
    for t in tests:
        lines.append(
            f"| {t['entry']} | {t['against']} | {t['unit']} | {t['n']} vs {t['n_against']} | "
            f"{t['diff_pp']:+.2f} | {t['p']:.3f} | {t['smallest_p']:.3f} |")
    lines += ["", f"{len(tests)} tests: at p < 0.05 about {0.05 * len(tests):.1f} would pass "
              "by chance alone when nothing differs. No p can fall below its 'smallest "
              "possible p' (3 training seeds against 3: 0.1), whatever the difference."]
    if tests and all(t["smallest_p"] >= 0.05 for t in tests):
        lines.append("Here every test has a smallest possible p of at least 0.05: no "
                     "difference in this table can be called significant at 0.05; more "
                     "seeds or genotypes are needed for that.")
    lines.append("")
    return "\n".join(lines)
