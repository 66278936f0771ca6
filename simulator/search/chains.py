"""Cost and schedule one chain of template ops (a layer's forward, backward or recompute, the
embedding, the LM head) for many configurations at once.

Durations use the graph path's formulas on arrays: compute ops the roofline of
:class:`simulator.cost.compute.ComputeModel`, collectives ``alpha * bytes + beta`` of their placement
(:mod:`simulator.search.placements`). A chain is then list-scheduled exactly as
:func:`simulator.graph.schedule.schedule` does it -- each op starts when its stream is free and its
dependencies are done. Each chain waits for the previous one to end, and only chains use the
tp, ep and cp streams, so a chain starts with every stream free unless the previous chain left
one busy past its own end (:func:`outlasting`): an op nothing in the chain waits for, such as
the all-to-alls under EP comm overlap. The graph's streams run in order across chains, so the
next chain is then timed on the streams the previous one leaves busy
(:meth:`ChainTimes.carried`, passed as ``free``), or as a function of that backlog
(``lag_of``, :meth:`ChainTimes.after`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import reduce

import numpy as np

from simulator.cost.compute import ComputeModel, attention_shape_factor
from simulator.graph.ops import COMPUTE, Op, OpKind
from simulator.search.placements import COLUMN, DEDUP_COLUMN


def _eff(curve, x: np.ndarray) -> np.ndarray:
    """``eff(x) = e_max * x / (x + x_half)`` (EfficiencyCurve.at, for positive sizes)."""
    return curve.max_efficiency * x / (x + curve.half_saturation)


@dataclass(frozen=True)
class VectorCost:
    """ComputeModel's formulas on columns; ``coef`` is ``(rows, collectives, 2)``."""

    cm: ComputeModel
    coef: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.coef)

    def memory_time(self, nbytes: np.ndarray, curve=None) -> np.ndarray:
        """``bytes / (hbm_bw * eff(bytes))`` on ``curve`` (default: memory), 0 for no bytes."""
        nb = np.maximum(nbytes, 1e-300)
        eff = _eff(curve or self.cm.memory, nb)
        return np.where(nbytes > 0, nbytes / (self.cm.hbm_bw * eff), 0.0)

    def duration(self, op: Op) -> np.ndarray:
        n = self.rows
        flops = np.broadcast_to(np.asarray(op.flops, dtype=float), (n,))
        nbytes = np.broadcast_to(np.asarray(op.nbytes, dtype=float), (n,))
        cm = self.cm
        if op.kind is OpKind.COLLECTIVE:
            col = DEDUP_COLUMN if op.dedup else COLUMN[(op.axis, op.collective)]
            a, b = self.coef[:, col].T
            return np.where(nbytes > 0, a * nbytes + b, 0.0)
        if op.kind is OpKind.HOST:
            return np.full(n, op.host_s)
        if op.kind is OpKind.ELEMENTWISE:
            return self.memory_time(nbytes, cm.gather if op.gather else None) + cm.launch_s
        if op.kind is OpKind.MATMUL:
            unit = np.broadcast_to(np.asarray(op.unit_flops or op.flops, dtype=float), (n,))
            t_flops = flops / (cm.peak_flops * _eff(cm.matmul, unit))
        else:  # attention: the size curve times the kernel's shape factor (as attention_time)
            a = cm.attention
            shape = attention_shape_factor(op.seq, op.head_dim, a.seq_half, a.head_dim_half)
            t_flops = flops / (cm.attention_peak_flops * (_eff(a, flops) * shape))
        return np.maximum(np.where(flops > 0, t_flops, 0.0), self.memory_time(nbytes)) + cm.launch_s


@dataclass
class ChainTimes:
    """One chain scheduled from time 0: ``end`` of its last op, ``first`` the end of its first
    compute op, ``busy`` the compute stream's busy time, ``comm`` collective seconds per axis,
    ``free`` when each stream it used is free again. ``lag`` (when timed with ``lag_of``): the
    same times' dependence on that stream being busy ``o`` past the chain's start, each time
    becoming ``max(time, o + lag)`` (-inf: it does not wait for that stream; see :meth:`after`);
    None where the chain neither uses nor waits for it."""

    end: np.ndarray
    first: np.ndarray
    busy: np.ndarray
    comm: dict[str, np.ndarray]
    free: dict[str, np.ndarray] = field(default_factory=dict)
    lag: ChainTimes | None = None

    @classmethod
    def zeros(cls, n: int) -> ChainTimes:
        z = np.zeros(n)
        return cls(z, z, z, {})

    def carried(self) -> dict[str, np.ndarray]:
        """Streams still busy at ``end`` (when the next chain starts), as seconds past it."""
        return {s: np.maximum(f - self.end, 0.0) for s, f in self.free.items()
                if np.any(f > self.end)}

    def after(self, backlog: np.ndarray) -> ChainTimes:
        """The times when the ``lag_of`` stream is busy ``backlog`` past the chain's start (a
        stream the chain does not use stays busy that long: ``free`` = ``backlog``)."""
        if self.lag is None:
            return self
        lag = self.lag
        free = dict(self.free)
        for s, v in lag.free.items():
            free[s] = np.maximum(free[s], backlog + v) if s in free else backlog + v
        return ChainTimes(np.maximum(self.end, backlog + lag.end),
                          np.maximum(self.first, backlog + lag.first), self.busy, self.comm, free,
                          lag)


def time_chain(ops: list[Op], cost: VectorCost, free: dict[str, np.ndarray] | None = None,
               lag_of: str | None = None) -> ChainTimes:
    """``start = max(free[stream], end of deps)``, ``end = start + duration``, in list order;
    ``free``: streams the previous chain left busy (:meth:`ChainTimes.carried`), else all free.
    With ``lag_of`` also each time's longest path from that stream's availability
    (``ChainTimes.lag``): the same recurrence with ``max`` over the paths that reach it."""
    n = cost.rows
    if not ops:
        return ChainTimes.zeros(n)
    end: dict[str, np.ndarray] = {}
    free = defaultdict(lambda: np.zeros(n), free or {})
    lag: dict[str, np.ndarray] = {}
    lag_free = {lag_of: np.zeros(n)} if lag_of else {}
    busy = np.zeros(n)
    comm: dict[str, np.ndarray] = {}
    first = None
    for op in ops:
        dur = cost.duration(op)
        start = free[op.stream]
        for d in op.deps:
            start = np.maximum(start, end[d])
        end[op.name] = free[op.stream] = start + dur
        if lag_of:
            paths = [lag_free[op.stream]] if op.stream in lag_free else []
            paths += [lag[d] for d in op.deps if d in lag]
            if paths:
                lag[op.name] = lag_free[op.stream] = reduce(np.maximum, paths) + dur
        if op.stream == COMPUTE:
            busy = busy + dur
            if first is None:
                first = op.name
        elif op.kind is OpKind.COLLECTIVE:
            comm[op.axis] = comm.get(op.axis, 0.0) + dur
    last = ops[-1].name
    out = ChainTimes(end[last], end[first] if first is not None else np.zeros(n), busy, comm,
                     dict(free))
    if lag:  # else the chain neither uses nor waits for that stream: ``lag`` stays None
        none = np.full(n, -np.inf)
        out.lag = ChainTimes(lag.get(last, none), lag.get(first, none), np.zeros(n), {}, lag_free)
    return out


def take_chain(ct: ChainTimes, idx) -> ChainTimes:
    """The rows ``idx`` of a ChainTimes."""
    def rows(d: dict) -> dict:
        return {k: np.broadcast_to(v, ct.end.shape)[idx] for k, v in d.items()}

    return ChainTimes(ct.end[idx], ct.first[idx], ct.busy[idx], rows(ct.comm), rows(ct.free),
                      None if ct.lag is None else take_chain(ct.lag, idx))


def outlasting(ops: list[Op]) -> set[str]:
    """Streams whose last op in ``ops`` the chain's last op does not wait for (through
    dependencies or stream order): they may still be busy when the next chain starts."""
    if not ops:
        return set()
    waits: dict[str, set[str]] = {}
    last_on: dict[str, str] = {}
    for op in ops:
        preds = set(op.deps) | ({last_on[op.stream]} if op.stream in last_on else set())
        waits[op.name] = preds.union(*(waits[p] for p in preds))
        last_on[op.stream] = op.name
    last = ops[-1].name
    return {s for s, name in last_on.items() if name != last and name not in waits[last]}
