"""Exact permutation tests on compare rows: p-values worked out by hand."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from nas.evaluate import significance
from nas.evaluate.significance import (
    detectable_difference,
    format_significance,
    permutation_p,
    significance_rows,
    smallest_p,
)


def test_fully_separated_three_against_three_is_p_one_tenth():
    # 20 splits of 6 values into 3 + 3; only the observed one and its mirror are as extreme
    assert permutation_p([0.91, 0.92, 0.93], [0.81, 0.82, 0.83]) == pytest.approx(0.1)
    assert smallest_p(3, 3) == pytest.approx(0.1)


def test_hand_counted_small_case():
    # pooled [1, 2, 3], a takes 2: {1,2} -> |1.5-3| = 1.5, {1,3} -> 0, {2,3} -> 1.5
    assert permutation_p([1.0, 2.0], [3.0]) == pytest.approx(2 / 3)


def test_no_difference_gives_p_one():
    assert permutation_p([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]) == 1.0


def test_unequal_sizes_reach_one_over_the_split_count():
    top, bottom = [10.0, 11.0, 12.0], [0.0, 1.0, 2.0, 3.0, 4.0]
    assert permutation_p(top, bottom) == pytest.approx(1 / math.comb(8, 3))
    assert smallest_p(3, 5) == pytest.approx(1 / 56)


def test_sampled_path_agrees_with_exact(monkeypatch):
    a, b = [0.1, 0.4, 0.35, 0.8], [0.2, 0.9, 0.7, 0.75, 0.6]
    exact = permutation_p(a, b)
    monkeypatch.setattr(significance, "EXACT_LIMIT", 0)
    assert permutation_p(a, b, samples=20_000) == pytest.approx(exact, abs=0.02)


def _row(name, accs, group=""):
    return {"name": name, "acc_per_seed": " ".join(f"{a:.4f}" for a in accs), "group": group}


def test_rows_test_entries_against_darts_v2_and_groups_against_each_other():
    rows = [
        _row("s_0", [0.80, 0.81, 0.82], "s"), _row("s_1", [0.84, 0.85, 0.86], "s"),
        {"name": "s (n=2)", "acc_per_seed": "", "group": "s"},  # summary rows are skipped
        _row("DARTS_V2", [0.70, 0.71, 0.72]),
        _row("r_0", [0.60, 0.61, 0.62], "r"), _row("r_1", [0.64, 0.65, 0.66], "r"),
        _row("r_2", [0.68, 0.69, 0.70], "r"),
    ]
    tests = significance_rows(rows)
    assert [(t["entry"], t["against"]) for t in tests] == [
        ("s_0", "DARTS_V2"), ("s_1", "DARTS_V2"), ("r_0", "DARTS_V2"), ("r_1", "DARTS_V2"),
        ("r_2", "DARTS_V2"), ("s (n=2)", "r (n=3)")]
    s0 = tests[0]
    assert s0["diff_pp"] == pytest.approx(10.0) and s0["p"] == pytest.approx(0.1)
    groups = tests[-1]
    assert groups["unit"].startswith("genotypes")
    assert groups["diff_pp"] == pytest.approx(100 * (0.83 - 0.65))
    assert groups["p"] == pytest.approx(1 / math.comb(5, 2))  # 10 splits, no mirror tie
    text = format_significance(tests)
    assert "| s_0 | DARTS_V2 | training seeds | 3 vs 3 | +10.00 | 0.100 | 0.100 | — |" in text
    # 2 vs 3 members: smallest p 0.1 > 0.05, so no difference is detectable at all
    assert math.isinf(groups["detectable_pp"]) and "| 0.100 | none |" in text
    assert "6 tests" in text


def test_unknown_reference_names_the_field():
    with pytest.raises(ValueError, match="reference: no entry named 'X'"):
        significance_rows([_row("a", [0.1, 0.2])], reference="X")


def test_vectorized_p_equals_the_exact_test():
    rng = random.Random(3)
    a = [[rng.gauss(0, 1) for _ in range(3)] for _ in range(5)]
    b = [[rng.gauss(0.5, 1) for _ in range(4)] for _ in range(5)]
    got = significance._permutation_ps(np.array(a), np.array(b),
                                       significance._split_matrix(3, 4))
    assert got == pytest.approx([permutation_p(x, y) for x, y in zip(a, b)])


def test_detectable_difference_has_the_power_it_claims():
    """At the returned difference, fresh experiments (other draws, the scalar exact test)
    reach p <= 0.05 in about 80 % of cases; at half of it, far less often."""
    delta = detectable_difference(3, 8, sd=1.0)
    rng = random.Random(11)

    def power(d: float, n: int = 400) -> float:
        hits = 0
        for _ in range(n):
            a = [rng.gauss(d, 1) for _ in range(3)]
            b = [rng.gauss(0, 1) for _ in range(8)]
            hits += permutation_p(a, b) <= 0.05
        return hits / n

    assert 0.72 <= power(delta) <= 0.88
    assert power(delta / 2) < 0.45


def test_detectable_difference_scales_with_sd_and_nears_the_normal_formula():
    assert detectable_difference(3, 8, 2.0) == pytest.approx(2 * detectable_difference(3, 8, 1.0))
    # many values per side: the permutation test behaves like the z-test,
    # (z_0.975 + z_0.8) * sd * sqrt(1/n_a + 1/n_b)
    normal = (1.959964 + 0.841621) * math.sqrt(2 / 20)
    assert detectable_difference(20, 20, 1.0) == pytest.approx(normal, rel=0.1)


def test_detectable_difference_is_none_when_no_p_can_reach_alpha():
    assert math.isinf(detectable_difference(3, 3, 1.0))  # smallest p 0.1
    assert math.isnan(detectable_difference(3, 8, 0.0))  # no spread measured
    assert detectable_difference(3, 8, 1.0) < detectable_difference(3, 4, 1.0)


def test_one_training_seed_tests_groups_only():
    rows = [_row("DARTS_V2", [0.70]), _row("s_0", [0.80], "s"), _row("s_1", [0.82], "s"),
            _row("s_2", [0.81], "s"), _row("r_0", [0.60], "r"), _row("r_1", [0.62], "r"),
            _row("r_2", [0.64], "r"), _row("r_3", [0.66], "r")]
    [test] = significance_rows(rows)
    assert (test["entry"], test["against"], test["n"], test["n_against"]) == (
        "s (n=3)", "r (n=4)", 3, 4)
    assert test["p"] == pytest.approx(1 / math.comb(7, 3))  # fully separated, 35 splits
    assert math.isfinite(test["detectable_pp"]) and test["detectable_pp"] > 0
