"""Cost and schedule one chain of template ops (a layer's forward, backward or recompute, the
embedding, the LM head) for many configurations at once.

Durations use the graph path's formulas on arrays: compute ops the roofline of
:class:`simulator.compute.ComputeModel`, collectives ``alpha * bytes + beta`` of their placement
(:mod:`simulator.search.placements`). A chain is then list-scheduled exactly as
:func:`simulator.schedule.schedule` does it -- each op starts when its stream is free and its
dependencies are done -- starting with every stream free, which holds in the stage graph: each
chain waits for the previous one to end, and only chains use the tp, ep and cp streams.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from simulator.compute import ComputeModel, attention_shape_factor
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
    compute op, ``busy`` the compute stream's busy time, ``comm`` collective seconds per axis."""

    end: np.ndarray
    first: np.ndarray
    busy: np.ndarray
    comm: dict[str, np.ndarray]

    @classmethod
    def zeros(cls, n: int) -> ChainTimes:
        z = np.zeros(n)
        return cls(z, z, z, {})


def time_chain(ops: list[Op], cost: VectorCost) -> ChainTimes:
    """``start = max(free[stream], end of deps)``, ``end = start + duration``, in list order."""
    n = cost.rows
    if not ops:
        return ChainTimes.zeros(n)
    end: dict[str, np.ndarray] = {}
    free: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(n))
    busy = np.zeros(n)
    comm: dict[str, np.ndarray] = {}
    first = None
    for op in ops:
        dur = cost.duration(op)
        start = free[op.stream]
        for d in op.deps:
            start = np.maximum(start, end[d])
        end[op.name] = free[op.stream] = start + dur
        if op.stream == COMPUTE:
            busy = busy + dur
            if first is None:
                first = end[op.name]
        elif op.kind is OpKind.COLLECTIVE:
            comm[op.axis] = comm.get(op.axis, 0.0) + dur
    return ChainTimes(end[ops[-1].name], first if first is not None else np.zeros(n), busy, comm)


def take_chain(ct: ChainTimes, idx) -> ChainTimes:
    """The rows ``idx`` of a ChainTimes."""
    return ChainTimes(ct.end[idx], ct.first[idx], ct.busy[idx],
                      {a: np.broadcast_to(v, ct.end.shape)[idx] for a, v in ct.comm.items()})
