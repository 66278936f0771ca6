"""simulator.graph.cost: the cost step gives every op of a plan its duration (the roofline and
the collective algorithms), moves collectives onto the compute stream on a chip whose
collectives use the compute cores, and on columns of configurations gives each row the float
cost of that row's own plan."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.collectives import collective_time
from simulator.graph.cost import cost_blocks
from simulator.graph.dims import Dims
from simulator.graph.ops import COMPUTE, OpKind
from simulator.graph.plan import Planner, plan_stage
from simulator.search.space import REMATS
from simulator.specs.model import ModelSpec, MoESpec
from simulator.specs.sharding import make_sharding
from tests.search_helpers import job_and_context, picked_table

MOE = ModelSpec(name="tiny-moe", source="test", n_layers=2, d_model=256, n_heads=4,
                n_kv_heads=4, ffn_hidden=1024, vocab_size=512, seq_len=128,
                moe=MoESpec(n_experts=8, top_k=2, capacity_factor=2.0, expert_ffn_hidden=512,
                            layer_interval=2))


def _costed(hardware, serial_override=None):
    """A costed plan of MOE on 8 chips of ``hardware`` (fsdp 2 x expert 2 x model 2)."""
    from simulator.cost.compute import ComputeModel
    from simulator.graph.cost import CostContext
    from simulator.specs.job import make_job

    job = make_job(MOE, make_sharding(mesh={"fsdp": 2, "expert": 2, "model": 2}, global_batch=8,
                                      remat="full"), hardware, 8)
    plan = plan_stage(MOE, job.sharding, Dims.from_job(job), [0, 1], True, True)
    ctx = CostContext(ComputeModel.from_profile(hardware, job.sharding.precision), job.topology)
    before = [(op.name, op.stream) for b in plan.blocks() for op in b.ops]
    serial = hardware.chip.collectives_use_compute if serial_override is None else serial_override
    cost_blocks(plan.blocks(), ctx, serial)
    return plan, ctx, before


def test_every_op_gets_its_duration(gpu_profile):
    plan, ctx, _ = _costed(gpu_profile)
    ops = [op for b in plan.blocks() for op in b.ops]
    assert all(op.duration > 0 for op in ops), [op.name for op in ops if not op.duration > 0]
    by_name = {n: op for n, op, _ in plan.unrolled()}
    # a GEMM: the roofline of the synthetic chip (1 PFLOP/s, 1 TB/s, 1e-12 s launch)
    qkv = by_name["L0.qkv"]
    assert qkv.duration == pytest.approx(max(qkv.flops / 1e15, qkv.nbytes / 1e12) + 1e-12,
                                         rel=1e-12)
    # a collective: its algorithm on the axis's placement
    for name in ("L1.a2a_dispatch", "L0.fwd.fsdp_ag", "L0.grad_rs"):
        op = by_name[name]
        assert op.kind is OpKind.COLLECTIVE
        assert op.duration == collective_time(op.collective, ctx.parts(op.axis), op.nbytes,
                                              op.dedup)


def test_collectives_stay_on_their_streams_unless_the_chip_is_serial(gpu_profile):
    plan, _, before = _costed(gpu_profile)
    assert [(op.name, op.stream) for b in plan.blocks() for op in b.ops] == before
    streams = {op.stream for b in plan.blocks() for op in b.ops if op.kind is OpKind.COLLECTIVE}
    assert {"tp", "ep", "fsdp", "grad"} <= streams


def test_a_serial_profile_moves_collectives_onto_the_compute_stream(gpu_profile):
    serial = gpu_profile.model_copy(update={"chip": gpu_profile.chip.model_copy(
        update={"collectives_use_compute": True})})
    plan, _, before = _costed(serial)
    ref, _, _ = _costed(gpu_profile)
    ops = [op for b in plan.blocks() for op in b.ops]
    assert all(op.stream == COMPUTE for op in ops if op.kind is OpKind.COLLECTIVE)
    # compute ops keep their streams, and every duration is the same as on the parallel chip
    for op, (name, stream) in zip(ops, before):
        if op.kind is not OpKind.COLLECTIVE:
            assert op.stream == stream
    assert [op.duration for op in ops] == [op.duration for b in ref.blocks() for op in b.ops]


# dense and MoE, fsdp, tp with overlap, pipeline (embedding, middle and head blocks)
SPACES = {
    "dense": (("llama3-8b", "h100-sxm"), dict(tp_comm_overlap=True),
              [({"fsdp": 4, "model": 8}, "none"), ({"data": 2, "fsdp": 2, "pipeline": 8}, "full"),
               ({"fsdp": 2, "model": 2, "pipeline": 8}, "selective")]),
    "moe": (("moe-6.4b", "tpu-v5p"), dict(ep_comm_overlap=True),
            [({"expert": 4, "fsdp": 8}, "selective", 1, 2), ({"expert": 2, "model": 2,
                                                               "pipeline": 8}, "none"),
             ({"expert": 2, "fsdp": 2, "data": 2, "pipeline": 4}, "full")]),
    "serial": (("moe-6.4b", "h100-sxm+serial"), {},
               [({"expert": 4, "fsdp": 4, "pipeline": 2}, "selective")]),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_on_columns_each_row_is_the_cost_of_its_own_plan(name):
    sub, sr, table = picked_table(SPACES[name])
    serial = table.serial
    assert serial == sub.space.hardware.chip.collectives_use_compute
    m = sub.space.model
    kinds = sorted({m.is_moe_layer(i) for i in range(m.n_layers)})
    keys = [("embed_fwd",), ("head_fwd",), ("head_bwd",), ("embed_bwd",),
            *[("fwd", k) for k in kinds], *[("bwd", k, r) for k in kinds for r in REMATS],
            ("embed_grad", True, False), ("embed_grad", False, True),
            ("optimizer", (kinds[-1],) * 2, False, False)]
    checked = 0
    for rows_, planner, ctx in table.groups:
        for key in keys:
            block = planner.block(key)
            cost_blocks([block], ctx, serial, (len(rows_), 1))
            for j, srow in enumerate(rows_):
                i = int(np.nonzero(sr.of_row == srow)[0][0])
                job, fctx = job_and_context(sub, i)
                ref = Planner(m, job.sharding, Dims.from_job(job)).block(key)
                cost_blocks([ref], fctx, serial)
                want = {op.name: op for op in ref.ops}
                for op in block.ops:
                    assert op.duration.shape == (len(rows_), 1)
                    got = op.duration[j, 0]
                    if op.name not in want:  # an op this row lacks (plan._where): no time
                        assert got == 0.0 and op.only is not None and not op.only[j], op.name
                        continue
                    assert got == pytest.approx(want[op.name].duration, rel=1e-12, abs=0), \
                        (key, op.name, sub.row(i))
                    assert op.stream == want[op.name].stream
                    checked += 1
                assert {op.name for op in block.ops} >= set(want)
    assert checked > 100
