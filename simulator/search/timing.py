"""Step time of every row of a candidate table: each rank's micro-batch from the plan in
max-plus form (:mod:`simulator.search.stage`), then the pipeline schedule on columns
(:func:`simulator.graph.pipeline.pipeline_finish`). Step composition as in
:func:`simulator.predict.predict_job`: ``m t_mb + tail`` without a pipeline,
``max_r(finish_r + tail_r)`` with one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.cost.collectives import Collective
from simulator.cost.compute import ComputeModel
from simulator.cost.formulas import (dedup_routing, pipeline_send_bytes, stage_layers,
                                     tokens_per_device)
from simulator.graph.ops import Op, OpKind
from simulator.graph.pipeline import pipeline_finish
from simulator.graph.plan import Planner
from simulator.search.codes import row_codes, small_unique
from simulator.search.columns import dims_columns, structure_key
from simulator.search.placements import coefficients
from simulator.search.space import SCHEDULES
from simulator.search.stage import ColumnCost, StageTable, StageTime
from simulator.search.table import AXIS, Candidates


@dataclass
class StepTimes:
    """Per row: step time, and its parts on the rank that sets it (compute busy time including
    the optimizer, pipeline bubble, the rest = exposed communication)."""

    step_s: np.ndarray
    compute_s: np.ndarray
    bubble_s: np.ndarray

    @property
    def exposed_comm_s(self) -> np.ndarray:
        return self.step_s - self.compute_s - self.bubble_s


def rank_classes(model, pp: int, v: int) -> list[tuple[tuple[bool, ...], bool, bool]]:
    """(layer kinds in order, first, last) per pipeline rank (:func:`stage_layers`)."""
    return [(tuple(model.is_moe_layer(i) for i in layers), r == 0, r == pp - 1)
            for r, layers in enumerate(stage_layers(model.n_layers, pp, v))]


def _dedup(space) -> tuple[int, ...] | None:
    """:func:`dedup_routing` when the job's MoE dispatch is deduplicated (DeepEP), else None."""
    moe = space.model.moe
    if moe is None or space.base.moe_dispatcher != "deepep":
        return None
    return dedup_routing(moe)


def groups(c: Candidates):
    """Row indices per (pipeline, virtual stages): one integer key ``pp * span + v`` with
    ``span`` above every ``v`` of the table, so any layer count decodes to its own pair."""
    span = int(c.virtual.max(initial=0)) + 1
    key = c.axis("pipeline").astype(np.int64) * span + c.virtual
    uniq, _, inv = small_unique(key)
    for g, k in enumerate(uniq.tolist()):
        yield k // span, k % span, np.nonzero(inv == g)[0]


def shape_codes(mesh: np.ndarray, micro_batch: np.ndarray) -> np.ndarray:
    """Per row, :func:`row_codes` of its shape: its mesh sizes and micro-batch, all that a
    plan's FLOPs and bytes depend on (:class:`~simulator.graph.dims.Dims`)."""
    return row_codes(*np.asarray(mesh).T, micro_batch)


class _StageRows:
    """The rows of a table that a rank's time tells apart -- stage rows: distinct shapes (mesh
    sizes, micro-batch) and collective coefficients (placements with equal alpha and beta for
    every collective are one) -- and their pipeline send time."""

    def __init__(self, c: Candidates) -> None:
        nmb = int(c.micro_batch.max(initial=0)) + 1
        key = c.placement.astype(np.int64) * nmb + c.micro_batch
        _, first, inv = small_unique(key)  # a placement's factors fix its mesh sizes
        used, _, where = small_unique(c.placement[first])
        coef = coefficients(c.placements, used, _dedup(c.space))
        rows = np.ascontiguousarray(coef.reshape(len(used), coef[0].size if len(used) else 1))
        _, alike = np.unique(rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize)))
                             .ravel(), return_inverse=True)
        alike = alike.ravel()[where.ravel()]  # per row of first: its placement's class
        shape = shape_codes(c.mesh[first], c.micro_batch[first])
        _, merged, inv2 = small_unique(shape * (int(alike.max(initial=0)) + 1) + alike)
        #: whether placements merged: only then can two rows share a step time
        self.merged = len(merged) < len(first)
        first, inv = first[merged], inv2.ravel()[inv.ravel()]
        # pipeline size first: each pipeline size's stage rows are one contiguous range, and
        # within it each structure group's (so a block's forms gather by ranges of rows)
        self.space = c.space
        self.mesh, self.micro_batch = c.mesh[first], c.micro_batch[first]
        order = np.lexsort((self.structure(), c.axis("pipeline")[first]))
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        first, self.of_row = first[order], rank[inv]
        self.mesh, self.micro_batch = c.mesh[first], c.micro_batch[first]
        self.coef = coef[where.ravel()[merged[order]]]
        self.cm = ComputeModel.from_profile(c.space.hardware, c.space.base.precision)
        cols = self.cols(slice(None))
        send = Op("send", OpKind.COLLECTIVE, collective=Collective.PERMUTE, axis="pipeline",
                  nbytes=pipeline_send_bytes(self.micro_batch, c.space.seq_len, cols["seq"],
                                             c.space.model.d_model, cols["model"]))
        self.send = ColumnCost(self.cm, self.coef).collective(send)
        self._table = None
        self._shapes = None

    def cols(self, idx) -> dict[str, np.ndarray]:
        return {a: self.mesh[idx, i] for a, i in AXIS.items()}

    def structure(self) -> np.ndarray:
        """:func:`structure_key` of every stage row."""
        cols = self.cols(slice(None))
        return structure_key(self.space.model, cols,
                             tokens_per_device(self.micro_batch, self.space.seq_len, cols["seq"]))

    def table(self) -> StageTable:
        """Every block's form for every stage row, grouped by :func:`structure_key` (and, for
        the blocks whose templates branch alike on every row, one group of all rows)."""
        if self._table is None:
            key = self.structure()
            groups = [self._group(np.nonzero(key == code)[0]) for code in np.unique(key)]
            whole = self._group(np.arange(len(key))) if len(groups) > 1 else None
            self._table = StageTable(groups, len(self.micro_batch),
                                     self.space.hardware.chip.collectives_use_compute, whole,
                                     self.space.base.overlap_param_gather)
        return self._table

    def _group(self, rows: np.ndarray):
        """(rows, planner, cost context) of the stage rows ``rows``: the plan is built on their
        distinct shapes (:meth:`shapes`), and costed per row."""
        sp = self.space
        _, first, shape = small_unique(self.shapes()[rows])
        at = rows[first]
        d = dims_columns(sp, self.cols(at), self.micro_batch[at])
        return (rows, Planner(sp.model, sp.base, d),
                ColumnCost.on_shapes(self.cm, self.coef[rows], shape.ravel()))

    def shapes(self) -> np.ndarray:
        """Per stage row, :func:`shape_codes`."""
        if self._shapes is None:
            self._shapes = shape_codes(self.mesh, self.micro_batch)
        return self._shapes


def step_times(c: Candidates, progress=None) -> StepTimes:
    """Step time of every row (rows need not fit in memory); ``progress(fraction)`` is called
    as pipeline sizes finish. Each rank class's micro-batch is solved once per (stage row,
    remat) and shared by every configuration with that stage row (any virtual stages); rows
    alike in stage row, remat, schedule and virtual stages (placements merged into one stage
    row: :class:`_StageRows`) are timed once."""
    sr = _StageRows(c)
    if sr.merged:
        _, first, inv = small_unique(row_codes(sr.of_row, c.remat, c.schedule, c.virtual))
        if len(first) < len(c):
            t, inv = _step_times(c.take(first), sr, sr.of_row[first], progress), inv.ravel()
            return StepTimes(t.step_s[inv], t.compute_s[inv], t.bubble_s[inv])
    return _step_times(c, sr, sr.of_row, progress)


def _step_times(c: Candidates, sr: _StageRows, of_row: np.ndarray, progress) -> StepTimes:
    """:func:`step_times` of the rows of ``c``, whose stage rows (of ``sr``) are ``of_row``."""
    table = sr.table()
    out = StepTimes(np.zeros(len(c)), np.zeros(len(c)), np.zeros(len(c)))
    pipe, m = c.axis("pipeline"), c.microbatches
    done = 0
    for pp in np.unique(pipe):
        sel = np.nonzero(pipe == pp)[0]
        rows, _, row_at = small_unique(of_row[sel])
        rows = slice(int(rows[0]), int(rows[-1]) + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows
        remats, _, remat_at = small_unique(c.remat[sel])
        row_at, remat_at = row_at.ravel(), remat_at.ravel()
        layouts = {int(v): rank_classes(c.space.model, int(pp), int(v))
                   for v in np.unique(c.virtual[sel])}
        classes = dict.fromkeys(cls for layout in layouts.values() for cls in layout)
        times = {cls: table.time(*cls, rows, remats) for cls in classes}
        for v, layout in layouts.items():
            part = np.nonzero(c.virtual[sel] == v)[0]
            idx = sel[part]
            ra, rw = remat_at[part], row_at[part]
            per = {cls: StageTime(*(getattr(times[cls], f)[ra, rw] for f in
                                    ("t_fwd", "t_mb", "tail", "busy", "opt")))
                   for cls in dict.fromkeys(layout)}
            ranks = [per[cls] for cls in layout]
            _time_group(ranks, m[idx], c.schedule[idx], sr.send[of_row[idx]], v,
                        out, idx)
        done += len(sel)
        if progress:
            progress(done / len(c))
    return out


def _time_group(ranks, m, schedule, send, v: int, out: StepTimes, idx: np.ndarray) -> None:
    """Step times of the configurations ``idx`` of one (pipeline, virtual stages) group;
    ``ranks[r]`` is rank ``r``'s StageTime per configuration."""
    def per_rank(field: str) -> np.ndarray:
        return np.stack([getattr(r, field) for r in ranks])

    if len(ranks) == 1:
        st = ranks[0]
        out.step_s[idx] = m * st.t_mb + st.tail
        out.compute_s[idx] = m * st.busy + st.opt
        return
    tf, t_mb, tail = per_rank("t_fwd"), per_rank("t_mb"), per_rank("tail")
    tb = t_mb - tf
    finish = np.zeros_like(tf)
    for code in np.unique(schedule):
        sel = np.nonzero(schedule == code)[0]
        finish[:, sel] = pipeline_finish(tf[:, sel], tb[:, sel], send[sel], m[sel],
                                         SCHEDULES[int(code)], v)
    ends = finish + tail
    crit = np.argmax(m * t_mb + tail, axis=0)  # the busiest rank, as predict's breakdown
    cols = np.arange(len(idx))
    step = ends.max(axis=0)
    busy, opt = per_rank("busy")[crit, cols], per_rank("opt")[crit, cols]
    out.step_s[idx] = step
    out.bubble_s[idx] = step - (m * t_mb[crit, cols] + tail[crit, cols])
    out.compute_s[idx] = m * busy + opt
