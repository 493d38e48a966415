"""Search strategies: DARTS bilevel supernet, Optuna multi-objective, Ray Tune runner."""

from nas.search.architect import Architect
from nas.search.config import SearchConfig
from nas.search.darts import SearchJob, run_search
from nas.search.seeds import run_search_seeds, summarize_seeds
from nas.search.supernet.model import MixedOp, SearchCell, Supernet, derive_cell

__all__ = [
    "Architect",
    "MixedOp",
    "SearchCell",
    "SearchConfig",
    "SearchJob",
    "Supernet",
    "derive_cell",
    "run_search",
    "run_search_seeds",
    "summarize_seeds",
]
