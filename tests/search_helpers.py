"""Search spaces and chosen rows of their candidate tables, with each row's job for the graph
path (shared by test_graph_cost and test_search_stage)."""

from __future__ import annotations

import numpy as np

from simulator.cost.compute import ComputeModel
from simulator.graph.cost import CostContext
from simulator.search import enumerate_candidates, make_space
from simulator.search.space import REMATS
from simulator.search.table import AXIS, Candidates
from simulator.specs.job import make_job


def serial_profile(name: str):
    """A profile whose collectives run on the compute cores (as a calibrated CPU host's)."""
    from hardware_profiles import load_profile

    hw = load_profile(name)
    return hw.model_copy(update={"chip": hw.chip.model_copy(
        update={"collectives_use_compute": True})})


def space(model: str, hardware, chips: int = 32, **base):
    hw = serial_profile(hardware[:-len("+serial")]) if hardware.endswith("+serial") else hardware
    return make_space(model, hw, chips, seq_len=2048, global_batch=64, **base)


def pick(c: Candidates, mesh: dict[str, int], remat: str, virtual: int = 1,
         placements: int = 1) -> list[int]:
    """Rows of ``c`` with exactly ``mesh`` (other axes 1), ``remat`` and ``virtual`` stages:
    the first and, with ``placements=2``, the last such row (often another placement)."""
    want = np.ones(len(AXIS), dtype=np.int64)
    for a, v in mesh.items():
        want[AXIS[a]] = v
    hit = np.nonzero((c.mesh == want).all(axis=1) & (c.remat == REMATS.index(remat))
                     & (c.virtual == virtual))[0]
    assert len(hit), f"no candidate with mesh {mesh}, remat {remat}, virtual {virtual}"
    return sorted({int(hit[0]), int(hit[-1])}) if placements == 2 else [int(hit[0])]


def candidates(sp, rows: list[tuple]) -> tuple[Candidates, list[int]]:
    """The table of ``sp`` and the indices ``pick`` gives for each ``(mesh, remat[, virtual[,
    placements]])`` of ``rows``."""
    c = enumerate_candidates(sp)
    idx = [i for r in rows for i in pick(c, *r)]
    return c, idx


def picked_table(case: tuple):
    """For a case ``((model, hardware), sharding fields, rows)``: the picked rows as a table,
    their stage rows and the stage rows' max-plus table."""
    from simulator.search.timing import _StageRows

    (model, hw), base, rows = case
    c, idx = candidates(space(model, hw, **base), rows)
    sub = c.take(np.array(idx))
    sr = _StageRows(sub)
    return sub, sr, sr.table()


def job_and_context(c: Candidates, i: int):
    """Row ``i`` as the graph path's Job and its CostContext (as predict builds them)."""
    sp = c.space
    job = make_job(sp.model, c.sharding(i), sp.hardware, sp.chips)
    ctx = CostContext(ComputeModel.from_profile(job.hardware, job.sharding.precision),
                      job.topology)
    return job, ctx
