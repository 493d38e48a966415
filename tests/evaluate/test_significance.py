"""Exact permutation tests on compare rows: p-values worked out by hand."""

from __future__ import annotations

import math

import pytest

from nas.evaluate import significance
from nas.evaluate.significance import (
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
    assert "| s_0 | DARTS_V2 | training seeds | 3 vs 3 | +10.00 | 0.100 | 0.100 |" in text
    assert "6 tests" in text


def test_unknown_reference_names_the_field():
    with pytest.raises(ValueError, match="reference: no entry named 'X'"):
        significance_rows([_row("a", [0.1, 0.2])], reference="X")
