"""The fast path: memory and step time of every row of a candidate table with numpy.

Same formulas as the graph path (:func:`simulator.predict.predict_job`), reorganised for
columns: layer templates are costed per distinct (placement, micro-batch) row
(:mod:`~simulator.search.stage_inputs`), each pipeline rank's micro-batch is solved in closed
form (:mod:`~simulator.search.stage`), and the pipeline schedule is replayed on columns
(:mod:`~simulator.search.pipeline`). Step composition as in predict: ``m t_mb + tail`` without a
pipeline, ``max_r(finish_r + tail_r)`` with one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.cost.flops import model_flops_per_step
from simulator.search.memory import max_in_flight, memory_bytes
from simulator.search.pipeline import pipeline_finish
from simulator.search.placements import coefficients
from simulator.search.space import SCHEDULES
from simulator.search.stage import compose
from simulator.search.stage_inputs import stage_inputs, take_inputs
from simulator.search.table import Candidates


def rank_layout(model, pp: int, v: int) -> list[tuple[tuple[bool, ...], bool, bool]]:
    """(layer kinds in order, first, last) per pipeline rank, as ``predict._stages``: rank ``r``
    holds chunks ``c * pp + r`` of ``L / (pp v)`` layers each."""
    per_chunk = model.n_layers // (pp * v)
    out = []
    for r in range(pp):
        layers = [i for c in range(v) for i in range((c * pp + r) * per_chunk,
                                                      (c * pp + r + 1) * per_chunk)]
        out.append((tuple(model.is_moe_layer(i) for i in layers), r == 0, r == pp - 1))
    return out


def _classes(layout) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for r, cls in enumerate(layout):
        out.setdefault(cls, []).append(r)
    return out


def dims_of(c: Candidates):
    """The rows' :class:`~simulator.graph.dims.Dims` as numpy columns (``Dims.from_mesh``)."""
    from simulator.graph.dims import Dims
    from simulator.specs.sharding import AXES

    return Dims.from_mesh(c.space.base, c.space.seq_len, {a: c.axis(a) for a in AXES},
                          c.micro_batch)


def _groups(c: Candidates):
    """Row indices per (pipeline, virtual stages)."""
    key = c.axis("pipeline") * 4096 + c.virtual
    for k in np.unique(key):
        idx = np.nonzero(key == k)[0]
        yield int(k // 4096), int(k % 4096), idx


def memory_per_device(c: Candidates) -> np.ndarray:
    """Bytes per device of the busiest rank, per row (the graph path's MemoryEstimate)."""
    out = np.zeros(len(c))
    for pp, v, idx in _groups(c):
        sub = c.take(idx)
        d = dims_of(sub)
        interleaved = sub.schedule == SCHEDULES.index("interleaved")
        best = np.zeros(len(idx))
        for (kinds, first, last), ranks in _classes(rank_layout(c.space.model, pp, v)).items():
            flight = max_in_flight(ranks, pp, sub.microbatches, interleaved, v)
            best = np.maximum(best, memory_bytes(d, c.space, sub.remat, kinds, first, last,
                                                 flight))
        out[idx] = best
    return out


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


def _dedup(space) -> tuple[int, int] | None:
    """(experts, top-k) when the job's MoE dispatch is deduplicated (DeepEP), else None."""
    moe = space.model.moe
    if moe is None or space.base.moe_dispatcher != "deepep":
        return None
    return moe.n_experts, moe.top_k


def step_times(c: Candidates, progress=None) -> StepTimes:
    """Step time of every row (rows need not fit in memory); ``progress(fraction)`` is
    called as pipeline groups finish.

    Layer chains are costed once per distinct (placement, micro-batch) -- a stage row -- and
    each rank's micro-batch composed once per (stage row, remat); the pipeline schedule then
    runs per configuration."""
    key = c.placement.astype(np.int64) * (int(c.micro_batch.max(initial=0)) + 1) + c.micro_batch
    _, first_row, srow = np.unique(key, return_index=True, return_inverse=True)
    srow = srow.ravel()
    used, where = np.unique(c.placement[first_row], return_inverse=True)
    coef = coefficients(c.placements, used, _dedup(c.space))[where.ravel()]
    si = stage_inputs(c.space, c.mesh[first_row], c.micro_batch[first_row], coef)
    out = StepTimes(np.zeros(len(c)), np.zeros(len(c)), np.zeros(len(c)))
    m_all = c.microbatches
    done = 0
    for pp, v, idx in _groups(c):
        ukey, uinv = np.unique(srow[idx] * 3 + c.remat[idx], return_inverse=True)
        sub_si = take_inputs(si, ukey // 3)
        layout = rank_layout(c.space.model, pp, v)
        per_class = {cls: compose(sub_si, (ukey % 3).astype(np.int8), *cls, c.space)
                     for cls in _classes(layout)}
        ranks = [per_class[cls] for cls in layout]
        _time_group(ranks, uinv.ravel(), m_all[idx], c.schedule[idx], si.send[srow[idx]], v,
                    out, idx)
        done += len(idx)
        if progress:
            progress(done / len(c))
    return out


def _time_group(ranks, uinv, m, schedule, send, v: int, out: StepTimes, idx: np.ndarray) -> None:
    """Step times of one (pipeline, virtual stages) group; ``ranks[r]`` is rank ``r``'s
    StageTime per (stage row, remat), ``uinv`` maps each configuration to its entry."""
    def per_rank(field: str) -> np.ndarray:
        return np.stack([getattr(r, field)[uinv] for r in ranks])

    if len(ranks) == 1:
        st = ranks[0]
        out.step_s[idx] = m * st.t_mb[uinv] + st.tail[uinv]
        out.compute_s[idx] = m * st.busy[uinv] + st.opt[uinv]
        return
    tf, t_mb, tail = per_rank("t_fwd"), per_rank("t_mb"), per_rank("tail")
    tb = t_mb - tf
    finish = np.zeros_like(tf)
    key = m * 2 + schedule
    for k in np.unique(key):
        sel = np.nonzero(key == k)[0]
        finish[:, sel] = pipeline_finish(tf[:, sel], tb[:, sel], send[sel], int(k // 2),
                                         SCHEDULES[int(k % 2)], v)
    ends = finish + tail
    crit = np.argmax(m * t_mb + tail, axis=0)  # the busiest rank, as predict's breakdown
    cols = np.arange(len(idx))
    step = ends.max(axis=0)
    busy, opt = per_rank("busy")[crit, cols], per_rank("opt")[crit, cols]
    out.step_s[idx] = step
    out.bubble_s[idx] = step - (m * t_mb[crit, cols] + tail[crit, cols])
    out.compute_s[idx] = m * busy + opt


def mfu(c: Candidates, step_s: np.ndarray) -> np.ndarray:
    """Model FLOPs per step / (step time x chips x dense bf16 peak), as predict reports it."""
    sp = c.space
    flops = model_flops_per_step(sp.model, sp.seq_len, sp.tokens_per_step)
    return flops / (step_s * sp.chips * sp.hardware.peak_flops("bf16"))
