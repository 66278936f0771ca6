"""The list scheduler: time ops with overlap on in-order streams. The one statement of the rule,
used by the step graph (floats) and by the search (numpy columns, or max-plus unknowns).

``start(n) = max(free[stream(n)], max(end(p) for p in preds(n)))``; ``end = start + duration``.
Only ``max`` and ``+`` appear, so the same loop runs on floats, on arrays of configurations, and
on max-plus vectors (a time as the latest of ``unknown_j + c_j``, :mod:`simulator.search.stage`).

Exposed communication (floats only): whenever the compute stream waits, the gap is split along
the chain that held it up (the dependency that finished last, what delayed that one, ...), each
collective charged the part of the wait during which it ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from simulator.graph.ops import COMPUTE, Op


@dataclass
class Clock:
    """When each stream is free (``free``) and when each named op or register has ended
    (``end``); ``mx`` is the max of two times (``max`` on floats, ``np.maximum`` on arrays) and
    ``none`` the time of "no dependency"."""

    free: dict
    end: dict = field(default_factory=dict)
    mx: object = max
    none: object = float("-inf")

    @classmethod
    def scalar(cls) -> Clock:
        return cls(defaultdict(float))

    @classmethod
    def arrays(cls, free: dict, end: dict, none) -> Clock:
        return cls(free, end, np.maximum, none)


def run(items, clock: Clock, trace: _Attribution | None = None) -> None:
    """List-schedule ``items`` -- ``(name, op, predecessor names)`` in a topological order, each
    stream's ops in its program order -- advancing ``clock``; ``trace`` records each op's start
    and what held it up (floats only: it also notes which predecessor ended last)."""
    free, end, mx, none = clock.free, clock.end, clock.mx, clock.none
    for name, op, preds in items:
        ready, last = none, None
        if trace is None:
            for p in preds:
                ready = mx(ready, end[p])
        else:
            ready = 0.0
            for p in preds:
                e = end[p]
                if e > ready:
                    ready, last = e, p
        at = free[op.stream]
        t0 = mx(ready, at)
        end[name] = free[op.stream] = t0 + op.duration
        if trace is not None:
            trace.node(name, op, last, ready, at, t0)


class _Attribution:
    """Start times and wait attribution of a float schedule (see the module docstring)."""

    def __init__(self, clock: Clock, chains: bool = False) -> None:
        self.end = clock.end
        #: per compute node, every node its wait's chain visited (kept when ``chains``)
        self.chains: dict[str, tuple[str, ...]] | None = {} if chains else None
        self.start: dict[str, float] = {}
        self.last_on: dict[str, str] = {}
        self.blocker: dict[str, str | None] = {}
        self.waits: dict[str, tuple[tuple[str, float], ...]] = {}
        self.ops: dict[str, Op] = {}

    def node(self, name: str, op: Op, last: str | None, ready: float, free_at: float,
             t0: float) -> None:
        """``last``: the predecessor that ended last (after time 0), at ``ready``."""
        self.start[name] = t0
        self.ops[name] = op
        self.blocker[name] = last if ready >= free_at else self.last_on.get(op.stream)
        self.last_on[op.stream] = name
        if op.stream == COMPUTE:
            seen: list[str] | None = None if self.chains is None else []
            self.waits[name] = self._charge(last, free_at, t0, seen) if t0 > free_at else ()
            if seen is not None:
                self.chains[name] = tuple(seen)

    def _charge(self, node, lo_bound: float, hi: float, seen: list[str] | None = None
                ) -> tuple[tuple[str, float], ...]:
        """Split a compute-stream wait ``(lo_bound, hi]`` along the chain of what held it up:
        each collective (by node name) is charged the part of the wait during which it ran,
        then whatever delayed it (its own dependency, or the previous collective on its
        stream) the rest. ``seen`` (if given) collects every node the chain visits."""
        pieces: list[tuple[str, float]] = []
        while node is not None and hi > lo_bound:
            if seen is not None:
                seen.append(node)
            if self.ops[node].stream == COMPUTE:
                break
            lo = max(self.start[node], lo_bound)
            if hi > lo:
                pieces.append((node, hi - lo))
                hi = lo
            node = self.blocker[node]
        if hi > lo_bound:  # waited on something already finished on the compute side: rare
            pieces.append((pieces[0][0] if pieces else "", hi - lo_bound))
        return tuple(pieces)


@dataclass
class Scheduled:
    """Start/end per node; ``waits`` maps each compute node to the (node, seconds) pieces of the
    wait before it: the collective each piece is charged to ("" when no collective ran then:
    charged to compute)."""

    start: dict[str, float]
    end: dict[str, float]
    makespan: float = 0.0
    waits: dict[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    ops: dict[str, Op] = field(default_factory=dict)  # every node's op, in program order

    def window(self, t0: float, t1: float) -> dict[str, float]:
        """Seconds by category of compute-stream nodes ending in ``(t0, t1]``: their own busy
        time under their category, and the wait before each under what it waited for."""
        out: dict[str, float] = defaultdict(float)
        ops = self.ops
        for name, pieces in self.waits.items():
            if t0 < self.end[name] <= t1:
                op = ops[name]
                out[op.category] += op.duration
                for who, seconds in pieces:
                    out[wait_category(ops, who)] += seconds
        return out


def wait_category(ops: dict[str, Op], who: str) -> str:
    """The breakdown category a wait piece is charged to: its collective's, or compute."""
    return ops[who].category if who else "compute"


def schedule_items(items) -> Scheduled:
    """:func:`run` on floats from time 0, with attribution."""
    clock = Clock.scalar()
    trace = _Attribution(clock)
    run(items, clock, trace)
    end = clock.end
    return Scheduled(trace.start, end, makespan=max(end.values(), default=0.0), waits=trace.waits,
                     ops=trace.ops)


def schedule(graph: nx.DiGraph) -> Scheduled:
    """List-schedule ``graph`` (insertion order must be topological, as the plans make it)."""
    pred = graph._pred  # the predecessor dict-of-dicts; the public view costs 2x here
    return schedule_items((name, a["op"], pred[name]) for name, a in graph.nodes.items())
