"""Known answers for whole steps, derived from the op and collective formulas by hand."""

from __future__ import annotations

import json

import pytest

from simulator.cost.collectives import Collective, collective_time
from simulator.graph.ops import COMPUTE
from simulator.predict import predict
from simulator.specs.model import ModelSpec, MoESpec

TINY = ModelSpec(name="tiny", source="test", n_layers=1, d_model=256, n_heads=4, n_kv_heads=4,
                 ffn_hidden=1024, ffn_kind="gelu", vocab_size=512, seq_len=128)
MOE = ModelSpec(name="tiny-moe", source="test", n_layers=4, d_model=256, n_heads=4,
                ffn_hidden=1024, vocab_size=512, seq_len=128,
                moe=MoESpec(n_experts=8, top_k=2, capacity_factor=2.0, expert_ffn_hidden=512,
                            layer_interval=2))


def _nodes(pred):
    g = pred.critical.graph
    return {n: a["op"] for n, a in g.nodes.items()}


def test_matmul_node_is_the_roofline(gpu_profile):
    p = predict(model=TINY, hardware=gpu_profile, chips=1, mesh={"data": 1}, remat="none")
    qkv = _nodes(p)["L0.qkv"]
    T, D = 128, 256
    flops = 2 * T * D * (3 * 256)
    nbytes = (T * D + T * 768) * 2 + D * 768 * 2
    assert qkv.flops == flops
    assert qkv.duration == pytest.approx(max(flops / 1e15, nbytes / 1e12) + 1e-12, rel=1e-12)


def test_single_device_step_is_the_sum_of_its_ops(gpu_profile):
    p = predict(model=TINY, hardware=gpu_profile, chips=1, mesh={"data": 1}, remat="none")
    total = sum(op.duration for op in _nodes(p).values() if op.stream == COMPUTE)
    assert p.step_time_s == pytest.approx(total, rel=1e-12)
    assert set(p.breakdown_s) == {"compute", "optimizer"}


def test_pure_data_parallel_exposes_the_last_gradient_all_reduces(gpu_profile):
    one = predict(model=TINY, hardware=gpu_profile, chips=1, mesh={"data": 1}, remat="none")
    dp = predict(model=TINY, hardware=gpu_profile, chips=8, mesh={"data": 8}, remat="none",
                 global_batch=8)
    ops = _nodes(dp)
    parts = dp.job.topology.placement["data"]
    layer = TINY.attention_params + TINY.dense_ffn_params
    ar_layer = collective_time(Collective.ALL_REDUCE, parts, layer * 4)
    ar_embed = collective_time(Collective.ALL_REDUCE, parts, 2 * 512 * 256 * 4)
    assert ops["L0.grad_data"].duration == pytest.approx(ar_layer)
    assert ops["embed.grad_data"].duration == pytest.approx(ar_embed)
    embed_bwd = ops["embed.bwd.embed"].duration
    t_mb = one.step_time_s - ops["optimizer"].duration
    expected = t_mb + max(ar_layer - embed_bwd, 0.0) + ar_embed + ops["optimizer"].duration
    assert dp.step_time_s == pytest.approx(expected, rel=1e-9)
    assert dp.breakdown_s["comm.all_reduce.data"] == pytest.approx(expected - t_mb
                                                                   - ops["optimizer"].duration)


def test_breakdown_sums_to_step_time(gpu_profile):
    for mesh in ({"data": 2, "fsdp": 2, "model": 2, "pipeline": 2},
                 {"data": -1, "expert": 4, "model": 2}):
        p = predict(model=MOE, hardware=gpu_profile, chips=16, mesh=mesh, global_batch=32)
        assert sum(p.breakdown_s.values()) == pytest.approx(p.step_time_s, rel=1e-9)


def test_step_graph_holds_each_collective_of_the_sharding(gpu_profile):
    p = predict(model=MOE, hardware=gpu_profile, chips=16,
                mesh={"data": 1, "fsdp": 2, "expert": 4, "model": 2}, global_batch=8)
    names = set(_nodes(p))
    for n in ("L0.fwd.fsdp_ag", "L0.bwd.fsdp_ag", "L1.a2a_dispatch", "L1.a2a_combine",
              "L0.attn_ag", "L0.attn_rs", "L1.moe_ag", "L1.moe_rs", "L1.grad_rs",
              "L1.grad_data+expert", "L1.bwd.a2a_dispatch", "L1.re.attn"):
        assert n in names, n
    kinds = {op.collective for op in _nodes(p).values() if op.collective}
    assert kinds >= {Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL,
                     Collective.ALL_REDUCE}
    assert p.breakdown_s["comm.all_to_all.expert"] > 0  # the dispatch blocks the expert FFN


def test_moe_layers_follow_the_interval():
    assert [MOE.is_moe_layer(i) for i in range(4)] == [False, True, False, True]


def test_capacity_factor_and_imbalance(gpu_profile):
    base = dict(hardware=gpu_profile, chips=8, mesh={"expert": 8}, global_batch=8)
    cf1 = MOE.model_copy(update={"moe": MOE.moe.model_copy(update={"capacity_factor": 1.0})})
    assert predict(model=cf1, **base).step_time_s < predict(model=MOE, **base).step_time_s
    dropless = MOE.model_copy(update={"moe": MOE.moe.model_copy(update={"capacity_factor": None})})
    skew = dropless.model_copy(update={"moe": dropless.moe.model_copy(update={"load_imbalance": 2.0})})
    assert predict(model=skew, **base).step_time_s > predict(model=dropless, **base).step_time_s
    # with a capacity factor, imbalance only drops tokens: the padded buffers cost the same
    cf_skew = MOE.model_copy(update={"moe": MOE.moe.model_copy(update={"load_imbalance": 3.0})})
    assert predict(model=cf_skew, **base).step_time_s == predict(model=MOE, **base).step_time_s


def test_remat_trades_time_for_memory(gpu_profile):
    runs = {r: predict(model=TINY, hardware=gpu_profile, chips=1, remat=r, micro_batch=4)
            for r in ("none", "selective", "full")}
    t = {r: p.step_time_s for r, p in runs.items()}
    mem = {r: p.memory.activations_bytes for r, p in runs.items()}
    assert t["none"] < t["selective"] < t["full"]
    assert mem["none"] > mem["selective"] > mem["full"]


def test_pipeline_bubble_appears_in_the_breakdown(gpu_profile):
    four = MOE.model_copy(update={"moe": None, "name": "d4"})
    p = predict(model=four, hardware=gpu_profile, chips=4, mesh={"pipeline": 4}, global_batch=8)
    assert p.breakdown_s["pipeline_bubble"] > 0
    assert p.pipeline is not None and len(p.pipeline.tasks) == 2 * 4 * 8


def test_the_breakdown_is_the_busiest_pipeline_rank(gpu_profile):
    # 2 ranks of one dense + one MoE layer each: rank 0 finishes last (it runs the last
    # backward) but rank 1, with the LM head, is busier; the breakdown is rank 1's work plus
    # its idle time, not rank 0's with the wait for rank 1 booked as bubble
    p = predict(model=MOE, hardware=gpu_profile, chips=8, mesh={"expert": 4, "pipeline": 2},
                global_batch=16)
    m, crit = p.microbatches, p.critical
    busy = [b / m for b in p.pipeline.busy_s]
    assert p.pipeline.finish_s[0] > p.pipeline.finish_s[1] and busy[1] > busy[0]
    assert crit.t_mb == pytest.approx(max(busy), rel=1e-9)
    assert p.breakdown_s["pipeline_bubble"] == pytest.approx(
        p.step_time_s - (m * crit.t_mb + crit.tail), rel=1e-9)
    assert p.breakdown_s["pipeline_bubble"] >= 0
    assert sum(p.breakdown_s.values()) == pytest.approx(p.step_time_s, rel=1e-9)


def test_memory_flags_a_job_that_does_not_fit(gpu_profile):
    big = TINY.model_copy(update={"d_model": 8192, "n_heads": 64, "n_kv_heads": 64,
                                  "ffn_hidden": 32768, "n_layers": 40})
    p = predict(model=big, hardware=gpu_profile, chips=1)
    assert not p.memory.fits and p.warnings and "does not fit" in p.warnings[0]
    assert p.to_dict()["memory"]["fits"] is False


def test_trace_is_chrome_json(gpu_profile, tmp_path):
    p = predict(model=MOE, hardware=gpu_profile, chips=8, mesh={"expert": 4, "pipeline": 2},
                global_batch=8)
    path = tmp_path / "t.json"
    from simulator.cli.trace import write_chrome_trace

    write_chrome_trace(p, path)
    ev = json.loads(path.read_text())["traceEvents"]
    xs = [e for e in ev if e["ph"] == "X"]
    assert xs and all(e["dur"] > 0 and e["ts"] >= 0 for e in xs)
    assert {e["pid"] for e in xs} == {1, 2}


def test_a_wait_is_split_along_the_chain_that_caused_it():
    import networkx as nx

    from simulator.cost.collectives import Collective as C
    from simulator.graph.ops import Op, OpKind
    from simulator.graph.schedule import schedule

    g = nx.DiGraph()
    ops = [Op("a", OpKind.MATMUL, duration=1.0),
           Op("a2a", OpKind.COLLECTIVE, stream="ep", collective=C.ALL_TO_ALL, axis="expert",
              duration=2.0),
           Op("ag", OpKind.COLLECTIVE, stream="tp", collective=C.ALL_GATHER, axis="model",
              duration=0.5),
           Op("b", OpKind.MATMUL, duration=1.0)]
    for op in ops:
        g.add_node(op.name, op=op)
    g.add_edges_from([("a", "a2a"), ("a2a", "ag"), ("ag", "b")])
    sc = schedule(g)
    assert sc.end["b"] == pytest.approx(4.5)
    parts = sc.window(-1, 10)
    assert parts["comm.all_to_all.expert"] == pytest.approx(2.0)
    assert parts["comm.all_gather.model"] == pytest.approx(0.5)
    assert parts["compute"] == pytest.approx(2.0)


def test_fp32_jobs_store_four_byte_activations(gpu_profile):
    fp32 = gpu_profile.model_copy(update={"chip": gpu_profile.chip.model_copy(update={
        "peak_flops_per_s": {**gpu_profile.chip.peak_flops_per_s,
                             "fp32": gpu_profile.chip.peak_flops_per_s["bf16"]}})})
    a = predict(model=TINY, hardware=fp32, chips=1, precision="bf16")
    b = predict(model=TINY, hardware=fp32, chips=1, precision="fp32")
    assert b.memory.activations_bytes == pytest.approx(2 * a.memory.activations_bytes)
    assert b.step_time_s > a.step_time_s  # same FLOP/s, twice the bytes moved
    from meshcast.errors import MeshcastError

    with pytest.raises(MeshcastError, match="precision: synthetic has no peak for 'fp32'"):
        predict(model=TINY, hardware=gpu_profile, chips=1, precision="fp32")


def test_moe_layer_without_expert_axis_reduces_both_gradient_groups(gpu_profile):
    """expert=1, data>1: the non-expert and the expert gradients are both all-reduced over data
    (two nodes; a name clash once dropped the non-expert one)."""
    p = predict(model=MOE, hardware=gpu_profile, chips=8, mesh={"data": 8}, global_batch=8)
    ops = _nodes(p)
    dense, experts = ops["L1.grad_data"], ops["L1.grad_data_experts"]
    m = MOE
    assert dense.nbytes == pytest.approx((m.attention_params + m.router_params) * 4)
    assert experts.nbytes == pytest.approx(m.moe.n_experts * m.expert_params * 4)


def test_embedding_lookup_runs_on_the_gather_curve_and_its_gradient_writes_the_table(gpu_profile):
    """The lookup is a gather (its own efficiency curve when the profile has one); its backward
    scatter-adds into the dense V x D gradient table, whose bytes it counts."""
    p = predict(model=TINY, hardware=gpu_profile, chips=1, mesh={"data": 1}, global_batch=1)
    fwd, bwd = _nodes(p)["embed.embed"], _nodes(p)["embed.bwd.embed"]
    assert fwd.gather and bwd.gather
    assert bwd.nbytes == pytest.approx(2 * fwd.nbytes + TINY.vocab_size * TINY.d_model * 4)
    half = gpu_profile.model_copy(update={"efficiency": gpu_profile.efficiency.model_copy(
        update={"gather": gpu_profile.efficiency.memory.model_copy(update={"max_efficiency": 0.5})})})
    slow = predict(model=TINY, hardware=half, chips=1, mesh={"data": 1}, global_batch=1)
    launch = gpu_profile.chip.launch_overhead_s.value
    for name in ("embed.embed", "embed.bwd.embed"):
        a, b = _nodes(p)[name], _nodes(slow)[name]
        assert b.duration - launch == pytest.approx(2 * (a.duration - launch))
    assert _nodes(slow)["L0.mlp_norm"].duration == _nodes(p)["L0.mlp_norm"].duration


def test_collectives_on_compute_cores_do_not_overlap(gpu_profile):
    """A host whose collectives are copies on the compute cores: every collective runs on the
    compute stream, so the step is the sum of all its ops; with a network they overlap. The
    search ranks such a host too, with the same step times."""
    from simulator.search import make_space, rank

    host = gpu_profile.model_copy(update={"chip": gpu_profile.chip.model_copy(
        update={"collectives_use_compute": True})})
    kw = dict(model=TINY, chips=8, mesh={"data": 8}, global_batch=8, remat="none")
    serial, overlapped = predict(hardware=host, **kw), predict(hardware=gpu_profile, **kw)
    ops = list(_nodes(serial).values())
    assert all(op.stream == COMPUTE for op in ops)
    assert serial.step_time_s == pytest.approx(sum(op.duration for op in ops), rel=1e-9)
    assert overlapped.step_time_s < serial.step_time_s
    res = rank(make_space(TINY, host, 8, global_batch=8), top=3)
    assert res.top and all(f.fast_step_s == pytest.approx(f.prediction.step_time_s, rel=1e-9)
                           for f in res.top)
