"""Published genotypes (DARTS, PC-DARTS, P-DARTS) and op transplants (o-DARTS & co).

A transplant swaps ops in a genotype, e.g. every ``sep_conv_*`` for ``osep_conv_*``: the
osep paper's o-DARTS is DARTS_V2 transplanted and trained at 42 initial channels.
"""

from __future__ import annotations

from pathlib import Path

from nas.errors import ConfigError
from nas.genotype import Genotype, load_genotype

__all__ = [
    "BASELINES",
    "BASELINE_CHANNELS",
    "PUBLISHED",
    "TRANSPLANTS",
    "transplant",
    "resolve_genotype",
]

_DARTS_V1 = Genotype(
    normal=[("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    reduce_concat=[2, 3, 4, 5],
)
_DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)
_PC_DARTS = Genotype(
    normal=[("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
            ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
            ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    reduce_concat=[2, 3, 4, 5],
)
_P_DARTS = Genotype(
    normal=[("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
            ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
    reduce_concat=[2, 3, 4, 5],
)

#: Op substitutions by name. ``osep`` keeps ``dil_conv_*`` (the registry has no dilated osep).
TRANSPLANTS: dict[str, dict[str, str]] = {
    "osep": {"sep_conv_3x3": "osep_conv_3x3", "sep_conv_5x5": "osep_conv_5x5"},
    "do": {"sep_conv_3x3": "do_sep_conv_3x3"},
    "c2sp": {"sep_conv_3x3": "c2sp_conv_2x2"},
}


def transplant(genotype: Genotype, mapping: str | dict[str, str]) -> Genotype:
    """Swap ops: ``mapping`` is a dict or a name in :data:`TRANSPLANTS`."""
    if isinstance(mapping, str):
        if mapping not in TRANSPLANTS:
            raise ConfigError(
                f"unknown transplant {mapping!r}; known: {', '.join(sorted(TRANSPLANTS))}"
            )
        mapping = TRANSPLANTS[mapping]
    return genotype.replace_ops(mapping).validate()


BASELINES: dict[str, Genotype] = {
    "DARTS_V1": _DARTS_V1,
    "DARTS_V2": _DARTS_V2,
    "PC_DARTS": _PC_DARTS,
    "P_DARTS": _P_DARTS,
    "O_DARTS": transplant(_DARTS_V2, "osep"),
    "DO_DARTS": transplant(_DARTS_V2, "do"),
    "C2SP_DARTS": transplant(_DARTS_V2, "c2sp"),
}

#: Initial channels the papers trained at (36 elsewhere).
BASELINE_CHANNELS: dict[str, int] = {"O_DARTS": 42}

#: Published CIFAR-10 figures (params in M, multiply-adds in M, test error %), for reports.
PUBLISHED: dict[str, dict[str, float]] = {
    "DARTS_V1": {"params_M": 3.3, "error": 3.00},
    "DARTS_V2": {"params_M": 3.3, "macs_M": 528, "error": 2.76},
    "PC_DARTS": {"params_M": 3.6, "error": 2.57},
    "P_DARTS": {"params_M": 3.4, "error": 2.50},
    "O_DARTS": {"params_M": 3.25, "macs_M": 572},
}


def resolve_genotype(spec: str, transplant_name: str | None = None) -> Genotype:
    """A baseline name, a genotype file (YAML/JSON/txt) or a DARTS string; validated."""
    spec = spec.strip()
    if spec.upper().replace("-", "_") in BASELINES:  # darts_v2, DARTS-V2: one baseline
        genotype = BASELINES[spec.upper().replace("-", "_")]
    elif spec.startswith("Genotype(") or spec.startswith("{"):
        genotype = Genotype.parse(spec)
    elif Path(spec).expanduser().is_file():
        genotype = load_genotype(Path(spec).expanduser())
    else:
        raise ConfigError(
            f"genotype {spec!r} is not a baseline ({', '.join(BASELINES)}), "
            "a genotype file, or a DARTS genotype string"
        )
    genotype = genotype.validate()
    return transplant(genotype, transplant_name) if transplant_name else genotype
