"""Time a step graph with overlap: in-order streams, each node starts when its stream is free
and its dependencies are done.

``start(n) = max(free[stream(n)], max(end(p) for p in preds(n)))``; ``end = start + duration``.
Exposed communication: whenever the compute stream waits, the gap is split along the chain that
held it up (the dependency that finished last, what delayed that one, ...), each collective
charged the part of the wait during which it ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx

from simulator.graph.ops import COMPUTE, Op


@dataclass
class Scheduled:
    """Start/end per node; ``waits`` maps each compute node to the (node, seconds) pieces of the
    wait before it: the collective each piece is charged to ("" when no collective ran then:
    charged to compute)."""

    start: dict[str, float]
    end: dict[str, float]
    makespan: float = 0.0
    waits: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)

    def window(self, t0: float, t1: float, graph: nx.DiGraph) -> dict[str, float]:
        """Seconds by category of compute-stream nodes ending in ``(t0, t1]``: their own busy
        time under their category, and the wait before each under what it waited for."""
        out: dict[str, float] = defaultdict(float)
        nodes = graph.nodes
        for name, pieces in self.waits.items():
            if t0 < self.end[name] <= t1:
                op = nodes[name]["op"]
                out[op.category] += op.duration
                for who, seconds in pieces:
                    out[wait_category(nodes, who)] += seconds
        return out


def wait_category(nodes, who: str) -> str:
    """The breakdown category a wait piece is charged to: its collective's, or compute."""
    return nodes[who]["op"].category if who else "compute"


def schedule(graph: nx.DiGraph) -> Scheduled:
    """List-schedule ``graph`` (insertion order must be topological, as the builders make it)."""
    start: dict[str, float] = {}
    end: dict[str, float] = {}
    free: dict[str, float] = defaultdict(float)
    last_on: dict[str, str] = {}
    blocker: dict[str, str | None] = {}
    waits: dict[str, tuple[tuple[str, float], ...]] = {}
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
        blocker[name] = last if ready >= free_at else last_on.get(op.stream)
        last_on[op.stream] = name
        if op.stream == COMPUTE:
            gap = t0 - free_at
            waits[name] = _charge(last, free_at, t0, nodes, start, blocker) if gap > 0 else ()
    return Scheduled(start, end, makespan=max(end.values(), default=0.0), waits=waits)


def _charge(node, lo_bound: float, hi: float, nodes, start, blocker) -> tuple[tuple[str, float], ...]:
    """Split a compute-stream wait ``(lo_bound, hi]`` along the chain of what held it up: each
    collective (by node name) is charged the part of the wait during which it ran, then whatever
    delayed it (its own dependency, or the previous collective on its stream) the rest."""
    pieces: list[tuple[str, float]] = []
    while node is not None and hi > lo_bound:
        op = nodes[node]["op"]
        if op.stream == COMPUTE:
            break
        lo = max(start[node], lo_bound)
        if hi > lo:
            pieces.append((node, hi - lo))
            hi = lo
        node = blocker[node]
    if hi > lo_bound:  # waited on something already finished on the compute side: rare
        pieces.append((pieces[0][0] if pieces else "", hi - lo_bound))
    return tuple(pieces)
