"""Time a step graph with overlap: in-order streams, each node starts when its stream is free
and its dependencies are done.

``start(n) = max(free[stream(n)], max(end(p) for p in preds(n)))``; ``end = start + duration``.
Exposed communication: whenever the compute stream waits, the gap is charged to the category of
the dependency that finished last (the one it actually waited for).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx

from simulator.graph.ops import COMPUTE, Op


@dataclass
class Scheduled:
    """Start/end per node; ``waits`` maps each compute node to (category it waited on, gap)."""

    start: dict[str, float]
    end: dict[str, float]
    makespan: float = 0.0
    waits: dict[str, tuple[str, float]] = field(default_factory=dict)

    def window(self, t0: float, t1: float, graph: nx.DiGraph) -> dict[str, float]:
        """Seconds by category of compute-stream nodes ending in ``(t0, t1]``: their own busy
        time under their category, and the wait before each under what it waited for."""
        out: dict[str, float] = defaultdict(float)
        for name, (cat, gap) in self.waits.items():
            if t0 < self.end[name] <= t1:
                op = graph.nodes[name]["op"]
                out[op.category] += op.duration
                if gap > 0:
                    out[cat] += gap
        return out


def schedule(graph: nx.DiGraph) -> Scheduled:
    """List-schedule ``graph`` (insertion order must be topological, as the builders make it)."""
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    free: dict[str, float] = defaultdict(float)
    waits: dict[str, tuple[str, float]] = {}
    nodes = graph.nodes
    pred = graph._pred  # the predecessor dict-of-dicts; the public view costs 2x here
    for name, attrs in nodes.items():
        op: Op = attrs["op"]
        ready, last = 0.0, None
        for p in pred[name]:
            e = end[p]
            if e > ready:
                ready, last = e, p
        free_at = free[op.stream]
        t0 = ready if ready > free_at else free_at
        t1 = t0 + op.duration
        start[name], end[name] = t0, t1
        free[op.stream] = t1
        if op.stream == COMPUTE:
            gap = t0 - free_at
            cat = nodes[last]["op"].category if (gap > 0 and last is not None) else "compute"
            waits[name] = (cat, gap)
    return Scheduled(start, end, makespan=max(end.values(), default=0.0), waits=waits)
