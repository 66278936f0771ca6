"""The cost step: a plan's ops get their durations from a chip and a topology.

Each op kind has one cost function (:data:`OP_COST`: the roofline of
:class:`simulator.cost.compute.ComputeModel` for compute, :mod:`simulator.cost.collectives` for
collectives). ``ctx`` is a :class:`CostContext` for one job (floats), or the
search's column context (:class:`simulator.search.stage.ColumnCost`: one duration per
configuration); both answer ``ctx.compute`` and ``ctx.collective(op)``. A chip whose collectives
cannot overlap compute (``collectives_use_compute``: e.g. a CPU host) runs them on the compute
stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from simulator.cost.collectives import collective_time
from simulator.cost.compute import ComputeModel
from simulator.cost.topology import AxisPart, Topology
from simulator.graph.ops import COMPUTE, Op, OpKind


@dataclass(frozen=True)
class CostContext:
    compute: ComputeModel
    topology: Topology

    def parts(self, axis: str) -> tuple[AxisPart, ...]:
        """Placement of one axis, or of a group of axes ``a+b`` merged level by level."""
        names = axis.split("+")
        if len(names) == 1:
            return self.topology.placement.get(axis, ())
        factors: dict[str, int] = {}
        for a in names:
            for p in self.topology.placement.get(a, ()):
                factors[p.level.name] = factors.get(p.level.name, 1) * p.factor
        return tuple(AxisPart(lv, factors[lv.name]) for lv in self.topology.levels if lv.name in factors)

    def group_size(self, axis: str) -> int:
        return math.prod(p.factor for p in self.parts(axis))

    def collective(self, op: Op) -> float:
        """Seconds of one collective op on this topology (:mod:`simulator.cost.collectives`)."""
        return collective_time(op.collective, self.parts(op.axis), op.nbytes, op.dedup)


def _matmul(op: Op, ctx: CostContext) -> float:
    return ctx.compute.matmul_time(op.flops, op.nbytes, op.unit_flops)


def _attention(op: Op, ctx: CostContext) -> float:
    return ctx.compute.attention_time(op.flops, op.nbytes, seq=op.seq, head_dim=op.head_dim)


def _elementwise(op: Op, ctx: CostContext) -> float:
    if op.gather:
        return ctx.compute.gather_time(op.nbytes)
    return ctx.compute.elementwise_time(op.nbytes)


def _collective(op: Op, ctx: CostContext) -> float:
    return ctx.collective(op)


def _host(op: Op, ctx: CostContext) -> float:
    return op.host_s


OP_COST: dict[OpKind, Callable[[Op, CostContext], float]] = {
    OpKind.MATMUL: _matmul,
    OpKind.ATTENTION: _attention,
    OpKind.ELEMENTWISE: _elementwise,
    OpKind.COLLECTIVE: _collective,
    OpKind.HOST: _host,
}


def cost(op: Op, ctx: CostContext) -> float:
    return OP_COST[op.kind](op, ctx)


def cost_blocks(blocks, ctx, serial: bool, shape=None) -> None:
    """Set ``duration`` on every op of ``blocks`` (reshaped to ``shape`` when given, e.g.
    ``(rows, 1)`` for max-plus columns); collectives move to the compute stream if ``serial``."""
    for block in blocks:
        for op in block.ops:
            t = cost(op, ctx)
            if shape is not None:
                t = np.broadcast_to(np.asarray(t, dtype=float), shape[:1]).reshape(shape)
            op.duration = t
            if serial and op.kind is OpKind.COLLECTIVE:
                op.stream = COMPUTE
