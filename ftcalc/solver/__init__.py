"""The plan search: candidates (GPU x count x method x micro-batch x sharding), what fits, the ranking by
cost or time, and the reasons the others were rejected (search.py)."""

from ftcalc.solver.search import (
    MICRO_BATCH_SIZES,
    Plan,
    Recommendation,
    Rejected,
    UnknownProviderError,
    recommend,
)

__all__ = ["recommend", "Recommendation", "Plan", "Rejected", "UnknownProviderError", "MICRO_BATCH_SIZES"]
