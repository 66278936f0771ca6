"""The step graph of one pipeline stage: a networkx DiGraph of ops and collectives.

One micro-batch's forward and backward through the stage's layers (with remat recompute), FSDP
weight all-gathers (prefetched one layer ahead), gradient reduce-scatter / all-reduce issued as
each layer's backward finishes, and the optimizer update. Layer templates are built and costed
once per layer kind, then repeated. Nodes are inserted in program order, so insertion order is a
topological order and each stream runs its nodes in that order.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from simulator.cost.collectives import Collective
from simulator.graph.dims import Dims
from simulator.graph.layers import (
    embedding_ops,
    embedding_params_local,
    head_ops,
    layer_params_local,
    layer_template,
    stage_params_local,
)
from simulator.graph.ops import COMPUTE, CostContext, Op, OpKind, cost

AG, RS, AR = Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE
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


class StageGraphBuilder:
    """Builds the DiGraph for one stage; costs each template op once."""

    def __init__(self, job, ctx: CostContext) -> None:
        self.job, self.ctx = job, ctx
        self.model = job.model
        self.d = Dims.from_job(job)
        self._nodes: list[tuple[str, dict]] = []
        self._edges: list[tuple[str, str]] = []
        self._templates: dict[bool, tuple[list[Op], list[Op], list[Op]]] = {}
        self._plans: dict[int, tuple] = {}
        #: collectives that cannot overlap compute run on the compute stream
        self._serial = job.hardware.chip.collectives_use_compute

    def _costed(self, ops: list[Op]) -> list[Op]:
        for op in ops:
            op.duration = cost(op, self.ctx)
            if self._serial and op.kind is OpKind.COLLECTIVE:
                op.stream = COMPUTE
        return ops

    def _template(self, moe: bool):
        if moe not in self._templates:
            fwd = self._costed(layer_template(self.model, self.d, moe))
            bwd = self._costed(backward_of(fwd))
            rec = self._costed(recompute_of(fwd, self.job.sharding.remat))
            self._templates[moe] = (fwd, bwd, rec)
        return self._templates[moe]

    def _add(self, op: Op, prefix: str, extra: list[str] = ()) -> str:
        """Add a node sharing the (costed, immutable from here) template op; edges carry deps."""
        name = prefix + op.name
        self._nodes.append((name, {"op": op}))
        self._edges.extend((prefix + d, name) for d in op.deps)
        self._edges.extend((e, name) for e in extra if e)
        return name

    def _chain(self, ops: list[Op], prefix: str, entry: list[str], weights: str | None
               ) -> tuple[str, str]:
        """Add ``ops`` under ``prefix``; their roots depend on ``entry`` and on ``weights`` (the
        FSDP gather; every other op follows a root). Returns (first compute node, last node)."""
        plan = self._plans.get(id(ops))
        if plan is None:
            names = [op.name for op in ops]
            internal = [(d, op.name) for op in ops for d in op.deps]
            roots = [op.name for op in ops if not op.deps]
            first = next((op.name for op in ops if op.kind is not OpKind.COLLECTIVE), "")
            plan = self._plans[id(ops)] = (names, internal, roots, first, ops)
        names, internal, roots, first, _ = plan
        self._nodes.extend((prefix + n, {"op": op}) for n, op in zip(names, ops))
        self._edges.extend((prefix + a, prefix + b) for a, b in internal)
        sources = [e for e in entry if e] + ([weights] if weights else [])
        self._edges.extend((src, prefix + r) for r in roots for src in sources)
        return (prefix + first if first else ""), (prefix + names[-1] if names else "")

    def _collective(self, name: str, kind: Collective, axis: str, nbytes: float, stream: str,
                    deps: list[str], phase: str) -> str:
        op = Op(name, OpKind.COLLECTIVE, stream=COMPUTE if self._serial else stream,
                nbytes=nbytes, collective=kind, axis=axis, phase=phase)
        op.duration = cost(op, self.ctx)
        return self._add(op, "", deps)

    def build(self, layers: list[int], first: bool, last: bool) -> nx.DiGraph:
        """Graph of one micro-batch through ``layers`` (global indices) of this stage."""
        m, d = self.model, self.d
        prev = ""
        fwd_first: list[str] = []
        if first:
            gather = self._table_gather("embed", "", "fwd")
            _, prev = self._chain(self._costed(embedding_ops(m, d)), "embed.", [], gather)
        for i in layers:
            fwd, _, _ = self._template(m.is_moe_layer(i))
            gather = self._weight_gather(i, fwd_first[-1] if fwd_first else "", "fwd")
            f, prev = self._chain(fwd, f"L{i}.", [prev], gather)
            fwd_first.append(f)
        if last:
            head = self._costed(head_ops(m, d, "x"))
            head[0].deps = []
            gather = self._table_gather("head", fwd_first[-1] if fwd_first else "", "fwd")
            f, prev = self._chain(head, "head.", [prev], gather)
            gather = self._table_gather("head", f, "bwd")
            _, prev = self._chain(self._costed(backward_of(head)), "head.", [prev], gather)
        grads: list[str] = []
        bwd_first = ""
        for i in reversed(layers):
            fwd, bwd, rec = self._template(m.is_moe_layer(i))
            gather = self._weight_gather(i, bwd_first, "bwd")
            _, r_last = self._chain(rec, f"L{i}.", [prev], gather)
            f, prev = self._chain(bwd, f"L{i}.", [prev, r_last], gather)
            bwd_first = f
            grads += self._grad_sync(i, prev)
        if first:
            _, prev = self._chain(self._costed(backward_of(embedding_ops(m, d))), "embed.", [prev], None)
        grads += self._grad_sync_embeddings(prev, first, last)
        self._optimizer(grads + [prev], layers, first, last)
        g = nx.DiGraph()
        g.add_nodes_from(self._nodes)  # program order: a topological order
        g.add_edges_from(self._edges)
        return g

    # --- FSDP / data-parallel weight and gradient traffic ------------------------------------
    def _weight_gather(self, i: int, after: str, phase: str) -> str | None:
        """FSDP all-gather of layer ``i``'s weights, issued once ``after`` (the previous layer's
        first compute op) has run: a prefetch depth of one layer."""
        if self.d.fs <= 1:
            return None
        dense, expert = layer_params_local(self.model, self.d, self.model.is_moe_layer(i))
        return self._collective(f"L{i}.{phase}.fsdp_ag", AG, "fsdp", (dense + expert) * self.d.wb,
                                "fsdp", [after], phase)

    def _table_gather(self, tag: str, after: str, phase: str) -> str | None:
        """FSDP all-gather of one ``[V/t, D]`` vocabulary table (the input embedding before the
        lookup; the LM head before its forward and again before its backward, which needs the
        weights for the input gradient), prefetched like a layer's weights."""
        if self.d.fs <= 1:
            return None
        nbytes = self.model.vocab_size * self.model.d_model / self.d.t * self.d.wb
        return self._collective(f"{tag}.{phase}.fsdp_ag", AG, "fsdp", nbytes, "fsdp", [after], phase)

    def _grad_sync(self, i: int, after: str) -> list[str]:
        dense, expert = layer_params_local(self.model, self.d, self.model.is_moe_layer(i))
        return self._reduce_grads(f"L{i}", dense, expert, after)

    def _grad_sync_embeddings(self, after: str, first: bool, last: bool) -> list[str]:
        m, d = self.model, self.d
        n = embedding_params_local(m, d, first, last)
        return self._reduce_grads("embed", n, 0.0, after) if n else []

    def _reduce_grads(self, tag: str, dense: float, expert: float, after: str) -> list[str]:
        """Reduce-scatter over fsdp, then all-reduce (or reduce-scatter with a distributed
        optimizer) over data -- and over expert too for the non-expert weights."""
        d, out = self.d, []
        gb = d.gb
        # phase "bwd": the fsdp reduce-scatter recurs every micro-batch (gradients accumulate
        # sharded, as in ZeRO-3 / XLA FSDP); the data-parallel reduction runs once per step.
        rs = [self._collective(f"{tag}.grad_rs", RS, "fsdp", (dense + expert) * gb, "grad",
                               [after], "bwd")] if d.fs > 1 else [after]
        kind = RS if self.job.sharding.distributed_optimizer else AR
        groups = [("data+expert" if d.e > 1 else "data", dense, ""), ("data", expert, "_experts")]
        for axis, n, part in groups:
            size = self.ctx.group_size(axis)
            if n > 0 and size > 1:
                out.append(self._collective(f"{tag}.grad_{axis}{part}", kind, axis,
                                            n / d.fs * gb, "grad", rs, "grad_sync"))
        return out or [r for r in rs if r != after]

    def _optimizer(self, deps: list[str], layers: list[int], first: bool, last: bool) -> None:
        """Adam update, memory bound: per local parameter it reads/writes the fp32 master
        (8 B), reads the gradient, reads/writes m and v (4 x state bytes) and writes the bf16
        weight (2 B). A distributed optimizer then all-gathers the updated weights over data."""
        m, d, s = self.model, self.d, self.job.sharding
        n = stage_params_local(m, d, layers, first, last)
        shard = self.ctx.group_size("data") if s.distributed_optimizer else 1
        state = 4 if s.optimizer.state_dtype == "fp32" else 2
        per_param = (8 if s.optimizer.master_weights else 0) + d.gb + 4 * state + 2
        op = Op("optimizer", OpKind.ELEMENTWISE, nbytes=n / shard * per_param, phase="optimizer")
        op.duration = cost(op, self.ctx)
        node = self._add(op, "", [x for x in deps if x])
        if shard > 1:
            self._collective("param_ag", AG, "data", n * d.wb, "grad", [node], "optimizer")


def build_stage_graph(job, ctx: CostContext, layers: list[int], first: bool, last: bool) -> nx.DiGraph:
    return StageGraphBuilder(job, ctx).build(layers, first, last)


__all__ = ["build_stage_graph", "backward_of", "recompute_of"]
