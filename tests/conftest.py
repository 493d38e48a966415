"""Shared fixtures: small genotypes and a single-thread torch for stable CPU timing."""

from __future__ import annotations

import pytest
import torch

from nas.genotype import Genotype

DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
    "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
    "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), "
    "('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)

# Every paper operator appears at least once, in both cell types and at stride 2.
ALL_PAPER_OPS = Genotype(
    normal=[
        ("c2sp_conv_2x2", 0), ("osep_conv_3x3", 1),
        ("bdsc_conv_3x3", 0), ("ssl_conv", 2),
        ("do_conv_3x3", 1), ("do_sep_conv_3x3", 3),
        ("c4sp_conv_4x4", 2), ("osep_conv_5x5", 4),
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        ("ssl_conv", 0), ("bdsc_conv_3x3", 1),
        ("do_conv_3x3", 0), ("c2sp_conv_2x2", 2),
        ("osep_conv_3x3", 1), ("do_sep_conv_3x3", 3),
        ("skip_connect", 0), ("sep_conv_3x3", 4),
    ],
    reduce_concat=[2, 3, 4, 5],
)


@pytest.fixture(scope="session")
def darts_v2() -> Genotype:
    return Genotype.parse(DARTS_V2_TEXT)


@pytest.fixture(scope="session")
def all_paper_ops() -> Genotype:
    return ALL_PAPER_OPS


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors run faster on one thread, and CI has only two cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
