"""Backward and recompute of a layer's forward ops (the plan's reverse mode,
:mod:`simulator.graph.plan`)."""

from __future__ import annotations

from dataclasses import replace

from simulator.cost.collectives import Collective
from simulator.graph.ops import Op, OpKind

AG, RS = Collective.ALL_GATHER, Collective.REDUCE_SCATTER
_MIRROR = {AG: RS, RS: AG}
#: Backward cost relative to forward: GEMMs compute dgrad and wgrad (2x); flash attention's
#: backward is about 2.5x its forward (Dao 2023, FlashAttention-2 sec. 3); elementwise 2x bytes.
#: An op whose backward is known exactly says so itself (``Op.bwd_scale``: the unfused attention
#: core of :func:`simulator.graph.layers.attention_block`).
BWD_SCALE = {OpKind.MATMUL: 2.0, OpKind.ATTENTION: 2.5, OpKind.ELEMENTWISE: 2.0}
#: Ops a selective remat policy recomputes: the cheap-to-recompute, memory-heavy ones
#: (attention core and elementwise), as Megatron's selective recompute (Korthikanti et al. 2022).
SELECTIVE = {OpKind.ATTENTION, OpKind.ELEMENTWISE}


def backward_of(fwd: list[Op]) -> list[Op]:
    """Reverse-mode ops: each forward op's gradient op, with the forward edges reversed."""
    consumers: dict[str, list[str]] = {op.name: [] for op in fwd}
    for op in fwd:
        for dep in op.deps:
            consumers[dep].append(op.name)
    out = []
    for op in reversed(fwd):
        deps = [f"bwd.{c}" for c in consumers[op.name]]
        if op.kind is OpKind.COLLECTIVE:
            kind = _MIRROR.get(op.collective, op.collective)
            out.append(replace(op, name=f"bwd.{op.name}", collective=kind, deps=deps, phase="bwd"))
        elif op.kind is OpKind.HOST:  # the backward issues the same ops, mirrored
            out.append(replace(op, name=f"bwd.{op.name}", deps=deps, phase="bwd"))
        else:
            s = op.bwd_scale or BWD_SCALE[op.kind]
            out.append(replace(op, name=f"bwd.{op.name}", flops=op.flops * s,
                               nbytes=op.nbytes * s + op.bwd_nbytes, bwd_nbytes=0.0, bwd_scale=0.0,
                               unit_flops=op.unit_flops, deps=deps, phase="bwd"))
    return out


def recompute_of(fwd: list[Op], remat: str) -> list[Op]:
    """Forward ops re-run before a layer's backward: all of them (full) or the selective set."""
    if remat == "none":
        return []
    keep = [op for op in fwd if remat == "full" or op.kind in SELECTIVE]
    names = {op.name for op in keep}
    return [replace(op, name=f"re.{op.name}", deps=[f"re.{d}" for d in op.deps if d in names],
                    phase="recompute") for op in keep]


__all__ = ["backward_of", "recompute_of"]
