"""One pipeline rank's micro-batch for many configurations at once: the step graph's own plan
(:mod:`simulator.graph.plan`), costed on columns and timed by the one list scheduler
(:func:`simulator.graph.schedule.run`) in max-plus algebra.

The scheduler only takes ``max`` and ``+``. So the state after a block -- when each stream is
free, each register, and the marks ``t_fwd``/``t_mb`` (the end of the last forward / last
micro-batch compute op) -- is ``x'_i = max_j (M_ij + x_j)`` of the state ``x`` before it: a
max-plus matrix ``M`` per block and configuration, found by running the block once with each
variable it reads as an unknown (a max-plus basis vector; ``-inf`` where an output does not
depend on it). It is kept sparse (:class:`BlockForm`: the variables the block changes, from
those it reads). A rank's steps apply in order; ``n`` identical layers (or alternating kinds)
reach a periodic regime within a few layers, after which every clock advances by a fixed shift
per layer (:func:`apply`, with its proof; rows not there yet are finished by repeated squaring),
so a 100-layer rank costs a few products instead of 100 layers of ops. Nothing of the graph's
wiring is restated here: change the plan and both paths move together.

From the final state ``x``: ``t_fwd``, ``t_mb = max(x[t_mb], link floor)``, ``tail =
max_streams x - x[t_mb]`` (gradient sync, optimizer and weight gather after the last
micro-batch) -- as :func:`simulator.predict._time_stage` reads them off the scheduled graph.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from simulator.cost.compute import ComputeModel
from simulator.graph.cost import cost_blocks
from simulator.graph.ops import COMPUTE, STREAMS, OpKind
from simulator.graph.periodic import runs
from simulator.graph.plan import MICROBATCH, REGISTERS, link_axis, stage_steps
from simulator.graph.schedule import Clock, run
from simulator.search.columns import BranchError
from simulator.search.placements import COLUMN, DEDUP_COLUMN
from simulator.search.space import REMATS

MARKS = ("t_fwd", "t_mb")
NEG = -np.inf


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


#: The state: each stream's clock (:data:`simulator.graph.ops.STREAMS`), the registers, the marks.
STATE = (*STREAMS, *REGISTERS, *MARKS)
_AT = {v: i for i, v in enumerate(STATE)}
_N_STREAMS = len(STREAMS)


@dataclass
class BlockForm:
    """A block on columns, as a sparse max-plus matrix: the state variables it changes
    (``outs``, indices into STATE) as ``x'_o = max_j M[j, cols[o], :] + x_ins[j]`` of those it
    reads (``ins``); every other variable keeps its value. ``M`` is stored ins x columns x
    rows, so a step runs over contiguous rows (the state too: variable-major, :meth:`step_t`),
    with one column for outputs equal on every row (``cols``: each output's column; e.g. the
    compute stream, ``x`` and ``t_mb`` all end at the layer's last compute op). Its additive
    sums per row: compute-stream ``busy`` seconds of the micro-batch, collective seconds per
    axis on the links (``links``), ``opt`` optimizer seconds."""

    outs: np.ndarray
    ins: np.ndarray
    M: np.ndarray
    busy: np.ndarray
    links: dict[str, np.ndarray]
    opt: np.ndarray
    cols: np.ndarray
    spans: tuple | None = None  # per input, [lo, hi) of the columns it reaches: see reaches()
    alike: tuple | None = None  # inputs with equal matrices, in groups: see same_inputs()

    @property
    def rows(self) -> int:
        return self.M.shape[2]

    def _put(self, x: np.ndarray, new: np.ndarray) -> np.ndarray:
        """The state ``x`` (S x rows) with the outputs set from their columns ``new``
        (columns x rows), as a new array: one row copied per variable."""
        y = np.empty_like(x)
        col = dict(zip(self.outs.tolist(), self.cols.tolist()))
        for v in range(len(x)):
            y[v] = new[col[v]] if v in col else x[v]
        return y

    def reaches(self) -> tuple:
        """Per input ``j``, the range ``[lo, hi)`` of columns holding every column that is
        finite in some row (``M[j, o] > -inf``; ``(0, 0)`` for none): outside it ``M[j]``
        is -inf on every row and adds nothing to a maximum. Found once; a form's rows
        (:meth:`take`) inherit it (a superset of theirs)."""
        if self.spans is None:
            fin = np.isfinite(self.M).any(axis=2)
            spans = []
            for f in fin:
                at = np.nonzero(f)[0]
                spans.append((int(at[0]), int(at[-1]) + 1) if len(at) else (0, 0))
            self.spans = tuple(spans)
        return self.spans

    def same_inputs(self) -> tuple:
        """The inputs in groups whose rows of ``M`` are equal on every row (e.g. the compute
        stream and the register ``x``, which the layer's first op waits for together): since
        ``max(M_j + x_j, M_j + x_k) = M_j + max(x_j, x_k)`` exactly (rounding is monotone),
        a step reads one matrix per group. Found once; a form's rows keep it."""
        if self.alike is None:
            groups: dict[bytes, list[list[int]]] = {}
            for j in range(len(self.ins)):
                near = groups.setdefault(self.M[j, :, :4].tobytes(), [])
                for g in near:
                    if np.array_equal(self.M[g[0]], self.M[j]):
                        g.append(j)
                        break
                else:
                    near.append([j])
            self.alike = tuple(tuple(g) for gs in groups.values() for g in gs)
        return self.alike

    def _inputs(self, x: np.ndarray):
        """Per group of :meth:`same_inputs`: its first input and the state it reads (the
        group's latest)."""
        for g in self.same_inputs():
            v = x[self.ins[g[0]]]
            for j in g[1:]:
                v = np.maximum(v, x[self.ins[j]])
            yield g[0], v

    def take(self, rows) -> BlockForm:
        """The form at ``rows`` (a slice keeps a view: each (input, output) row of ``M``
        stays contiguous)."""
        M = self.M[:, :, rows]
        return BlockForm(self.outs, self.ins, M,
                         self.busy[rows], {a: v[rows] for a, v in self.links.items()},
                         self.opt[rows], self.cols, self.reaches(), self.same_inputs())

    def step(self, x: np.ndarray) -> np.ndarray:
        """The state after the block, per row (``x``: rows x S)."""
        return self.step_t(x.T).T

    def step_t(self, x: np.ndarray) -> np.ndarray:
        """:meth:`step` on the state variable-major (``x``: S x rows). Reading ``M`` is the
        cost (a step is bound by memory), so each input reads only the columns it reaches
        (:meth:`reaches`), and inputs with equal matrices read one (:meth:`same_inputs`)."""
        if not len(self.outs):
            return x.copy()
        M, spans, n = self.M, self.reaches(), self.M.shape[1]
        reads = sorted(self._inputs(x), key=lambda jv: spans[jv[0]] != (0, n))
        new = np.empty((n, self.rows))
        tmp = np.empty_like(new)
        first = spans[reads[0][0]] == (0, n)
        if not first:
            new.fill(NEG)
        for k, (j, xj) in enumerate(reads):
            lo, hi = spans[j]
            if k == 0 and first:
                np.add(M[j], xj, out=new)
            elif hi > lo:
                t = tmp[lo:hi]
                np.add(M[j, lo:hi], xj, out=t)
                np.maximum(new[lo:hi], t, out=new[lo:hi])
        return self._put(x, new)

    def reach_t(self, v: np.ndarray) -> np.ndarray:
        """Per row, ``max_j v_j`` over the ``j`` each variable depends on (``M_ij > -inf`` in
        the full matrix; ``v``: S x rows): :meth:`step_t` with every finite entry read as 0
        (``0 * M`` is 0 there and NaN at -inf, which ``fmax`` passes over)."""
        if not len(self.outs):
            return v.copy()
        M, spans = self.M, self.reaches()
        new = np.full((M.shape[1], self.rows), NEG)
        tmp = np.empty_like(new)
        with np.errstate(invalid="ignore"):
            for j, vj in self._inputs(v):
                lo, hi = spans[j]
                if hi > lo:
                    t = tmp[lo:hi]
                    np.multiply(M[j, lo:hi], 0.0, out=t)
                    np.add(t, vj, out=t)
                    np.fmax(new[lo:hi], t, out=new[lo:hi])
        return self._put(v, new)

    def _embed(self, fill, ident, values) -> np.ndarray:
        S = len(STATE)
        D = np.full((self.rows, S, S), fill, dtype=np.asarray(values).dtype)
        D[:, np.arange(S), np.arange(S)] = ident
        D[:, self.outs, :] = fill
        D[:, self.outs[:, None], self.ins[None, :]] = np.transpose(values, (2, 1, 0))
        return D

    def dense(self) -> np.ndarray:
        """The full max-plus matrix (rows x S x S)."""
        return self._embed(NEG, 0.0, self.M[:, self.cols])

class DenseForm:
    """A plain max-plus matrix (rows x S x S) with BlockForm's interface, for :func:`apply`."""

    def __init__(self, M: np.ndarray) -> None:
        self.M = M

    def step(self, x: np.ndarray) -> np.ndarray:
        return matvec(self.M, x)

    def step_t(self, x: np.ndarray) -> np.ndarray:
        return matvec(self.M, x.T).T

    def dense(self) -> np.ndarray:
        return self.M

    def reach_t(self, v: np.ndarray) -> np.ndarray:
        return DenseForm(np.where(np.isfinite(self.M), 0.0, NEG)).step_t(v)

    def take(self, rows) -> DenseForm:
        return DenseForm(self.M[rows])

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
    busy, links, opt = np.zeros(rows), {}, np.zeros(rows)
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
        if op.phase == "optimizer" and op.kind is not OpKind.COLLECTIVE:
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
                     np.array([_AT[v] for v in ins], dtype=np.intp), M, busy, links, opt, cols)


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


def maxplus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Max-plus product per row: ``(a b)_ij = max_k a_ik + b_kj`` (apply ``b``, then ``a``);
    one ``k`` at a time, so the temporaries stay the size of a matrix."""
    out = a[:, :, 0, None] + b[:, None, 0, :]
    tmp = np.empty_like(out)
    for k in range(1, a.shape[2]):
        np.add(a[:, :, k, None], b[:, None, k, :], out=tmp)
        np.maximum(out, tmp, out=out)
    return out


def matvec(M: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``M x`` per row: ``(M x)_i = max_j M_ij + x_j``."""
    return np.max(M + x[:, None, :], axis=2)


def power(M: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """``M^n x`` per row by repeated squaring (exact for any matrix)."""
    while n:
        if n & 1:
            x = matvec(M, x)
        n >>= 1
        if n:
            M = maxplus(M, M)
    return x


#: Repeats of a pattern before its periodic regime is tested (:func:`apply`).
TRANSIENT = 2
#: Runs of at most this many blocks are applied one block at a time (:func:`apply`): the
#: periodic regime's test costs about as much as a few more steps.
DIRECT = 8
#: Shifts compared up to float rounding: relative to the clocks' size.
SAME = 1e-12


def apply(pattern: list, x: np.ndarray, n: int = 1) -> np.ndarray:
    """``x`` after ``n`` repeats of the blocks ``pattern`` (BlockForms, or max-plus matrices
    rows x S x S, applied in order), per row.

    Exact, and in ``TRANSIENT + 2`` repeats for the rows that reach a periodic regime (a run
    of at most :data:`DIRECT` blocks is applied block by block). With
    ``P`` the repeat's matrix and ``x_{k+1} = P x_k``: if two repeats shift every variable
    alike, ``x_{K+2} - x_{K+1} = x_{K+1} - x_K = d``, and no variable is driven by a faster
    one (``d_j <= d_i`` wherever ``P_ij > -inf``), then ``x_{K+2+m} = x_{K+2} + m d`` for all
    ``m``. Proof, one step (then induction): ``x_{k+1,i} = max_j P_ij + x_{k,j}`` grows by at
    most ``max d_j <= d_i``; and the term ``j*`` that attains ``x_{K+2,i}`` had
    ``x_{K+1,i} >= P_ij* + x_{K,j*} = x_{K+2,i} - d_j*``, so ``d_j* >= d_i``, hence
    ``= d_i``, and it lifts ``x_{K+3,i}`` by ``d_i`` too. That is a rank's layer recurrence
    in steady state: the clocks advance one layer's time per layer, a stream that falls ever
    further behind (gradient reductions slower than the backward) at its own rate. Other rows
    (a transient longer than ``TRANSIENT``) are finished by repeated squaring of ``P``. Shifts
    are compared up to float rounding (:data:`SAME`). The drivers' test reads, per variable
    ``i``, ``max d_j`` over ``P_ij > -inf``: the pattern once more with every finite entry as
    0 (:meth:`BlockForm.reach_t`; in max-plus the product of such 0/-inf matrices is finite
    exactly where ``P`` is).
    """
    return apply_t(pattern, np.ascontiguousarray(x.T), n).T


def apply_t(pattern: list, x: np.ndarray, n: int = 1) -> np.ndarray:
    """:func:`apply` on the state variable-major (``x``: S x rows, each variable's values
    contiguous), as :meth:`StageTable.time` keeps it."""
    pattern = [f if hasattr(f, "step") else DenseForm(f) for f in pattern]

    def once(v):
        for f in pattern:
            v = f.step_t(v)
        return v

    if n <= TRANSIENT + 2 or n * len(pattern) <= DIRECT:
        for _ in range(n):
            x = once(x)
        return x
    x0 = x
    for _ in range(TRANSIENT):
        x = once(x)
    y = once(x)
    z = once(y)
    fin = np.isfinite(x)
    same = (fin == np.isfinite(y)) & (fin == np.isfinite(z))
    d1 = np.where(fin, y - np.where(fin, x, 0.0), 0.0)
    d2 = np.where(fin, z - np.where(fin, y, 0.0), 0.0)
    tol = SAME * np.max(np.where(fin, np.abs(z), 0.0), axis=0, keepdims=True)
    ok = np.all(same & (np.abs(d2 - d1) <= tol), axis=0)
    # a variable that no block of the pattern changes is driven by nothing; rows whose slower
    # variables are all such need no reach check (every other one moves at the fastest rate)
    touched = np.zeros((x.shape[0], 1), dtype=bool)
    for f in pattern:
        touched[f.outs if hasattr(f, "outs") else slice(None)] = True
    slow = fin & (d2 < np.max(np.where(fin, d2, -np.inf), axis=0, keepdims=True) - tol)
    cand = np.nonzero(ok & np.any(slow & touched, axis=0))[0]
    if len(cand):
        top = np.where(fin, d2, -np.inf)  # per variable, the fastest shift among its drivers
        for f in pattern:
            top = f.reach_t(top)
        faster = fin & (top > d2 + tol)
        ok[cand] = ~np.any(faster[:, cand], axis=0)
    out = np.where(fin, z + (n - TRANSIENT - 2) * d2, z)
    bad = np.nonzero(~ok)[0]
    if len(bad):
        P = pattern[0].take(bad).dense()
        for f in pattern[1:]:
            P = maxplus(f.take(bad).dense(), P)
        out[:, bad] = power(P, x0[:, bad].T, n).T
    return out


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

    def __init__(self, groups, rows: int, serial: bool, whole=None) -> None:
        self.groups, self.rows, self.serial, self.whole = groups, rows, serial, whole
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
            out.tail[r] = y[:_N_STREAMS].max(axis=0) - t_raw
            out.t_fwd[r] = y[_AT["t_fwd"]]
            out.t_mb[r] = np.maximum(t_raw, floor)
        return out


__all__ = ["BlockForm", "ColumnCost", "DenseForm", "StageTable", "StageTime", "block_form",
           "maxplus", "apply", "apply_t"]
