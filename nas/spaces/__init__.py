"""Search spaces: which candidate operations a cell may use, and the cell topology.

A space is a frozen :class:`SearchSpace`: an op list (validated against ``nas.ops.OPS``)
plus the DARTS cell shape (``steps`` intermediate nodes, ``inputs_per_node`` kept inputs
per node at derivation, the last ``multiplier`` nodes concatenated).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import yaml

from nas.errors import ConfigError
from nas.genotype import Genotype

__all__ = [
    "SearchSpace",
    "DARTS_PRIMITIVES",
    "PAPER_OPERATORS",
    "NAMED_SPACES",
    "get_space",
    "list_spaces",
    "random_genotype",
]

DARTS_PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

PAPER_OPERATORS: tuple[str, ...] = (
    "c2sp_conv_2x2",
    "osep_conv_3x3",
    "bdsc_conv_3x3",
    "ssl_conv",
    "do_conv_3x3",
)

NAMED_SPACES: dict[str, tuple[str, ...]] = {
    "darts": DARTS_PRIMITIVES,
    "paper": ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", *PAPER_OPERATORS),
    "full": DARTS_PRIMITIVES + PAPER_OPERATORS,
}


@dataclass(frozen=True)
class SearchSpace:
    """Candidate ops and cell topology of a DARTS-style search."""

    name: str
    ops: tuple[str, ...]
    steps: int = 4
    inputs_per_node: int = 2
    multiplier: int = 4

    def __post_init__(self) -> None:
        from nas.ops import OPS  # late: spaces are importable without building ops

        if not self.ops:
            raise ConfigError(f"space {self.name!r}: empty op list")
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ConfigError(
                f"space {self.name!r}: unknown op {unknown[0]!r} (known: {', '.join(sorted(OPS))})"
            )
        if len(set(self.ops)) != len(self.ops):
            raise ConfigError(f"space {self.name!r}: duplicate ops in {list(self.ops)}")
        if [op for op in self.ops if op != "none"] == []:
            raise ConfigError(f"space {self.name!r}: needs at least one op besides 'none'")
        if self.steps < 1:
            raise ConfigError(f"space.steps must be >= 1, got {self.steps}")
        if self.inputs_per_node != 2:  # the evaluation cell sums exactly two branches
            raise ConfigError(f"space.inputs_per_node must be 2, got {self.inputs_per_node}")
        if not 1 <= self.multiplier <= self.steps:
            raise ConfigError(
                f"space.multiplier must be in 1..steps ({self.steps}), got {self.multiplier}"
            )

    @property
    def num_edges(self) -> int:
        """Edges of the supernet cell: node i sees the two cell inputs and i earlier nodes."""
        return sum(2 + i for i in range(self.steps))

    @property
    def concat(self) -> tuple[int, ...]:
        return tuple(range(2 + self.steps - self.multiplier, 2 + self.steps))


def list_spaces() -> list[str]:
    return sorted(NAMED_SPACES)


def get_space(
    name: str = "full",
    ops: list[str] | tuple[str, ...] | None = None,
    steps: int = 4,
    inputs_per_node: int = 2,
    multiplier: int = 4,
) -> SearchSpace:
    """A named space, a custom ``ops`` list, or a YAML file ``{ops: [...], steps: ...}``."""
    if ops is not None:
        return SearchSpace(name, tuple(ops), steps, inputs_per_node, multiplier)
    if name in NAMED_SPACES:
        return SearchSpace(name, NAMED_SPACES[name], steps, inputs_per_node, multiplier)
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or "ops" not in data:
            raise ConfigError(f"{path}: a space file needs an 'ops' list")
        unknown = set(data) - {"ops", "steps", "inputs_per_node", "multiplier"}
        if unknown:
            raise ConfigError(f"{path}: unknown key {sorted(unknown)[0]!r}")
        return SearchSpace(
            path.stem,
            tuple(data["ops"]),
            int(data.get("steps", steps)),
            int(data.get("inputs_per_node", inputs_per_node)),
            int(data.get("multiplier", multiplier)),
        )
    raise ConfigError(
        f"unknown space {name!r}; known: {', '.join(list_spaces())}, or a YAML file, or space.ops"
    )


def random_genotype(space: SearchSpace, rng: random.Random) -> Genotype:
    """A uniformly drawn valid genotype of ``space`` (a random-architecture baseline).

    It obeys the rules a derived genotype obeys: per node two distinct inputs, each edge
    with an op of the space other than ``none``. Draws come only from ``rng``, so a seeded
    ``random.Random`` gives the same genotypes on every machine.
    """
    ops = [op for op in space.ops if op != "none"]
    cells = []
    for _ in range(2):
        edges = []
        for node in range(space.steps):
            first, second = sorted(rng.sample(range(node + 2), 2))
            edges += [(rng.choice(ops), first), (rng.choice(ops), second)]
        cells.append(edges)
    return Genotype(cells[0], space.concat, cells[1], space.concat).validate(steps=space.steps)
