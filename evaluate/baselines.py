"""Published genotypes and op transplants (defined in :mod:`nas.baselines`, re-exported)."""

from nas.baselines import (
    BASELINE_CHANNELS,
    BASELINES,
    PUBLISHED,
    TRANSPLANTS,
    resolve_genotype,
    transplant,
)

__all__ = [
    "BASELINES",
    "BASELINE_CHANNELS",
    "PUBLISHED",
    "TRANSPLANTS",
    "resolve_genotype",
    "transplant",
]
