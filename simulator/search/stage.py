"""One pipeline rank's micro-batch for many configurations at once: the step graph's own plan
(:mod:`simulator.graph.plan`), costed on columns and timed by the one list scheduler
(:func:`simulator.graph.schedule.run`) in max-plus algebra.

The scheduler only takes ``max`` and ``+``. So the state after a block -- when each stream is
free, each register, and the marks ``t_fwd``/``t_mb`` (the end of the last forward / last
micro-batch compute op) -- is ``x'_i = max_j (M_ij + x_j)`` of the state ``x`` before it: a
max-plus matrix ``M`` per block and configuration, found by running the block once with each
state variable as an unknown (a max-plus basis vector; ``-inf`` where it does not depend on
it). A rank's steps compose by max-plus products, ``n`` identical layers by ``M^n`` (repeated
squaring), so a 100-layer rank costs a few matrix products instead of 100 layers of ops.
Nothing of the graph's wiring is restated here: change the plan and both paths move together.

From the final state ``x``: ``t_fwd``, ``t_mb = max(x[t_mb], link floor)``, ``tail =
max_streams x - x[t_mb]`` (gradient sync, optimizer and weight gather after the last
micro-batch) -- as :func:`simulator.predict._time_stage` reads them off the scheduled graph.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from simulator.cost.compute import ComputeModel
from simulator.graph.cost import cost_blocks
from simulator.graph.ops import COMPUTE, STREAMS, OpKind
from simulator.graph.plan import MICROBATCH, REGISTERS, _Planner, link_axis, stage_steps
from simulator.graph.schedule import Clock, run
from simulator.search.placements import COLUMN, DEDUP_COLUMN
from simulator.search.space import REMATS

MARKS = ("t_fwd", "t_mb")
NEG = -np.inf


@dataclass(frozen=True)
class ColumnCost:
    """The cost step's context on columns: ``compute`` (its formulas take arrays) and each
    collective as ``alpha * bytes + beta`` of its placement (``coef``: rows x columns x 2,
    :func:`simulator.search.placements.coefficients`), 0 for no bytes."""

    compute: ComputeModel
    coef: np.ndarray

    def collective(self, op) -> np.ndarray:
        col = DEDUP_COLUMN if op.dedup else COLUMN[(op.axis, op.collective)]
        a, b = self.coef[:, col].T
        nbytes = np.broadcast_to(np.asarray(op.nbytes, dtype=float), a.shape)
        return np.where(nbytes > 0, a * nbytes + b, 0.0)


@dataclass
class StageTime:
    """Per row: ``t_fwd`` (forward part of a micro-batch), ``t_mb``, ``tail``, ``busy``
    (compute-stream seconds per micro-batch) and ``opt`` (optimizer update)."""

    t_fwd: np.ndarray
    t_mb: np.ndarray
    tail: np.ndarray
    busy: np.ndarray
    opt: np.ndarray


@dataclass
class BlockForm:
    """A block on columns: its max-plus matrix ``M`` (rows x S x S, output by input over the
    state variables) and its additive sums per row: compute-stream ``busy`` seconds of the
    micro-batch, collective seconds per axis on the links (``links``), ``opt`` optimizer."""

    M: np.ndarray
    busy: np.ndarray
    links: dict[str, np.ndarray]
    opt: np.ndarray

    def take(self, rows: np.ndarray) -> BlockForm:
        return BlockForm(self.M[rows], self.busy[rows], {a: v[rows] for a, v in self.links.items()},
                         self.opt[rows])


#: The state: each stream's clock (:data:`simulator.graph.ops.STREAMS`), the registers, the marks.
STATE = (*STREAMS, *REGISTERS, *MARKS)


def block_form(block, names: tuple[str, ...], rows: int) -> BlockForm:
    """Run ``block`` (costed, durations ``(rows, 1)``) once on the unknowns ``names``."""
    S = len(names)
    basis = np.full((S, S), NEG)
    np.fill_diagonal(basis, 0.0)
    at = {v: basis[i][None, :] for i, v in enumerate(names)}
    free = {v: at[v] for v in names if v not in REGISTERS and v not in MARKS}
    end = {"@" + r: at[r] for r in REGISTERS}
    clock = Clock.arrays(free, end, np.full((1, S), NEG))
    unknown = {op.stream for op in block.ops} - set(free)
    if unknown:
        raise ValueError(f"block {block.key} uses streams {sorted(unknown)} missing from "
                         "simulator.graph.ops.STREAMS")
    run(((op.name, op, op.deps) for op in block.ops), clock)
    out = dict(at)
    out.update(free)
    for r in REGISTERS:
        out[r] = end["@" + r]
    for reg, name in block.writes:
        out[reg] = end[name] if name else clock.none
    for reg, ops in block.accumulates:
        for name in ops:
            out[reg] = np.maximum(out[reg], end[name])
    busy, links, opt = np.zeros(rows), {}, np.zeros(rows)
    for op in block.ops:
        dur = np.broadcast_to(op.duration, (rows, 1))[:, 0]
        if op.stream == COMPUTE and op.phase in MICROBATCH:
            e = end[op.name]
            for mark in ("t_mb", "t_fwd") if op.phase == "fwd" else ("t_mb",):
                out[mark] = e if op.only is None else np.where(op.only[:, None], e, out[mark])
            if op.kind is not OpKind.COLLECTIVE:
                busy = busy + dur
        axis = link_axis(op)
        if axis is not None:
            links[axis] = links.get(axis, 0.0) + dur
        if op.phase == "optimizer" and op.kind is not OpKind.COLLECTIVE:
            opt = opt + dur
    M = np.stack([np.broadcast_to(out[v], (rows, S)) for v in names], axis=1)
    return BlockForm(M, busy, links, opt)


def maxplus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Max-plus product per row: ``(a b)_ij = max_k a_ik + b_kj`` (apply ``b``, then ``a``);
    one ``k`` at a time, so the temporaries stay the size of a matrix."""
    out = a[:, :, 0, None] + b[:, None, 0, :]
    tmp = np.empty_like(out)
    for k in range(1, a.shape[2]):
        np.add(a[:, :, k, None], b[:, None, k, :], out=tmp)
        np.maximum(out, tmp, out=out)
    return out


def apply(M: np.ndarray, x: np.ndarray, n: int = 1) -> np.ndarray:
    """``M^n x`` per row (``x``: rows x S): ``n`` products with the vector while that is
    cheaper than squaring the matrix (``S`` times the work of one), then by repeated squaring."""
    if n <= 2 * M.shape[1]:
        for _ in range(n):
            x = np.max(M + x[:, None, :], axis=2)
        return x
    while n:
        if n & 1:
            x = np.max(M + x[:, None, :], axis=2)
        n >>= 1
        if n:
            M = maxplus(M, M)
    return x


def runs(seq: list) -> list[tuple[tuple, int]]:
    """``seq`` as (pattern, repeats) runs, trying patterns of up to 4 items (so alternating
    dense/MoE layers compose as one repeated pair)."""
    out, i = [], 0
    while i < len(seq):
        best = (1, 1)
        for p in range(1, 5):
            pat = seq[i:i + p]
            if len(pat) < p:
                break
            n = 1
            while seq[i + n * p:i + (n + 1) * p] == pat:
                n += 1
            if n * p > best[0] * best[1] and n > 1:
                best = (p, n)
        p, n = best
        out.append((tuple(seq[i:i + p]), n))
        i += p * n
    return out


class StageTable:
    """Every block's max-plus form for every stage row. Rows are grouped by the structure of
    their layer templates (``groups``: (rows, planner, cost context) each); a block is built,
    costed and run once per group and its forms scattered into one table per block key."""

    def __init__(self, groups, rows: int, serial: bool) -> None:
        self.groups, self.rows, self.serial = groups, rows, serial
        self._full: dict[tuple, BlockForm] = {}

    def full(self, key: tuple) -> BlockForm:
        if key not in self._full:
            S = len(STATE)
            out = BlockForm(np.full((self.rows, S, S), NEG), np.zeros(self.rows), {},
                            np.zeros(self.rows))
            for rows, planner, ctx in self.groups:
                block = planner.block(key)
                cost_blocks([block], ctx, self.serial, (len(rows), 1))
                f = block_form(block, STATE, len(rows))
                out.M[rows], out.busy[rows], out.opt[rows] = f.M, f.busy, f.opt
                for axis, v in f.links.items():
                    out.links.setdefault(axis, np.zeros(self.rows))[rows] = v
            self._full[key] = out
        return self._full[key]

    def form(self, key: tuple, rows: np.ndarray, remat: np.ndarray) -> BlockForm:
        """The form of ``key`` at stage rows ``rows``; a backward block (key ``("bwd", kind,
        None)``) per row under that row's remat policy (codes into REMATS)."""
        if key[0] != "bwd":
            return self.full(key).take(rows)
        parts = [self.full(key[:2] + (r,)) for r in REMATS]
        pick = lambda f: np.choose(remat, [getattr(p, f)[rows] for p in parts])  # noqa: E731
        M = np.stack([p.M[rows] for p in parts])[remat, np.arange(len(rows))]
        axes = {a for p in parts for a in p.links}
        links = {a: np.choose(remat, [p.links.get(a, np.zeros(self.rows))[rows] for p in parts])
                 for a in axes}
        return BlockForm(M, pick("busy"), links, pick("opt"))

    def time(self, kinds: tuple[bool, ...], first: bool, last: bool, rows: np.ndarray,
             remat: np.ndarray) -> StageTime:
        """StageTime of a rank holding layers of ``kinds`` (in order), at stage rows ``rows``
        under remat policies ``remat``."""
        planner = self.groups[0][1]
        keys = [st.block.key for st in stage_steps(planner, kinds, first, last, remat="none")]
        keys = [k[:2] + (None,) if k[0] == "bwd" else k for k in keys]
        forms = {k: self.form(k, rows, remat) for k in dict.fromkeys(keys)}
        x = np.full((len(rows), len(STATE)), NEG)
        x[:, :len(STREAMS)] = 0.0
        for pattern, n in runs(keys):
            M = forms[pattern[0]].M
            for k in pattern[1:]:
                M = maxplus(forms[k].M, M)
            x = apply(M, x, n)
        counts = Counter(keys)
        busy = sum(counts[k] * f.busy for k, f in forms.items())
        opt = sum(counts[k] * f.opt for k, f in forms.items())
        links: dict[str, np.ndarray] = {}
        for k, f in forms.items():
            for axis, v in f.links.items():
                links[axis] = links.get(axis, 0.0) + counts[k] * v
        i = {v: j for j, v in enumerate(STATE)}
        t_raw = x[:, i["t_mb"]]
        floor = np.max(np.stack(list(links.values())), axis=0) if links else 0.0
        tail = x[:, :len(STREAMS)].max(axis=1) - t_raw
        return StageTime(x[:, i["t_fwd"]], np.maximum(t_raw, floor), tail, busy, opt)


__all__ = ["ColumnCost", "StageTable", "StageTime", "block_form", "maxplus", "apply", "runs"]
