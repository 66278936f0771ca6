"""The cost step: a plan's ops get their durations from a chip and a topology.

Each op kind has one cost function (:data:`simulator.graph.ops.OP_COST`: the roofline of
:class:`simulator.cost.compute.ComputeModel` for compute, :mod:`simulator.cost.collectives` for
collectives). ``ctx`` is a :class:`simulator.graph.ops.CostContext` for one job (floats), or the
search's column context (:class:`simulator.search.stage.ColumnCost`: one duration per
configuration); both answer ``ctx.compute`` and ``ctx.collective(op)``. A chip whose collectives
cannot overlap compute (``collectives_use_compute``: e.g. a CPU host) runs them on the compute
stream.
"""

from __future__ import annotations

import numpy as np

from simulator.graph.ops import COMPUTE, OpKind, cost


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
