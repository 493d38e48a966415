"""The compare table's one mean ± std format: a single seed shows just its mean."""

from __future__ import annotations

import pytest

from nas.evaluate.compare import group_summary
from nas.evaluate.table import format_table, mean_std, table_cells, table_header


def _row(seeds: int, accs_std: float = 0.0, **extra) -> dict:
    return {"name": "a", "genotype": "DARTS_V2", "channels": 8, "seeds": seeds,
            "acc_mean": 0.8512, "acc_std": accs_std, "params_M": 0.1, "macs_M": 1.0,
            "deploy_bytes": 2048, "latency_ms": 1.5, "latency_noisy": False,
            "train_images_per_s": 10.0, "peak_train_mem_MB": 100.0, **extra}


@pytest.mark.parametrize("n", [0, 1])
def test_mean_std_without_a_spread_is_the_mean_alone(n):
    assert mean_std(85.12, 0.0, n) == "85.12"
    assert mean_std(85.12, float("nan"), 2) == "85.12"  # std undefined, whatever n says


def test_mean_std_with_a_spread():
    assert mean_std(85.123, 1.5, 3) == "85.12 ± 1.50"
    assert mean_std(85.123, 0.0, 2) == "85.12 ± 0.00"  # two equal seeds: a real zero
    assert mean_std(0.5, 0.25, 2, digits=1) == "0.5 ± 0.2"


def test_single_seed_rows_and_one_member_groups_print_no_zero_spread():
    single = format_table([_row(1)], "note")
    [row] = [line for line in single.splitlines() if line.startswith("| a |")]
    assert row.startswith("| a | 8 | 85.12 (n=1) |") and "±" not in row
    several = format_table([_row(3, 0.012)], "note")
    assert "| a | 8 | 85.12 ± 1.20 (n=3) |" in several
    lone = group_summary("g", [{**_row(3, 0.012), "group": "g"}])
    assert lone["members"] == 1
    assert table_cells(lone)[2] == "85.12 (n=1 genotypes)"


def test_cells_of_a_row_read_from_csv_and_missing_values():
    """The report formats compare.csv rows: values as written, empty ones left out."""
    assert len(table_cells(_row(2, 0.01))) == len(table_header())
    sparse = table_cells({"name": "x", "channels": None, "acc_mean": None})
    assert sparse == ["x"] + [""] * (len(table_header()) - 1)
    csv_summary = {**_row(6, 0.01), "members": 3}
    assert table_cells(csv_summary)[2] == "85.12 ± 1.00 (n=3 genotypes)"
    assert table_cells({**_row(6, 0.01), "members": ""})[2] == "85.12 ± 1.00 (n=6)"
