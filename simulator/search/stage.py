"""One pipeline rank's micro-batch for many configurations at once: the step graph's own plan
(:mod:`simulator.graph.plan`), costed on columns and timed by the one list scheduler
(:func:`simulator.graph.schedule.run`) in max-plus algebra.

The scheduler only takes ``max`` and ``+``. So the state after a block -- when each stream is
free, each register, and the marks ``t_fwd``/``t_mb`` (the end of the last forward / last
micro-batch compute op) -- is ``x'_i = max_j (M_ij + x_j)`` of the state ``x`` before it: a
max-plus matrix ``M`` per block and configuration, found by running the block once with each
variable it reads as an unknown (a max-plus basis vector; ``-inf`` where an output does not
depend on it). It is kept sparse (:class:`~simulator.search.maxplus.BlockForm`: the variables
the block changes, from those it reads). A rank's steps apply in order; ``n`` identical layers
(or alternating kinds) reach a periodic regime within a few layers, after which every clock
advances by a fixed shift per layer (:func:`simulator.search.maxplus.apply`, with its proof;
rows not there yet are finished by repeated squaring),
so a 100-layer rank costs a few products instead of 100 layers of ops. Nothing of the graph's
wiring is restated here: change the plan and both paths move together.

From the final state ``x``: ``t_fwd``, ``t_mb = max(x[t_mb], link floor)``, ``tail =
max_streams x - x[t_mb]`` (gradient sync, optimizer and weight gather after the last
micro-batch; less what :func:`~simulator.cost.formulas.param_gather_hidden` hides under the
next step with ``overlap_param_gather``) -- as :func:`simulator.predict._time_stage` reads them
off the scheduled graph.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.cost.compute import ComputeModel
from simulator.cost.formulas import param_gather_hidden
from simulator.graph.cost import cost_blocks
from simulator.graph.ops import COMPUTE, STREAMS, OpKind
from simulator.graph.periodic import runs
from simulator.graph.plan import MICROBATCH, REGISTERS, is_weight_gather, link_axis, stage_steps
from simulator.graph.schedule import Clock, run
from simulator.search.columns import BranchError
from simulator.search.maxplus import _AT, _N_STREAMS, NEG, STATE, BlockForm, apply_t
from simulator.search.placements import COLUMN, DEDUP_COLUMN
from simulator.search.space import REMATS


@dataclass(frozen=True)
class ColumnCost:
    """The cost step's context on columns: ``compute`` (its formulas take arrays) and each
    collective as ``alpha * bytes + beta`` of its placement (``coef``: rows x columns x 2,
    :func:`simulator.search.placements.coefficients`), 0 for no bytes. With ``shape``, the
    plan's values (FLOPs, bytes, masks) are one per distinct shape, not per row (a row's
    durations depend on its mesh sizes and micro-batch, and on its placement only through its
    collectives): ``shape[i]`` is row ``i``'s; ``compute`` then costs each shape once and
    answers per row (:class:`_PerRow`), and a collective reads its row's bytes."""

    compute: ComputeModel
    coef: np.ndarray
    shape: np.ndarray | None = None

    @classmethod
    def on_shapes(cls, compute: ComputeModel, coef: np.ndarray, shape: np.ndarray) -> ColumnCost:
        """The context for a plan built on shapes, ``shape`` (per row, its shape) apart."""
        return cls(_PerRow(compute, shape), coef, shape)

    def per_row(self, value):
        """A plan value (one per shape, or a number) per row."""
        if self.shape is None or np.ndim(value) == 0:
            return value
        return np.asarray(value)[self.shape]

    @cached_property
    def _by_column(self) -> np.ndarray:
        """``coef`` as columns x 2 x rows: each column's alpha and beta contiguous."""
        return np.ascontiguousarray(np.transpose(self.coef, (1, 2, 0)))

    def collective(self, op) -> np.ndarray:
        col = DEDUP_COLUMN if op.dedup else COLUMN[(op.axis, op.collective)]
        a, b = self._by_column[col]
        nbytes = np.broadcast_to(np.asarray(self.per_row(op.nbytes), dtype=float), a.shape)
        return np.where(nbytes > 0, a * nbytes + b, 0.0)


class _PerRow:
    """A ComputeModel whose formulas, evaluated on values per shape, answer per row: each
    result array is read at ``shape`` (per row, its shape); numbers and attributes as they
    are."""

    def __init__(self, compute: ComputeModel, shape: np.ndarray) -> None:
        self._compute, self._shape = compute, shape

    def __getattr__(self, name: str):
        value = getattr(self._compute, name)
        if not callable(value):
            return value

        def per_row(*args, **kwargs):
            out = value(*args, **kwargs)
            return out[self._shape] if np.ndim(out) else out
        return per_row


@dataclass
class StageTime:
    """Per row: ``t_fwd`` (forward part of a micro-batch), ``t_mb``, ``tail``, ``busy``
    (compute-stream seconds per micro-batch) and ``opt`` (optimizer update)."""

    t_fwd: np.ndarray
    t_mb: np.ndarray
    tail: np.ndarray
    busy: np.ndarray
    opt: np.ndarray


def _reads_writes(block) -> tuple[list[str], list[str]]:
    """The state variables ``block`` reads and those it changes, in STATE order."""
    streams = {op.stream for op in block.ops}
    unknown = streams - set(STREAMS)
    if unknown:
        raise ValueError(f"block {block.key} uses streams {sorted(unknown)} missing from "
                         "simulator.graph.ops.STREAMS")
    regs = {d[1:] for op in block.ops for d in op.deps if d[0] == "@"}
    acc = {r for r, _ in block.accumulates}
    marks = set()
    masked = set()
    for op in block.ops:
        if op.stream == COMPUTE and op.phase in MICROBATCH:
            now = {"t_mb", "t_fwd"} if op.phase == "fwd" else {"t_mb"}
            marks |= now
            if op.only is not None:
                masked |= now
    reads = streams | regs | acc | masked
    writes = streams | {r for r, _ in block.writes} | acc | marks
    return ([v for v in STATE if v in reads], [v for v in STATE if v in writes])


def _latest(none: np.ndarray):
    """``np.maximum`` for the scheduler, passing over ``none`` (the time of "no dependency",
    all -inf) instead of taking a maximum with it: the scheduler starts every op's ready time
    there. Times are never changed in place, so the other argument is returned as is."""
    def mx(a, b):
        return b if a is none else a if b is none else np.maximum(a, b)
    return mx


def block_form(block, rows: int, per_row=None) -> BlockForm:
    """Run ``block`` (costed, durations per row: shape ``(rows,)``) once on the unknowns it
    reads: a time is ``S x rows`` (its coefficient of each unknown), so every operation of the
    scheduler runs over contiguous rows. ``per_row`` reads an op's mask (``op.only``) per row
    (:meth:`ColumnCost.per_row`; default: it is)."""
    ins, outs = _reads_writes(block)
    S = len(ins)
    basis = np.full((S, S), NEG)
    np.fill_diagonal(basis, 0.0)
    at = {v: basis[:, i, None] for i, v in enumerate(ins)}
    none = np.full((S, 1), NEG)
    free = {s: at[s] for s in ins if s in STREAMS}
    end = {"@" + r: at[r] for r in REGISTERS if r in at}
    run(((op.name, op, op.deps) for op in block.ops), Clock(free, end, _latest(none), none))
    out = dict(free)
    for reg, name in block.writes:
        out[reg] = end[name] if name else none
    for reg, ops in block.accumulates:
        out[reg] = at[reg]
        for name in ops:
            out[reg] = np.maximum(out[reg], end[name])
    busy, links, opt, gather = np.zeros(rows), {}, np.zeros(rows), None
    for op in block.ops:
        dur = np.broadcast_to(op.duration, (rows,))
        if op.stream == COMPUTE and op.phase in MICROBATCH:
            e = end[op.name]
            for mark in ("t_mb", "t_fwd") if op.phase == "fwd" else ("t_mb",):
                out[mark] = e if op.only is None else np.where(
                    op.only if per_row is None else per_row(op.only), e,
                    out.get(mark, at.get(mark, none)))
            if op.kind is not OpKind.COLLECTIVE:
                busy = busy + dur
        axis = link_axis(op)
        if axis is not None:
            links[axis] = links.get(axis, 0.0) + dur
        if is_weight_gather(op):
            gather = dur if gather is None else gather + dur
        elif op.phase == "optimizer":
            opt = opt + dur
    column: dict[int, int] = {}  # the scheduler's own arrays: one object, one column
    cols = np.array([column.setdefault(id(out[v]), len(column)) for v in outs], dtype=np.intp)
    M = np.empty((S, len(column), rows))
    head: dict[int, str] = {}  # each column's first output
    for v, c in zip(outs, cols.tolist()):
        head.setdefault(c, v)
    for c, v in head.items():
        M[:, c, :] = np.broadcast_to(out[v], (S, rows))
    return BlockForm(np.array([_AT[v] for v in outs], dtype=np.intp),
                     np.array([_AT[v] for v in ins], dtype=np.intp), M, busy, links, opt, cols,
                     gather=gather)


def _place(M: np.ndarray, f: BlockForm, heads: list[int], ins: np.ndarray, rows) -> None:
    """Write ``f.M`` into a table's ``M`` (over the wider ``ins`` and the columns of outputs
    ``heads``) at ``rows``: ``(lo, hi, at)`` runs, ``f``'s row ``at`` to the table's ``lo``. A
    variable ``f`` leaves alone keeps its value (its own input at 0); inputs ``f`` does not
    read are -inf."""
    i = {v: k for k, v in enumerate(ins.tolist())}
    at = {v: int(c) for v, c in zip(f.outs.tolist(), f.cols)}
    same = np.array_equal(f.ins, ins) and [at.get(v) for v in heads] == list(range(f.M.shape[1]))
    in_at = np.array([i[v] for v in f.ins.tolist()], dtype=np.intp)
    for lo, hi, a in rows:
        dst, src = M[:, :, lo:hi], f.M[:, :, a:a + hi - lo]
        if same:
            dst[...] = src
            continue
        dst.fill(NEG)
        for c, v in enumerate(heads):
            if v in at:
                dst[in_at, c, :] = src[:, at[v], :]
            else:
                dst[i[v], c, :] = 0.0


def _shared_columns(forms: list[BlockForm], outs: list[int]) -> tuple[list[int], np.ndarray]:
    """The columns of a table of ``forms`` over ``outs``: outputs share one where they share
    one in every form (an output a form leaves alone shares none). Returns each column's first
    output and each output's column."""
    sign = [tuple(int(f.cols[k]) if (k := _index(f.outs, v)) is not None else ("keep", v)
                  for f in forms) for v in outs]
    column: dict[tuple, int] = {}
    cols = np.array([column.setdefault(s, len(column)) for s in sign], dtype=np.intp)
    heads = [outs[int(np.nonzero(cols == c)[0][0])] for c in range(len(column))]
    return heads, cols


def _index(a: np.ndarray, v: int) -> int | None:
    at = np.nonzero(a == v)[0]
    return int(at[0]) if len(at) else None


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """The increasing indices ``rows`` as runs of consecutive ones: ``(lo, hi, at)`` with
    ``rows[at:at + hi - lo] == range(lo, hi)``."""
    cut = np.nonzero(np.diff(rows) != 1)[0] + 1
    starts, ends = [0, *cut.tolist()], [*cut.tolist(), len(rows)]
    return [(int(rows[a]), int(rows[a]) + b - a, a) for a, b in zip(starts, ends) if b > a]


class StageTable:
    """Every block's max-plus form for every stage row. Rows are grouped by the structure of
    their layer templates (``groups``: (rows, planner, cost context) each); a block is built,
    costed and run once per group and its forms gathered into one table per block key (over
    the union of the groups' variables, copied run by run of consecutive rows). ``whole``, when
    given, is the one group of every row: a block whose templates take the same branches on
    every row (no :class:`~simulator.search.columns.BranchError`; e.g. the optimizer's) is
    built once on it."""

    def __init__(self, groups, rows: int, serial: bool, whole=None,
                 overlap_gather: bool = False) -> None:
        self.groups, self.rows, self.serial, self.whole = groups, rows, serial, whole
        self.overlap_gather = overlap_gather  # ShardingSpec.overlap_param_gather
        self._full: dict[tuple, BlockForm] = {}

    def _parts(self, key: tuple) -> list[tuple[np.ndarray, BlockForm]]:
        """(rows, the block's form on them) per group (or for :attr:`whole`)."""
        if self.whole is not None:
            try:
                return [self._part(key, *self.whole)]
            except BranchError:
                pass
        return [self._part(key, *g) for g in self.groups]

    def _part(self, key: tuple, rows: np.ndarray, planner, ctx) -> tuple[np.ndarray, BlockForm]:
        block = planner.block(key)
        cost_blocks([block], ctx, self.serial, (len(rows),))
        return rows, block_form(block, len(rows), ctx.per_row)

    def full(self, key: tuple) -> BlockForm:
        """Block ``key``'s form on every stage row (built once)."""
        if key not in self._full:
            parts = self._parts(key)
            whole = len(parts) == 1 and len(parts[0][0]) == self.rows  # its rows, in order
            self._full[key] = parts[0][1] if whole else self._gather(parts)
        return self._full[key]

    def _gather(self, parts: list[tuple[np.ndarray, BlockForm]]) -> BlockForm:
        """One form from the groups' ``(rows, form)``: over the union of their variables, an
        output a group leaves alone keeping its value."""
        outs = np.unique(np.concatenate([f.outs for _, f in parts]))
        changed_everywhere = set.intersection(*(set(f.outs.tolist()) for _, f in parts))
        keep = [v for v in outs.tolist() if v not in changed_everywhere]
        ins = np.unique(np.concatenate([f.ins for _, f in parts] + [np.array(keep, np.intp)]))
        heads, cols = _shared_columns([f for _, f in parts], outs.tolist())
        M = np.empty((len(ins), len(heads), self.rows))
        out = BlockForm(outs, ins, M, np.zeros(self.rows), {}, np.zeros(self.rows), cols)
        for rows, f in parts:
            _place(M, f, heads, ins, _runs(rows))
            out.busy[rows], out.opt[rows] = f.busy, f.opt
            if f.gather is not None:
                if out.gather is None:
                    out.gather = np.zeros(self.rows)
                out.gather[rows] = f.gather
            for axis, v in f.links.items():
                out.links.setdefault(axis, np.zeros(self.rows))[rows] = v
        return out

    def time(self, kinds: tuple[bool, ...], first: bool, last: bool, rows,
             remats: np.ndarray) -> StageTime:
        """StageTime of a rank holding layers of ``kinds`` (in order), at stage rows ``rows``
        (indices or a slice) under each remat policy of ``remats`` (codes into REMATS): fields
        ``(remats, rows)``. The state starts with every stream free at 0 and every register
        unset. The steps before the first backward do not depend on the remat policy: they run
        once for all policies."""
        planner = self.groups[0][1]
        per = [[st.block.key for st in stage_steps(planner, kinds, first, last, remat=REMATS[r])]
               for r in remats]
        split = next(i for i, k in enumerate(per[0]) if k[0] == "bwd")
        forms = {k: self.full(k).take(rows) for keys in per for k in dict.fromkeys(keys)}
        n_rows = len(forms[per[0][0]].busy)
        x = np.full((len(STATE), n_rows), NEG)
        x[:_N_STREAMS] = 0.0
        for pattern, n in runs(per[0][:split]):
            x = apply_t([forms[k] for k in pattern], x, n)
        out = StageTime(*(np.zeros((len(remats), n_rows)) for _ in range(5)))
        for r, keys in enumerate(per):
            y = x
            for pattern, n in runs(keys[split:]):
                y = apply_t([forms[k] for k in pattern], y, n)
            links: dict[str, np.ndarray] = {}
            for k, c in Counter(keys).items():
                f = forms[k]
                out.busy[r] += c * f.busy
                out.opt[r] += c * f.opt
                for axis, v in f.links.items():
                    links[axis] = links.get(axis, 0.0) + c * v
            t_raw = y[_AT["t_mb"]]
            floor = np.max(np.stack(list(links.values())), axis=0) if links else 0.0
            end = y[:_N_STREAMS].max(axis=0)
            out.tail[r] = end - t_raw
            out.t_fwd[r] = y[_AT["t_fwd"]]
            out.t_mb[r] = np.maximum(t_raw, floor)
            if self.overlap_gather:
                gathers = [c * forms[k].gather for k, c in Counter(keys).items()
                           if forms[k].gather is not None]
                if gathers:
                    out.tail[r] -= param_gather_hidden(sum(gathers), out.t_fwd[r], len(kinds),
                                                       end - y[_AT[COMPUTE]])
        return out


__all__ = ["ColumnCost", "StageTable", "StageTime", "block_form"]
