"""The plan of one pipeline rank's micro-batch: its ops, collectives, streams and dependencies as
data, from the job's shapes alone (no hardware, no durations).

A plan is a sequence of steps, each a :class:`Block` under a node-name prefix. A block is one
recurring piece of the step, built once per kind and shared by every layer of that kind:

- ``embed_fwd`` / ``embed_bwd``: the token embedding (first rank), with the FSDP gather of its
  table before the forward;
- ``fwd`` (per layer kind): the FSDP all-gather of the layer's weights, prefetched one layer
  ahead (issued once the previous layer's first compute op has run), then its forward;
- ``head_fwd`` / ``head_bwd`` (last rank): final norm, LM head and loss, each after a gather of
  the head's table (the backward needs the weights for the input gradient);
- ``bwd`` (per layer kind): the weight gather again (prefetched one backward layer ahead), the
  recompute the remat policy asks for, the backward, then the gradient reduction: reduce-scatter
  over fsdp (every micro-batch), then all-reduce (reduce-scatter with a distributed optimizer)
  over the weights' replicas (data x expert x seq, experts data x seq; :func:`gradient_sync`);
- ``embed_grad``: the tables' gradient reduction; ``optimizer``: the Adam update after every
  gradient, then (distributed optimizer) the all-gather of the updated weights over their
  replicas.

Blocks talk through registers: an op's dependency ``@name`` reads a register, and after its
block runs a register is set to the end of one of its ops (``writes``) or raised to the latest
of several (``accumulates``). Registers: ``x`` the end of the chain so far, ``first`` the end of
the previous forward chain's first compute op (the FSDP prefetch point), ``bfirst`` the same for
the backward, ``grads`` the latest gradient reduction. An unset register is no dependency.

The step graph (:meth:`StagePlan.graph`) unrolls the steps into one networkx DiGraph; the search
(:mod:`simulator.search.stage`) runs each distinct block once on the registers and stream clocks
as max-plus unknowns and composes the steps, so both time the same plan with the one scheduler
(:mod:`simulator.graph.schedule`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx
import numpy as np

from simulator.cost.collectives import Collective
from simulator.graph.dims import Dims
from simulator.cost.formulas import (
    embedding_params,
    layer_params,
    optimizer_shards,
    optimizer_update_bytes_per_param,
    replica_axes,
    replica_sizes,
    stage_params,
)
from simulator.graph.layers import embedding_ops, head_ops, layer_template
from simulator.graph.ops import Op, OpKind
from simulator.graph.step import backward_of, recompute_of

AG, RS, AR = Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE
#: Registers a plan's blocks read and write (see the module docstring).
REGISTERS = ("x", "first", "bfirst", "grads")
#: Phases of a micro-batch's own work; ``grad_sync`` and ``optimizer`` ops run once per step.
MICROBATCH = frozenset({"fwd", "bwd", "recompute"})


def link_axis(op: Op) -> str | None:
    """The mesh axis whose links ``op`` occupies every micro-batch, or None. Collectives over
    one axis share its links whatever stream issues them, so a micro-batch takes at least the
    sum of these per axis (the link floor: for FSDP the forward and backward weight gathers
    plus the gradient reduce-scatter)."""
    return op.axis if op.collective is not None and op.phase in MICROBATCH else None


def is_weight_gather(op: Op) -> bool:
    """Whether ``op`` is one of the distributed optimizer's all-gathers of the updated weights
    (the optimizer block's collectives, :meth:`Planner._optimizer`): what
    :func:`~simulator.cost.formulas.param_gather_hidden` overlaps with the next step."""
    return op.phase == "optimizer" and op.kind is OpKind.COLLECTIVE


@dataclass(frozen=True, eq=False)
class Block:
    """One recurring piece of the step: ``ops`` in program order (dependencies name ops of the
    block or ``@register``); ``writes`` (register, op) set after it, ``accumulates`` (register,
    ops) raise a register to the latest of those ops; ``key`` names it (equal keys, equal ops)."""

    key: tuple
    ops: tuple[Op, ...]
    writes: tuple[tuple[str, str], ...] = ()
    accumulates: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Step:
    """A block placed in the stage: ``prefix`` makes its ops' node names unique."""

    block: Block
    prefix: str


@dataclass
class StagePlan:
    """The steps of one rank's micro-batch (and the optimizer after the last), in order."""

    steps: list[Step]

    def blocks(self) -> list[Block]:
        """Each distinct block once, in order of first use."""
        seen: dict[int, Block] = {}
        for st in self.steps:
            seen.setdefault(id(st.block), st.block)
        return list(seen.values())

    def block_counts(self) -> list[tuple[Block, int]]:
        """Each distinct block with the number of steps that hold it."""
        counts: dict[int, list] = {}
        for st in self.steps:
            counts.setdefault(id(st.block), [st.block, 0])[1] += 1
        return [(b, n) for b, n in counts.values()]

    def op_counts(self) -> list[tuple[Op, int]]:
        """Each distinct op of the plan with the number of nodes that run it."""
        return [(op, n) for block, n in self.block_counts() for op in block.ops]

    def unrolled(self):
        """``(node name, op, predecessor names)`` in program order (a topological order), with
        register reads resolved to the nodes that last set them (:func:`step_items`)."""
        regs: dict[str, tuple[str, ...]] = {}
        for st in self.steps:
            yield from step_items(st, regs)
            set_registers(st, regs)

    def graph(self, items=None) -> nx.DiGraph:
        """The stage's step graph: one node per op (attribute ``op``), program order
        (``items``: :meth:`unrolled`'s, when already listed)."""
        nodes, edges = [], []
        for name, op, preds in items if items is not None else self.unrolled():
            nodes.append((name, {"op": op}))
            edges.extend((p, name) for p in preds)
        g = nx.DiGraph()
        g.add_nodes_from(nodes)
        g.add_edges_from(edges)
        return g


def step_items(st: Step, regs: dict[str, tuple[str, ...]]) -> list:
    """One step's ``(node name, op, predecessor names)``: a dependency ``@r`` reads the nodes
    register ``r`` holds in ``regs`` (none when unset), any other names an op of the block."""
    p = st.prefix
    out = []
    for op in st.block.ops:
        preds: list[str] = []
        for d in op.deps:
            if d[0] == "@":
                preds.extend(regs.get(d[1:], ()))
            else:
                preds.append(p + d)
        out.append((p + op.name, op, preds))
    return out


def set_registers(st: Step, regs: dict[str, tuple[str, ...]]) -> None:
    """The registers after ``st``: each write holds its op's node (or nothing), each
    accumulate adds its ops' nodes to what the register held."""
    p = st.prefix
    for reg, name in st.block.writes:
        regs[reg] = (p + name,) if name else ()
    for reg, names in st.block.accumulates:
        regs[reg] = regs.get(reg, ()) + tuple(p + n for n in names)


def _first_compute(ops) -> str:
    return next((op.name for op in ops if op.kind is not OpKind.COLLECTIVE), "")


def _rooted(ops: list[Op], sources: list[str]) -> list[Op]:
    """Copies of a chain's ops whose roots (ops without dependencies) also wait for
    ``sources`` (other ops of the block, or ``@registers``)."""
    sources = [s for s in sources if s]
    return [replace(op, deps=list(sources)) if not op.deps else op for op in ops]


class Planner:
    """Builds the blocks of one job shape (each once) and a rank's steps from them."""

    def __init__(self, model, sharding, d: Dims) -> None:
        self.m, self.s, self.d = model, sharding, d
        self._blocks: dict[tuple, Block] = {}

    def block(self, key: tuple) -> Block:
        """The block ``key`` names (``(kind, *arguments of its builder)``), built once."""
        if key not in self._blocks:
            self._blocks[key] = getattr(self, "_" + key[0])(*key[1:])
        return self._blocks[key]

    def _gather(self, name: str, params, after: str, phase: str) -> list[Op]:
        """FSDP all-gather of ``params`` local weights, issued once ``after`` has run."""
        return _where(self.d.fs > 1, Op(name, OpKind.COLLECTIVE, stream="fsdp", nbytes=params * self.d.wb,
                      collective=AG, axis="fsdp", deps=[after] if after else [], phase=phase))

    def _table(self) -> float:
        """One ``[V/t, D]`` vocabulary table's local parameters."""
        return self.m.vocab_size * self.m.d_model / self.d.t

    # --- blocks -------------------------------------------------------------------------------
    def _embed_fwd(self) -> Block:
        g = self._gather("fwd.fsdp_ag", self._table(), "", "fwd")
        ops = _rooted(embedding_ops(self.m, self.d), [o.name for o in g])
        return Block(("embed_fwd",), tuple(g + ops), writes=(("x", ops[-1].name),))

    def _fwd(self, moe: bool) -> Block:
        dense, expert = layer_params(self.m, self.d.t, self.d.e, moe)
        g = self._gather("fwd.fsdp_ag", dense + expert, "@first", "fwd")
        ops = _rooted(layer_template(self.m, self.d, moe), ["@x"] + [o.name for o in g])
        return Block(("fwd", moe), tuple(g + ops),
                     writes=(("x", ops[-1].name), ("first", _first_compute(ops))))

    def _head_fwd(self) -> Block:
        g = self._gather("fwd.fsdp_ag", self._table(), "@first", "fwd")
        head = head_ops(self.m, self.d, "x")
        head[0].deps = []
        ops = _rooted(head, ["@x"] + [o.name for o in g])
        return Block(("head_fwd",), tuple(g + ops),
                     writes=(("x", ops[-1].name), ("first", _first_compute(ops))))

    def _head_bwd(self) -> Block:
        head = head_ops(self.m, self.d, "x")
        head[0].deps = []
        g = self._gather("bwd.fsdp_ag", self._table(), "@first", "bwd")
        ops = _rooted(backward_of(head), ["@x"] + [o.name for o in g])
        return Block(("head_bwd",), tuple(g + ops), writes=(("x", ops[-1].name),))

    def _bwd(self, moe: bool, remat: str) -> Block:
        m, d = self.m, self.d
        fwd = layer_template(m, d, moe)
        dense, expert = layer_params(m, d.t, d.e, moe)
        g = self._gather("bwd.fsdp_ag", dense + expert, "@bfirst", "bwd")
        gather = [o.name for o in g]
        rec = _rooted(recompute_of(fwd, remat), ["@x"] + gather)
        r_last = rec[-1].name if rec else ""
        bwd = _rooted(backward_of(fwd), ["@x", r_last] + gather)
        sync, outs = gradient_sync(d, self.s.distributed_optimizer, "", dense, expert,
                                   bwd[-1].name)
        return Block(("bwd", moe, remat), tuple(g + rec + bwd + sync),
                     writes=(("x", bwd[-1].name), ("bfirst", _first_compute(bwd))),
                     accumulates=(("grads", tuple(outs)),))

    def _embed_bwd(self) -> Block:
        ops = _rooted(backward_of(embedding_ops(self.m, self.d)), ["@x"])
        return Block(("embed_bwd",), tuple(ops), writes=(("x", ops[-1].name),))

    def _embed_grad(self, first: bool, last: bool) -> Block:
        n = embedding_params(self.m, self.d.t, first, last)
        sync, outs = gradient_sync(self.d, self.s.distributed_optimizer, "", n, 0.0, "@x")
        return Block(("embed_grad", first, last), tuple(sync), accumulates=(("grads", tuple(outs)),))

    def _optimizer(self, kinds: tuple[bool, ...], first: bool, last: bool) -> Block:
        """Adam update over the rank's local parameters (:func:`stage_params`; a distributed
        optimizer's share of them, each kind over its :func:`optimizer_shards`), memory bound:
        its bytes per parameter are :func:`optimizer_update_bytes_per_param`. A distributed
        optimizer then all-gathers the updated weights over the same replicas, non-expert
        (``param_ag``) then expert (``param_ag_experts``)."""
        m, d, s = self.m, self.d, self.s
        dense, expert = stage_params(m, d.t, d.e, d.fs, kinds, first, last)
        shards = optimizer_shards(s.distributed_optimizer, d.dp, d.e, d.cp)
        per_param = optimizer_update_bytes_per_param(s.optimizer, d.gb)
        ops = [Op("optimizer", OpKind.ELEMENTWISE, deps=["@grads", "@x"], phase="optimizer",
                  nbytes=(dense / shards[0] + expert / shards[1]) * per_param)]
        if s.distributed_optimizer:
            for axis, n, part, size in _replica_groups(d, dense, expert):
                ops += _where((n > 0) & (size > 1), Op(
                    f"param_ag{part}", OpKind.COLLECTIVE, stream="grad", nbytes=n * d.wb,
                    collective=AG, axis=axis, deps=[ops[-1].name], phase="optimizer"))
        return Block(("optimizer", kinds, first, last), tuple(ops))


def gradient_sync(d: Dims, distributed: bool, tag: str, dense, expert, after: str
                  ) -> tuple[list[Op], list[str]]:
    """The reduction of one set of gradients, as data: reduce-scatter of ``(dense + expert) *
    gb`` over fsdp (phase ``bwd``: it recurs every micro-batch, gradients accumulate sharded as
    in ZeRO-3), then once per step (phase ``grad_sync``) an all-reduce -- a reduce-scatter with a
    distributed optimizer -- of ``dense / fs * gb`` and ``expert / fs * gb`` over their
    replicas (:func:`_replica_groups`: data x expert x seq, experts data x seq); groups of one
    chip are skipped. Ops run on the ``grad`` stream after ``after``. Returns (ops, the ops the
    optimizer waits for)."""
    gb = d.gb
    ops = _where(d.fs > 1, Op(f"{tag}grad_rs", OpKind.COLLECTIVE, stream="grad",
                              nbytes=(dense + expert) * gb, collective=RS, axis="fsdp",
                              deps=[after] if after else [], phase="bwd"))
    rs = [ops[-1].name] if ops else [after]
    kind = RS if distributed else AR
    outs = []
    for axis, n, part, size in _replica_groups(d, dense, expert):
        new = _where((n > 0) & (size > 1), Op(f"{tag}grad_{axis}{part}", OpKind.COLLECTIVE,
                     stream="grad", nbytes=n / d.fs * gb, collective=kind, axis=axis,
                     deps=[r for r in rs if r], phase="grad_sync"))
        ops += new
        outs += [op.name for op in new]
    return ops, outs or [r for r in rs if r != after and r]


def _replica_groups(d: Dims, dense, expert) -> list[tuple[str, object, str, object]]:
    """(axis group, parameters, name suffix, group size) of the non-expert and the expert
    parameters' replicas (:func:`~simulator.cost.formulas.replica_axes`, ``replica_sizes``)."""
    axes = replica_axes(d.e, d.cp)
    sizes = replica_sizes(d.dp, d.e, d.cp)
    return [(axes[0], dense, "", sizes[0]), (axes[1], expert, "_experts", sizes[1])]


def _where(flag, op: Op) -> list[Op]:
    """``[op]`` where ``flag`` holds, else ``[]``. On columns of configurations (the search) the
    op is kept when any row needs it and carries no bytes where ``flag`` is False (``op.only``):
    it then takes no time and, as it waits for nothing its consumers do not, moves no other op
    (:mod:`simulator.search.stage` checks this against the scheduled graph)."""
    if isinstance(flag, np.ndarray) and flag.ndim:
        flag = np.asarray(flag, dtype=bool)
        if flag.all():
            return [op]
        if not flag.any():
            return []
        op.nbytes = np.where(flag, op.nbytes, 0.0)
        op.only = flag
        return [op]
    return [op] if flag else []


def stage_steps(planner: Planner, kinds: tuple[bool, ...], first: bool, last: bool,
                names: list[int] | None = None, remat: str | None = None) -> list[Step]:
    """The steps of a rank holding layers of ``kinds`` in order (global indices ``names``),
    recomputing as ``remat`` says (default: the sharding's policy)."""
    names = names if names is not None else list(range(len(kinds)))
    remat = remat or planner.s.remat
    b = planner.block
    steps = [Step(b(("embed_fwd",)), "embed.")] if first else []
    steps += [Step(b(("fwd", k)), f"L{i}.") for i, k in zip(names, kinds)]
    if last:
        steps += [Step(b(("head_fwd",)), "head."), Step(b(("head_bwd",)), "head.")]
    steps += [Step(b(("bwd", k, remat)), f"L{i}.") for i, k in reversed(list(zip(names, kinds)))]
    if first:
        steps.append(Step(b(("embed_bwd",)), "embed."))
    if first or last:
        n = embedding_params(planner.m, planner.d.t, first, last)
        if n:
            steps.append(Step(b(("embed_grad", first, last)), "embed."))
    steps.append(Step(b(("optimizer", kinds, first, last)), ""))
    return steps


def plan_stage(model, sharding, d: Dims, layers: list[int], first: bool, last: bool,
               planner: Planner | None = None) -> StagePlan:
    """The plan of one micro-batch through ``layers`` (global indices) of a rank, from the
    model, the sharding spec (remat, optimizer) and the per-device dimensions alone."""
    planner = planner or Planner(model, sharding, d)
    kinds = tuple(model.is_moe_layer(i) for i in layers)
    return StagePlan(stage_steps(planner, kinds, first, last, list(layers)))


__all__ = ["Block", "Step", "StagePlan", "REGISTERS", "MICROBATCH", "gradient_sync", "link_axis",
           "plan_stage", "set_registers", "stage_steps", "step_items", "Planner"]
