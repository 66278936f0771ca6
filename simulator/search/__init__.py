"""Search every feasible sharding of a job: enumerate, prune by memory, time on a vectorised
fast path, re-rank the finalists with the graph path; and plan hardware purchases."""

from simulator.search.enumerate import REASONS, enumerate_candidates
from simulator.search.rank import OBJECTIVES, Finalist, RankResult, rank, rank_table
from simulator.search.space import SearchSpace, make_space
from simulator.search.table import Candidates

__all__ = [
    "OBJECTIVES",
    "REASONS",
    "Candidates",
    "Finalist",
    "RankResult",
    "SearchSpace",
    "enumerate_candidates",
    "make_space",
    "rank",
    "rank_table",
]
