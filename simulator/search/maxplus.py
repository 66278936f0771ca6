"""Max-plus algebra on columns of configurations: a block's sparse form (:class:`BlockForm`:
``x'_o = max_j M[j, o] + x_j`` over the variables it reads and changes), plain matrices, the
product, powers and :func:`apply`, which runs a repeated pattern of blocks to its periodic regime
(with the proof). The state is every stream's clock, the registers and the marks
(:data:`STATE`); :mod:`simulator.search.stage` builds the forms from the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.graph.ops import STREAMS
from simulator.graph.periodic import SAME
from simulator.graph.plan import REGISTERS

MARKS = ("t_fwd", "t_mb")
NEG = -np.inf


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
    axis on the links (``links``), ``opt`` optimizer seconds, ``gather`` seconds of the
    optimizer's weight all-gathers (None: none)."""

    outs: np.ndarray
    ins: np.ndarray
    M: np.ndarray
    busy: np.ndarray
    links: dict[str, np.ndarray]
    opt: np.ndarray
    cols: np.ndarray
    spans: tuple | None = None  # per input, [lo, hi) of the columns it reaches: see reaches()
    alike: tuple | None = None  # inputs with equal matrices, in groups: see same_inputs()
    gather: np.ndarray | None = None  # seconds of the optimizer's weight all-gathers (or None)

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
                         self.opt[rows], self.cols, self.reaches(), self.same_inputs(),
                         None if self.gather is None else self.gather[rows])

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
    shift = np.where(fin, d2, -np.inf)
    slow = fin & (d2 < np.max(shift, axis=0, keepdims=True) - tol)
    cand = np.nonzero(ok & np.any(slow & touched, axis=0))[0]
    if len(cand):
        top = shift  # per variable, the fastest shift among its drivers
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


__all__ = ["BlockForm", "DenseForm", "MARKS", "NEG", "STATE", "apply", "apply_t", "matvec",
           "maxplus", "power"]
