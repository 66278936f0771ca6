"""The fast path: memory, step time and MFU of every row of a candidate table with numpy,
from the graph path's own formulas on columns: memory terms (:mod:`simulator.graph.memory`),
the plan in max-plus form and the pipeline schedule (:mod:`~simulator.search.timing`).
"""

from __future__ import annotations

import numpy as np

from simulator.cost import formulas
from simulator.cost.flops import model_flops_per_step
from simulator.search.codes import row_codes, small_unique
from simulator.search.memory import max_in_flight, memory_bytes
from simulator.search.space import SCHEDULES
from simulator.search.table import AXIS, Candidates
from simulator.search.timing import StepTimes, groups, rank_classes, step_times

__all__ = ["StepTimes", "dims_of", "memory_per_device", "mfu", "step_times"]


def _classes(layout) -> dict[tuple, list[int]]:
    """The ranks of each (kinds, first, last) class."""
    out: dict[tuple, list[int]] = {}
    for r, cls in enumerate(layout):
        out.setdefault(cls, []).append(r)
    return out


def dims_of(c: Candidates, idx=slice(None)):
    """The rows' (``idx``: all by default) :class:`~simulator.graph.dims.Dims` as numpy
    columns (``Dims.from_mesh``)."""
    from simulator.graph.dims import Dims
    from simulator.specs.sharding import AXES

    return Dims.from_mesh(c.space.base, c.space.seq_len,
                          {a: c.mesh[idx, AXIS[a]] for a in AXES}, c.micro_batch[idx])


def memory_per_device(c: Candidates) -> np.ndarray:
    """Bytes per device of the busiest rank, per row (the graph path's MemoryEstimate):
    found once per distinct (mesh, micro-batch, remat, schedule, virtual stages), all that it
    reads (:func:`memory_key`; a placement moves no byte)."""
    _, first, inv = small_unique(memory_key(c))
    return _memory_per_device(c.take(first))[inv.ravel()]


def memory_key(c: Candidates) -> np.ndarray:
    """Per row, :func:`row_codes` of its mesh sizes, micro-batch, remat, schedule and virtual
    stages (the mesh read once per placement: a placement's factors fix its mesh)."""
    pid, first, _ = small_unique(c.placement)
    mesh = np.zeros(int(pid[-1]) + 1 if len(pid) else 0, dtype=np.int64)
    mesh[pid] = row_codes(*c.mesh[first].T) if len(pid) else mesh[:0]
    return row_codes(c.remat, c.schedule, c.virtual, c.micro_batch, mesh[c.placement])


def _memory_per_device(c: Candidates) -> np.ndarray:
    """:func:`memory_per_device`, row by row."""
    out = np.zeros(len(c))
    m, interleaved = c.microbatches, c.schedule == SCHEDULES.index("interleaved")
    for pp, v, idx in groups(c):
        d, mi, il, remat = dims_of(c, idx), m[idx], interleaved[idx], c.remat[idx]
        best = np.zeros(len(idx))
        for (kinds, first, last), ranks in _classes(rank_classes(c.space.model, pp, v)).items():
            flight = max_in_flight(ranks, pp, mi, il, v)
            best = np.maximum(best, memory_bytes(d, c.space, remat, kinds, first, last, flight))
        out[idx] = best
    return out


def mfu(sp, step_s):
    """Model FLOPs utilisation of the job of search space ``sp`` at step times ``step_s`` (a
    number or a column; :func:`simulator.cost.formulas.mfu`), as predict reports it."""
    return formulas.mfu(model_flops_per_step(sp.model, sp.seq_len, sp.tokens_per_step), step_s,
                        sp.chips, sp.hardware.peak_flops("bf16"))
