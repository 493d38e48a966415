"""Is a difference in a ``nas compare`` table larger than the training-seed noise?

A mean ± std hides how few runs stand behind it. For each entry against a reference (each
training seed's accuracy) and for each pair of groups (each member's mean accuracy), this
module runs an exact two-sided permutation test on the difference of means: no normality
assumption, and it says plainly when the counts are too small for any p below 0.05 (with
3 seeds against 3 the smallest possible p is 0.1). For each pair of groups it also states
the smallest true difference that test would find four times in five (80 % power) at the
groups' measured spread, so a "not significant" reads as "smaller than X", not as "none".
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

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


POWER_SPLITS = 5_000  # splits enumerated per simulated experiment; above this, sampled


def _split_matrix(n_a: int, n_b: int) -> np.ndarray:
    """0/1 rows, one per relabelling of ``n_a + n_b`` values (``n_a`` ones): every split
    when there are at most :data:`POWER_SPLITS`, else that many drawn with a fixed seed."""
    n = n_a + n_b
    if math.comb(n, n_a) <= POWER_SPLITS:
        idx = list(itertools.combinations(range(n), n_a))
    else:
        rng = random.Random(0)
        idx = [tuple(rng.sample(range(n), n_a)) for _ in range(POWER_SPLITS)]
    out = np.zeros((len(idx), n))
    for row, cols in enumerate(idx):
        out[row, list(cols)] = 1.0
    return out


def _permutation_ps(a: np.ndarray, b: np.ndarray, splits: np.ndarray) -> np.ndarray:
    """:func:`permutation_p` for each row of ``a`` (experiments x n_a) against ``b``."""
    n_a, n_b = a.shape[1], b.shape[1]
    pooled = np.concatenate([a, b], axis=1)
    total = pooled.sum(axis=1, keepdims=True)
    observed = np.abs(a.mean(axis=1) - b.mean(axis=1))[:, None]
    sums = pooled @ splits.T
    stats = np.abs(sums / n_a - (total - sums) / n_b)
    tol = 1e-12 * np.maximum(1.0, observed)
    return (stats >= observed - tol).mean(axis=1)


def detectable_difference(n_a: int, n_b: int, sd: float, alpha: float = 0.05,
                          power: float = 0.8, sims: int = 1000, seed: int = 0) -> float:
    """The smallest true difference of means the exact test detects (p <= ``alpha``) in a
    share ``power`` of experiments, when each value is normal with spread ``sd``.

    Simulated: ``sims`` experiments of ``n_a`` against ``n_b`` values (the same draws for
    every difference tried, so power rises monotonically in it), bisected to 0.1 % of
    ``sd``. Returns ``inf`` when no difference can reach ``alpha`` with these counts (3
    against 3: the smallest possible p is 0.1) and ``nan`` for a missing or zero spread.
    """
    if n_a < 1 or n_b < 1:
        raise ValueError("detectable_difference needs at least one value on each side")
    if smallest_p(n_a, n_b) > alpha:
        return math.inf
    if not math.isfinite(sd) or sd <= 0:
        return math.nan
    gen = np.random.default_rng(seed)
    za, zb = gen.standard_normal((sims, n_a)), gen.standard_normal((sims, n_b))
    splits = _split_matrix(n_a, n_b)

    def reached(delta: float) -> bool:
        return float((_permutation_ps(za + delta, zb, splits) <= alpha).mean()) >= power

    lo, hi = 0.0, 1.0
    while not reached(hi):
        lo, hi = hi, 2 * hi
        if hi > 1e3:  # power capped below target by the discrete test (sampled splits)
            return math.inf
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reached(mid) else (mid, hi)
    return hi * sd


def pooled_sd(a: Sequence[float], b: Sequence[float]) -> float:
    """The two samples' pooled standard deviation (``nan`` with fewer than 3 values)."""
    dof = len(a) + len(b) - 2
    if dof < 1:
        return math.nan
    ss = sum((x - statistics.fmean(a)) ** 2 for x in a) + \
        sum((x - statistics.fmean(b)) ** 2 for x in b)
    return math.sqrt(ss / dof)


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
        if len(mine) > 1 or len(ref) > 1:  # one run against one has nothing to test
            out.append(_test(r["name"], reference, mine, ref, "training seeds"))
    groups: dict[str, list[float]] = {}
    for r in singles:
        if r.get("group"):
            groups.setdefault(r["group"], []).append(statistics.fmean(_seeds(r)))
    for g, h in itertools.combinations(groups, 2):
        test = _test(f"{g} (n={len(groups[g])})", f"{h} (n={len(groups[h])})",
                     groups[g], groups[h], "genotypes (member means)")
        test["detectable_pp"] = 100 * detectable_difference(
            len(groups[g]), len(groups[h]), pooled_sd(groups[g], groups[h]))
        out.append(test)
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
             " smallest possible p | Δ detectable, 80 % power (pp) |",
             "|---|---|---|---|---|---|---|---|"]
    for t in tests:
        lines.append(
            f"| {t['entry']} | {t['against']} | {t['unit']} | {t['n']} vs {t['n_against']} | "
            f"{t['diff_pp']:+.2f} | {t['p']:.3f} | {t['smallest_p']:.3f} | "
            f"{_detectable_text(t.get('detectable_pp'))} |")
    lines += ["", f"{len(tests)} tests: at p < 0.05 about {0.05 * len(tests):.1f} would pass "
              "by chance alone when nothing differs. No p can fall below its 'smallest "
              "possible p' (3 training seeds against 3: 0.1), whatever the difference."]
    if any("detectable_pp" in t for t in tests):
        lines.append("Δ detectable: the smallest true difference between two groups that "
                     "their test would find at p ≤ 0.05 in 80 % of experiments like this "
                     "one, if members spread as measured here (pooled std of the member "
                     "means, normal, simulated); '—' for tests over training seeds, 'none' "
                     "where the counts allow no p ≤ 0.05.")
    if tests and all(t["smallest_p"] >= 0.05 for t in tests):
        lines.append("Here every test has a smallest possible p of at least 0.05: no "
                     "difference in this table can be called significant at 0.05; more "
                     "seeds or genotypes are needed for that.")
    lines.append("")
    return "\n".join(lines)


def _detectable_text(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "none"
    return "n/a" if math.isnan(value) else f"{value:.2f}"
