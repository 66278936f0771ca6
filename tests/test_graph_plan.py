"""simulator.graph.plan: a rank's micro-batch as data (blocks of ops, registers, streams) from
the job's shapes alone; FSDP prefetch, remat, the gradient-sync plan against hand-worked bytes,
the unrolled graph's order, and blocks built once per kind."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from simulator.cost.collectives import Collective
from simulator.graph.dims import Dims
from simulator.graph.ops import OpKind
from simulator.graph.plan import MICROBATCH, Planner, gradient_sync, link_axis, plan_stage
from simulator.graph.step import SELECTIVE
from simulator.search.columns import column
from simulator.specs.model import ModelSpec, MoESpec
from simulator.specs.sharding import AXES, make_sharding

AG, RS, AR = Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE

# d=256, 4 heads of 64 (no GQA): attention 4 d^2 = 262,144; SwiGLU FFN 3 d F = 786,432
DENSE = ModelSpec(name="tiny", source="test", n_layers=4, d_model=256, n_heads=4, n_kv_heads=4,
                  ffn_hidden=1024, vocab_size=512, seq_len=128)
MOE = ModelSpec(name="tiny-moe", source="test", n_layers=4, d_model=256, n_heads=4,
                n_kv_heads=4, ffn_hidden=1024, vocab_size=512, seq_len=128,
                moe=MoESpec(n_experts=8, top_k=2, capacity_factor=2.0, expert_ffn_hidden=512,
                            layer_interval=2))
LAYER_PARAMS = 4 * 256 * 256 + 3 * 256 * 1024  # one dense layer, by hand


def _plan(spec=DENSE, first=True, last=True, layers=None, remat="selective", **mesh):
    """The plan of ``layers`` (default all) of ``spec`` on mesh sizes ``mesh``, 1 sequence."""
    sizes = {a: 1 for a in AXES} | mesh
    sharding = make_sharding(mesh=dict(mesh) or {"data": 1}, remat=remat)
    d = Dims.from_mesh(sharding, spec.seq_len, sizes, 1)
    layers = list(range(spec.n_layers)) if layers is None else layers
    return plan_stage(spec, sharding, d, layers, first, last), d


def _by_name(plan) -> dict:
    return {name: (op, preds) for name, op, preds in plan.unrolled()}


def test_the_plan_needs_no_hardware():
    """Built from a ModelSpec, a ShardingSpec and Dims only: nothing is costed yet."""
    plan, _ = _plan(MOE, fsdp=2, expert=2, data=2)
    ops = [op for b in plan.blocks() for op in b.ops]
    assert ops and all(op.duration == 0.0 for op in ops)
    kinds = {op.kind for op in ops}
    assert {OpKind.MATMUL, OpKind.ATTENTION, OpKind.ELEMENTWISE, OpKind.COLLECTIVE} <= kinds


def test_the_plan_is_the_same_on_any_hardware():
    """predict's costed plan differs between two profiles only in durations."""
    from hardware_profiles import load_profile
    from simulator.cost.compute import ComputeModel
    from simulator.graph.cost import CostContext
    from simulator.predict import stage_plan
    from simulator.specs.job import make_job

    def shape(hw_name):
        hw = load_profile(hw_name)
        job = make_job(MOE, make_sharding(mesh={"fsdp": 2, "expert": 2, "data": 2},
                                          global_batch=8), hw, 8)
        ctx = CostContext(ComputeModel.from_profile(hw, job.sharding.precision), job.topology)
        plan = stage_plan(job, ctx, [0, 1, 2, 3], True, True)
        return [(n, op.kind, op.stream, op.flops, op.nbytes, op.collective, op.axis, tuple(p),
                 op.phase) for n, op, p in plan.unrolled()], \
               [op.duration for _, op, _ in plan.unrolled()]

    a, da = shape("h100-sxm")
    b, db = shape("tpu-v5p")
    assert a == b
    assert da != db  # costed differently: the plan itself carried no hardware


@pytest.mark.parametrize("fsdp", [1, 2, 4])
def test_fsdp_gathers_are_present_iff_fsdp(fsdp):
    plan, d = _plan(fsdp=fsdp)
    gathers = [(n, op) for n, (op, _) in _by_name(plan).items() if op.axis == "fsdp"]
    if fsdp == 1:
        assert gathers == []
        return
    names = {n for n, _ in gathers}
    # one gather before each forward and each backward of a layer, of the embedding table before
    # the embedding and of the head's table before the head (forward and backward), plus the
    # gradient reduce-scatters of each layer and of the tables
    for i in range(4):
        assert {f"L{i}.fwd.fsdp_ag", f"L{i}.bwd.fsdp_ag", f"L{i}.grad_rs"} <= names
    assert {"embed.fwd.fsdp_ag", "head.fwd.fsdp_ag", "head.bwd.fsdp_ag", "embed.grad_rs"} <= names
    ops = dict(gathers)
    layer_bytes = LAYER_PARAMS * 2  # bf16 weights, before FSDP sharding: the gather's output
    assert ops["L1.fwd.fsdp_ag"].collective is AG
    assert ops["L1.fwd.fsdp_ag"].nbytes == layer_bytes
    assert ops["L1.bwd.fsdp_ag"].nbytes == layer_bytes
    assert ops["embed.fwd.fsdp_ag"].nbytes == 512 * 256 * 2
    assert ops["L1.grad_rs"].collective is RS
    assert ops["L1.grad_rs"].nbytes == LAYER_PARAMS * 4  # fp32 gradients


def test_forward_gathers_prefetch_one_layer_ahead():
    """Each layer's forward gather waits for @first: the previous layer's first compute op."""
    plan, _ = _plan(fsdp=2)
    for b in plan.blocks():
        if b.key[0] in ("fwd", "head_fwd"):
            assert b.ops[0].name == "fwd.fsdp_ag" and b.ops[0].deps == ["@first"]
            assert dict(b.writes)["first"] == next(op.name for op in b.ops
                                                   if op.kind is not OpKind.COLLECTIVE)
    g = _by_name(plan)
    assert g["L0.fwd.fsdp_ag"][1] == []  # nothing before the first layer sets @first
    for i in range(1, 4):
        assert g[f"L{i}.fwd.fsdp_ag"][1] == [f"L{i - 1}.attn_norm"]
        # and the layer's first op waits for its own gather and the previous layer's output
        assert set(g[f"L{i}.attn_norm"][1]) == {f"L{i - 1}.mlp_res", f"L{i}.fwd.fsdp_ag"}
    assert g["head.fwd.fsdp_ag"][1] == ["L3.attn_norm"]
    # backward: one backward layer ahead
    for i in range(3):
        assert g[f"L{i}.bwd.fsdp_ag"][1] == [f"L{i + 1}.bwd.mlp_res"]


@pytest.mark.parametrize("model", [DENSE, MOE], ids=["dense", "moe"])
@pytest.mark.parametrize("remat", ["none", "selective", "full"])
def test_backward_recomputes_what_the_remat_policy_says(model, remat):
    plan, _ = _plan(model, remat=remat, fsdp=2, **{"model": 2})
    blocks = {b.key: b for b in plan.blocks()}
    for moe in {model.is_moe_layer(i) for i in range(model.n_layers)}:
        fwd = [op for op in blocks[("fwd", moe)].ops if op.axis != "fsdp"]
        bwd = blocks[("bwd", moe, remat)]
        rec = [op for op in bwd.ops if op.phase == "recompute"]
        if remat == "none":
            want = []
        elif remat == "full":
            want = fwd
        else:
            want = [op for op in fwd if op.kind in SELECTIVE]
        assert [op.name for op in rec] == ["re." + op.name for op in want]
        assert [(op.flops, op.nbytes) for op in rec] == [(op.flops, op.nbytes) for op in want]
        if remat == "selective":
            assert not any(op.kind is OpKind.MATMUL for op in rec)
        # the backward's first op waits for the recompute's last
        first_bwd = next(op for op in bwd.ops if op.phase == "bwd" and op.axis != "fsdp")
        if rec:
            assert rec[-1].name in first_bwd.deps
        else:
            assert not any(d.startswith("re.") for d in first_bwd.deps)


def _dims(**mesh) -> Dims:
    sizes = {a: 1 for a in AXES} | mesh
    return Dims.from_mesh(make_sharding(), 128, sizes, 1)  # fp32 gradients: gb = 4


def _ops(ops):
    return [(op.name, op.collective, op.axis, op.nbytes, op.phase, list(op.deps)) for op in ops]


def test_gradient_sync_with_fsdp_data_and_expert():
    d = _dims(fsdp=4, data=2, expert=2)
    assert d.gb == 4
    ops, outs = gradient_sync(d, False, "L.", 1000.0, 3000.0, "last")
    assert _ops(ops) == [
        ("L.grad_rs", RS, "fsdp", (1000 + 3000) * 4, "bwd", ["last"]),
        ("L.grad_data+expert", AR, "data+expert", 1000 / 4 * 4, "grad_sync", ["L.grad_rs"]),
        ("L.grad_data_experts", AR, "data", 3000 / 4 * 4, "grad_sync", ["L.grad_rs"]),
    ]
    assert outs == ["L.grad_data+expert", "L.grad_data_experts"]
    assert all(op.stream == "grad" for op in ops)
    # a distributed optimizer reduce-scatters instead of all-reducing
    ops, _ = gradient_sync(d, True, "L.", 1000.0, 3000.0, "last")
    assert [op.collective for op in ops] == [RS, RS, RS]


def test_gradient_sync_skips_groups_of_one_chip():
    # nothing to reduce on one chip: the optimizer waits on nothing new
    assert gradient_sync(_dims(), False, "", 1000.0, 0.0, "x") == ([], [])
    # FSDP only: the reduce-scatter is what the optimizer waits for
    ops, outs = gradient_sync(_dims(fsdp=2), False, "", 1000.0, 0.0, "x")
    assert _ops(ops) == [("grad_rs", RS, "fsdp", 4000.0, "bwd", ["x"])]
    assert outs == ["grad_rs"]
    # data only (no expert axis): the dense group is "data"; no expert weights, no expert op
    ops, outs = gradient_sync(_dims(data=8), False, "", 1000.0, 0.0, "x")
    assert _ops(ops) == [("grad_data", AR, "data", 4000.0, "grad_sync", ["x"])]
    # expert parallel only: the dense group spans data x expert = 4 chips; the experts' group
    # is data = 1 chip and is skipped
    ops, outs = gradient_sync(_dims(expert=4), False, "", 1000.0, 3000.0, "x")
    assert _ops(ops) == [("grad_data+expert", AR, "data+expert", 4000.0, "grad_sync", ["x"])]
    assert outs == ["grad_data+expert"]


def test_gradient_sync_sums_over_the_sequence_shards_too():
    """Each ``seq`` rank computes a partial gradient over its part of the sequence with the same
    weights, so the once-per-step reduction spans data x expert x seq (experts data x seq), the
    groups Megatron-Core reduces over with context parallelism."""
    ops, outs = gradient_sync(_dims(data=2, expert=2, seq=2), False, "L.", 1000.0, 3000.0, "x")
    assert _ops(ops) == [
        ("L.grad_data+expert+seq", AR, "data+expert+seq", 4000.0, "grad_sync", ["x"]),
        ("L.grad_data+seq_experts", AR, "data+seq", 12000.0, "grad_sync", ["x"]),
    ]
    # context parallel alone still reduces: a group of seq = 4 chips
    ops, _ = gradient_sync(_dims(seq=4), False, "", 1000.0, 0.0, "x")
    assert _ops(ops) == [("grad_data+seq", AR, "data+seq", 4000.0, "grad_sync", ["x"])]


def test_a_distributed_optimizer_updates_and_gathers_each_kind_over_its_replicas():
    """The update moves each parameter's bytes once per shard group (non-expert over
    data x expert x seq = 8 ranks, experts over data x seq = 4), then all-gathers each kind
    over its own group."""
    from simulator.cost.formulas import optimizer_update_bytes_per_param, stage_params

    mesh = dict(data=2, expert=2, seq=2)
    sizes = {a: 1 for a in AXES} | mesh
    sharding = make_sharding(mesh=mesh, distributed_optimizer=True)
    d = Dims.from_mesh(sharding, MOE.seq_len, sizes, 1)
    plan = plan_stage(MOE, sharding, d, [0, 1, 2, 3], True, True)
    g = _by_name(plan)
    dense, expert = stage_params(MOE, 1, 2, 1, [MOE.is_moe_layer(i) for i in range(4)], True,
                                 True)
    assert dense > 0 and expert > 0
    per_param = optimizer_update_bytes_per_param(sharding.optimizer, d.gb)
    assert g["optimizer"][0].nbytes == pytest.approx((dense / 8 + expert / 4) * per_param)
    assert _ops([g["param_ag"][0], g["param_ag_experts"][0]]) == [
        ("param_ag", AG, "data+expert+seq", dense * d.wb, "optimizer", ["optimizer"]),
        ("param_ag_experts", AG, "data+seq", expert * d.wb, "optimizer", ["param_ag"]),
    ]
    # the weight gathers --overlap-param-gather hides, and nothing else of the plan
    from simulator.graph.plan import is_weight_gather

    gathers = {op.name for op, _ in plan.op_counts() if is_weight_gather(op)}
    assert gathers == {"param_ag", "param_ag_experts"}


def test_gradient_sync_in_the_plan_carries_each_layers_params():
    plan, _ = _plan(MOE, fsdp=2, data=2, expert=2)
    g = _by_name(plan)
    dense_moe = (4 * 256 * 256) + 256 * 8  # attention + replicated router, no shared experts
    expert = 8 * 3 * 256 * 512 / 2  # E experts of SwiGLU 3 d F_e, split over expert=2
    op = g["L1.grad_rs"][0]  # layer 1 is MoE (interval 2)
    assert op.nbytes == pytest.approx((dense_moe + expert) * 4)
    assert g["L1.grad_data+expert"][0].nbytes == pytest.approx(dense_moe / 2 * 4)
    assert g["L1.grad_data_experts"][0].nbytes == pytest.approx(expert / 2 * 4)
    assert g["L0.grad_data+expert"][0].nbytes == pytest.approx(LAYER_PARAMS / 2 * 4)
    assert "L0.grad_data_experts" not in g  # a dense layer has no expert weights
    # the optimizer waits for every gradient reduction of the step
    opt_preds = set(g["optimizer"][1])
    assert {"L0.grad_data+expert", "L1.grad_data+expert", "L1.grad_data_experts",
            "embed.grad_data+expert"} <= opt_preds
    assert link_axis(g["L1.grad_rs"][0]) == "fsdp"  # every micro-batch, on fsdp's links
    assert link_axis(g["L1.grad_data+expert"][0]) is None  # once per step


@pytest.mark.parametrize("first,last", [(True, True), (True, False), (False, False),
                                        (False, True)])
def test_the_unrolled_graph_is_acyclic_and_in_topological_order(first, last):
    plan, _ = _plan(MOE, first=first, last=last, layers=[1, 2], fsdp=2, data=2, expert=2,
                    model=2)
    items = list(plan.unrolled())
    seen: set[str] = set()
    for name, _, preds in items:
        assert name not in seen
        assert set(preds) <= seen, name
        seen.add(name)
    g = plan.graph()
    assert list(g.nodes) == [n for n, _, _ in items]
    assert nx.is_directed_acyclic_graph(g)
    assert g.number_of_edges() == sum(len(set(p)) for _, _, p in items)
    assert ("embed.embed" in g) == first and ("head.loss" in g) == last
    # the update (and a distributed optimizer's gathers) ends the step
    assert nx.descendants(g, "optimizer") <= {"param_ag", "param_ag_experts"}


def test_blocks_of_one_kind_are_built_once():
    plan, _ = _plan(MOE, fsdp=2, data=2)
    by_key: dict = {}
    for st in plan.steps:
        by_key.setdefault(st.block.key, []).append(st.block)
    fwd_moe = by_key[("fwd", True)]
    assert len(fwd_moe) == 2 and fwd_moe[0] is fwd_moe[1]
    for blocks in by_key.values():
        assert all(b is blocks[0] for b in blocks)
    assert len(plan.blocks()) == len(by_key)
    # unrolled, each layer gets its own node names from the shared block
    g = _by_name(plan)
    assert {"L1.expert_in", "L3.expert_in"} <= set(g) and "L0.expert_in" not in g
    # a planner hands out the same block object however often it is asked
    sharding = make_sharding(mesh={"fsdp": 2}, remat="full")
    planner = Planner(MOE, sharding, _dims(fsdp=2))
    assert planner.block(("bwd", True, "full")) is planner.block(("bwd", True, "full"))


def test_micro_batch_phases():
    plan, _ = _plan(fsdp=2, data=2)
    phases = {op.phase for _, op, _ in plan.unrolled()}
    assert phases == {"fwd", "bwd", "recompute", "grad_sync", "optimizer"}
    assert MICROBATCH == {"fwd", "bwd", "recompute"}


def test_on_columns_an_op_a_row_lacks_is_kept_with_no_bytes():
    """plan._where: rows with fsdp=1 carry the gather with 0 bytes (`only` False)."""
    sharding = make_sharding()
    d = Dims(b=column(np.array([1, 1, 2])), s=128, t=column(np.array([1, 1, 1])),
             e=column(np.array([1, 1, 1])), fs=column(np.array([1, 2, 4])),
             dp=column(np.array([1, 1, 1])), cp=column(np.array([1, 1, 1])),
             pp=column(np.array([1, 1, 1])), **Dims.sharding_fields(sharding))
    planner = Planner(DENSE, sharding, d)
    fwd = planner.block(("fwd", False))
    gather = fwd.ops[0]
    assert gather.name == "fwd.fsdp_ag"
    np.testing.assert_array_equal(gather.only, [False, True, True])
    np.testing.assert_array_equal(gather.nbytes, [0.0, LAYER_PARAMS * 2, LAYER_PARAMS * 2])
    # a column where every row has fsdp=1 drops the op, as the float plan does
    d1 = Dims(**{**{f: getattr(d, f) for f in d.__slots__}, "fs": column(np.array([1, 1, 1]))})
    assert all(op.axis != "fsdp" for op in Planner(DENSE, sharding, d1).block(("fwd", False)).ops)
