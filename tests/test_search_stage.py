"""simulator.search.stage: the search's max-plus form of a rank's micro-batch equals the
scheduled plan exactly (predict's ``_time_stage``: t_fwd, t_mb, tail; float rounding only), on
dense and MoE jobs with fsdp, tensor parallelism with TP comm overlap, EP comm overlap, every
remat policy, first / middle / last pipeline ranks (also interleaved), context parallelism with
a distributed optimizer, and a profile whose
collectives run on the compute stream (the algebra itself: test_search_maxplus.py)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.graph.ops import COMPUTE, OpKind
from simulator.graph.plan import MICROBATCH
from simulator.predict import _stages, _time_stage
from simulator.search.space import REMATS
from simulator.search.maxplus import STATE, DenseForm
from simulator.search.timing import _StageRows
from tests.search_helpers import candidates, job_and_context, picked_table, space

EXACT = 1e-12  # both paths schedule one plan: float rounding only (issue 14)

#: (model, hardware), fixed sharding fields, rows: (mesh, remat[, virtual stages[, placements]])
CASES = {
    "dense-tp-overlap": (("llama3-8b", "h100-sxm"), dict(tp_comm_overlap=True), [
        ({"fsdp": 4, "model": 8}, "none", 1, 2),
        ({"data": 2, "fsdp": 2, "model": 2, "pipeline": 4}, "selective"),
        ({"fsdp": 4, "model": 2, "pipeline": 4}, "full"),
        ({"fsdp": 2, "model": 4, "pipeline": 4}, "selective", 2),  # interleaved
    ]),
    "moe-ep-overlap": (("mixtral-8x7b", "h100-sxm"),
                       dict(tp_comm_overlap=True, ep_comm_overlap=True), [
        ({"expert": 8, "fsdp": 4}, "selective", 1, 2),
        ({"expert": 4, "model": 2, "pipeline": 4}, "full"),
        ({"data": 2, "expert": 2, "fsdp": 2, "model": 2, "pipeline": 2}, "none"),
    ]),
    # dense and MoE layers alternate: ranks hold both kinds
    "moe-mixed-tpu": (("moe-6.4b", "tpu-v5p"), dict(ep_comm_overlap=True), [
        ({"expert": 4, "fsdp": 8}, "none"),
        ({"expert": 4, "fsdp": 2, "pipeline": 4}, "selective"),
        ({"expert": 2, "model": 2, "data": 2, "pipeline": 4}, "full"),
    ]),
    "moe-deepep": (("qwen3-30b-a3b", "h100-sxm"), dict(moe_dispatcher="deepep"), [
        ({"expert": 16, "fsdp": 2}, "selective"),
    ]),
    # group-limited routing (8 groups, 4 per token) sets the deduplicated dispatch's bytes
    "moe-deepep-groups": (("deepseek-v3", "h100-sxm"), dict(moe_dispatcher="deepep"), [
        ({"expert": 32}, "full"),
        ({"expert": 16, "fsdp": 2}, "selective"),
    ]),
    # context parallel with a distributed optimizer: gradients, optimizer shards and the
    # weights' all-gathers over data x expert x seq (experts data x seq)
    "moe-cp-distopt": (("mixtral-8x7b", "h100-sxm"), dict(distributed_optimizer=True), [
        ({"expert": 4, "seq": 2, "data": 4}, "selective", 1, 2),
        ({"expert": 2, "seq": 2, "fsdp": 2, "pipeline": 4}, "none"),
    ]),
    # the weight all-gathers under the next step's first forward (param_gather_hidden)
    "dense-distopt-overlap": (("llama3-8b", "h100-sxm"),
                              dict(distributed_optimizer=True, overlap_param_gather=True), [
        ({"data": 8, "model": 4}, "selective"),
        ({"data": 2, "model": 2, "fsdp": 2, "pipeline": 4}, "full"),
    ]),
    "moe-distopt-overlap": (("mixtral-8x7b", "h100-sxm"),
                            dict(distributed_optimizer=True, overlap_param_gather=True), [
        ({"expert": 4, "data": 8}, "selective"),
    ]),
    "dense-cp-distopt": (("llama3-8b", "h100-sxm"), dict(distributed_optimizer=True), [
        ({"seq": 4, "data": 8}, "selective"),
        ({"seq": 2, "model": 2, "data": 2, "pipeline": 4}, "full"),
    ]),
    # collectives on the compute stream (a calibrated CPU host)
    "moe-serial": (("moe-6.4b", "h100-sxm+serial"), {}, [
        ({"expert": 4, "fsdp": 4, "pipeline": 2}, "selective"),
        ({"expert": 2, "fsdp": 2, "model": 2, "pipeline": 4}, "full"),
    ]),
    "dense-serial": (("llama3-8b", "tpu-v5p+serial"), {}, [
        ({"fsdp": 8, "pipeline": 4}, "none"),
        ({"data": 2, "model": 4, "fsdp": 4}, "full"),
    ]),
}


def _time(table, kinds, first, last, rows, remat: int) -> dict[str, np.ndarray]:
    """StageTime fields at stage ``rows`` under one remat policy (code into REMATS), one value
    per row (``StageTable.time`` takes a remat code per row, or the policies to solve)."""
    t = table.time(kinds, first, last, np.asarray(rows), np.full(len(rows), remat, dtype=np.int8))
    return {f: np.atleast_2d(getattr(t, f))[0] for f in ("t_fwd", "t_mb", "tail", "busy", "opt")}


def _graph_sums(timing):
    """Compute-stream seconds of the micro-batch (no collectives) and of the optimizer update,
    from the scheduled graph."""
    busy = opt = 0.0
    for attrs in timing.graph.nodes.values():
        op = attrs["op"]
        if op.kind is OpKind.COLLECTIVE:
            continue
        if op.stream == COMPUTE and op.phase in MICROBATCH:
            busy += op.duration
        if op.phase == "optimizer":
            opt += op.duration
    return busy, opt


@pytest.mark.parametrize("case", list(CASES))
def test_stage_form_equals_the_scheduled_plan(case):
    sub, sr, table = picked_table(CASES[case])
    m = sub.space.model
    ranks_seen = set()
    for i in range(len(sub)):
        job, ctx = job_and_context(sub, i)
        stages = _stages(job)
        for r, (layers, first, last) in enumerate(stages):
            kinds = tuple(m.is_moe_layer(j) for j in layers)
            ref = _time_stage(job, ctx, layers, first, last)
            got = _time(table, kinds, first, last, sr.of_row[[i]], int(sub.remat[i]))
            where = (case, sub.row(i), f"rank {r}/{len(stages)}")
            assert got["t_fwd"][0] == pytest.approx(ref.t_fwd, rel=EXACT, abs=0), where
            assert got["t_mb"][0] == pytest.approx(ref.t_mb, rel=EXACT, abs=0), where
            assert got["tail"][0] == pytest.approx(ref.tail, rel=EXACT, abs=0), where
            busy, opt = _graph_sums(ref)
            assert got["busy"][0] == pytest.approx(busy, rel=EXACT), where
            assert got["opt"][0] == pytest.approx(opt, rel=EXACT), where
            ranks_seen.add("first" if first and not last else "last" if last and not first
                           else "only" if first else "middle")
    pipelined = any(sub.axis("pipeline") > 2)
    assert ranks_seen >= ({"first", "middle", "last"} if pipelined else {"only"})


def test_a_whole_table_at_once_equals_row_by_row():
    """Solving many stage rows together (one call on columns) gives each row's own answer."""
    (model, hw), base, rows = CASES["moe-mixed-tpu"]
    c, idx = candidates(space(model, hw, **base), rows)
    sub = c.take(np.array(idx))
    sr = _StageRows(sub)
    kinds = tuple(sub.space.model.is_moe_layer(j) for j in range(8))
    for remat in range(len(REMATS)):
        together = _time(sr.table(), kinds, True, False, sr.of_row, remat)
        for i in range(len(sub)):
            alone = _StageRows(sub.take(np.array([i])))
            one = _time(alone.table(), kinds, True, False, alone.of_row, remat)
            for f, v in one.items():
                assert together[f][i] == pytest.approx(v[0], rel=EXACT), (f, remat, sub.row(i))


def test_blocks_built_on_every_row_at_once_equal_the_grouped_ones():
    """A block whose templates branch alike on every row (the optimizer's) is built once for
    the whole table; its rank times equal those of the table built group by group."""
    from simulator.search.stage import StageTable

    (model, hw), base, rows = CASES["moe-mixed-tpu"]
    c, idx = candidates(space(model, hw, **base), rows)
    sr = _StageRows(c.take(np.array(idx)))
    table = sr.table()
    assert table.whole is not None and len(table.groups) > 1
    grouped = StageTable(table.groups, table.rows, table.serial)
    kinds = tuple(sr.space.model.is_moe_layer(j) for j in range(4))
    for remat in range(len(REMATS)):
        for first, last in ((True, False), (False, True)):
            got = _time(table, kinds, first, last, np.arange(table.rows), remat)
            want = _time(grouped, kinds, first, last, np.arange(table.rows), remat)
            for f, v in want.items():
                np.testing.assert_allclose(got[f], v, rtol=EXACT, err_msg=f)
    assert ("optimizer", kinds, False, True) in table.whole[1]._blocks  # built on every row


def test_stage_rows_are_the_distinct_shapes_and_collective_coefficients():
    """Each row reads a stage row of its own mesh, micro-batch and collective coefficients
    (placements alike in every collective share one), and no two stage rows are alike."""
    from simulator.search.placements import coefficients
    from simulator.search.timing import _dedup

    (model, hw), base, _ = CASES["moe-mixed-tpu"]
    c, _ = candidates(space(model, hw, **base), [])
    sr = _StageRows(c)
    np.testing.assert_array_equal(sr.mesh[sr.of_row], c.mesh)
    np.testing.assert_array_equal(sr.micro_batch[sr.of_row], c.micro_batch)
    own = coefficients(c.placements, c.placement, _dedup(c.space))
    np.testing.assert_array_equal(sr.coef[sr.of_row], own)
    keys = {(s, r.tobytes()) for s, r in zip(sr.shapes().tolist(), sr.coef)}
    pairs = c.placement.astype(np.int64) * (int(c.micro_batch.max()) + 1) + c.micro_batch
    assert len(keys) == len(sr.micro_batch) < len(np.unique(pairs))  # placements merged


def test_rows_of_one_stage_row_are_timed_once_with_each_rows_own_answer():
    """Rows alike in stage row, remat, schedule and virtual stages (placements merged) are
    timed once: every row gets what timing them all gives."""
    from simulator.search.timing import _step_times, step_times

    (model, hw), base, _ = CASES["moe-mixed-tpu"]
    c, _ = candidates(space(model, hw, **base), [])
    sr = _StageRows(c)
    assert sr.merged
    got, want = step_times(c), _step_times(c, sr, sr.of_row, None)
    for f in ("step_s", "compute_s", "bubble_s"):
        np.testing.assert_array_equal(getattr(got, f), getattr(want, f))


def test_a_plan_built_once_per_shape_costs_every_row_as_its_own():
    """A group's plan is built on its distinct shapes (mesh sizes, micro-batch) and costed per
    row: each block's form equals the one from a plan built on every row (placements of one
    mesh share a shape, not their collectives' seconds)."""
    from simulator.graph.cost import cost_blocks
    from simulator.graph.plan import Planner
    from simulator.search.columns import dims_columns
    from simulator.search.stage import ColumnCost, block_form

    (model, hw), base, rows = CASES["moe-ep-overlap"]
    c, idx = candidates(space(model, hw, **base), rows)
    meshes = {tuple(c.mesh[i]) for i in idx}
    sr = _StageRows(c.take(np.nonzero([tuple(m) in meshes for m in c.mesh])[0]))
    table = sr.table()
    assert len(np.unique(sr.shapes())) < table.rows  # some rows share a shape
    for g_rows, planner, ctx in table.groups:
        sp = sr.space
        own = Planner(sp.model, sp.base, dims_columns(sp, sr.cols(g_rows), sr.micro_batch[g_rows]))
        own_ctx = ColumnCost(sr.cm, sr.coef[g_rows])
        for key in [("fwd", True), ("bwd", True, "full"), ("head_bwd",), ("embed_fwd",)]:
            forms = []
            for p, x in ((planner, ctx), (own, own_ctx)):
                block = p.block(key)
                cost_blocks([block], x, table.serial, (len(g_rows),))
                forms.append(block_form(block, len(g_rows), x.per_row))
            got, want = forms
            np.testing.assert_array_equal(got.M, want.M)
            np.testing.assert_array_equal(got.busy, want.busy)
            for axis, v in want.links.items():
                np.testing.assert_array_equal(got.links[axis], v)


def test_a_block_form_steps_as_its_dense_matrix():
    """A block's sparse form (the variables it changes, from those it reads) steps a state as
    its dense max-plus matrix does, and reads each variable's drivers exactly where the dense
    matrix is finite: the dense form is what the rows outside the periodic regime are squared
    with."""
    (model, hw), base, rows = CASES["moe-ep-overlap"]
    c, idx = candidates(space(model, hw, **base), rows)
    table = _StageRows(c.take(np.array(idx))).table()
    rng = np.random.default_rng(3)
    for key in [("fwd", True), ("bwd", True, "full"), ("head_bwd",), ("embed_fwd",)]:
        f = table.full(key)
        x = rng.uniform(0.0, 5.0, (f.rows, len(STATE)))
        x[:, -1] = -np.inf  # an unset variable
        want = DenseForm(f.dense()).step(x)
        np.testing.assert_allclose(f.step(x), want, rtol=1e-15)
        top = np.where(np.isfinite(f.dense()), 0.0, -np.inf) + x[:, None, :]
        np.testing.assert_array_equal(f.reach_t(x.T).T, top.max(axis=2))
        assert set(f.outs.tolist()) < set(range(len(STATE)))  # sparse: not every variable
