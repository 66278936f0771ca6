"""Dropless MoE issued eagerly by the host (ShardingSpec.moe_host_issue_s): the dispatch-to-
combine part of each MoE layer takes at least its ops times the host's issue time."""

from __future__ import annotations

import pytest

from hardware_profiles import load_profile
from simulator.analysis.attribution import attribute
from simulator.graph.dims import Dims
from simulator.graph.layers import layer_template
from simulator.graph.ops import OpKind
from simulator.graph.step import backward_of, recompute_of
from simulator.predict import predict_job
from simulator.specs.job import make_job
from simulator.specs.sharding import make_sharding
from simulator.specs.zoo import load_model

H100 = load_profile("h100-sxm")


def _job(model="mixtral-8x7b", host=0.0, cf=None, **fields):
    m = load_model(model)
    if cf is not None:
        m = m.model_copy(update={"moe": m.moe.model_copy(update={"capacity_factor": cf})})
    sh = make_sharding(mesh={"expert": 8}, micro_batch=1, global_batch=8, seq_len=2048,
                       moe_host_issue_s=host, **fields)
    return make_job(m, sh, H100, 8)


def _host_ops(job):
    fwd = layer_template(job.model, Dims.from_job(job), True)
    return fwd, [op for op in fwd if op.kind is OpKind.HOST]


def test_the_host_op_stands_for_the_dispatch_to_combine_ops():
    fwd, host = _host_ops(_job(host=1e-4))
    assert len(host) == 1 and host[0].deps == ["router_topk"]
    names = [op.name for op in fwd]
    issued = names[names.index("moe_host") + 1: names.index("combine") + 1]
    assert issued == ["dispatch", "a2a_dispatch", "expert_in", "expert_act", "expert_out",
                      "a2a_combine", "combine"]
    assert host[0].host_s == pytest.approx(len(issued) * 1e-4)
    combine = next(op for op in fwd if op.name == "combine")
    assert "moe_host" in combine.deps
    # mirrored in the backward: starts with the combine's gradient, ends before the router's
    bwd = {op.name: op for op in backward_of(fwd)}
    assert bwd["bwd.moe_host"].deps == ["bwd.combine"]
    assert "bwd.moe_host" in bwd["bwd.router_topk"].deps
    assert [op.name for op in recompute_of(fwd, "full") if op.kind is OpKind.HOST] == ["re.moe_host"]


def test_no_host_op_when_off_token_drop_or_dense():
    assert _host_ops(_job())[1] == []
    assert _host_ops(_job(host=1e-4, cf=2.0))[1] == []  # static shapes: captured
    dense = make_job(load_model("llama3-8b"), make_sharding(mesh={"data": 8}, micro_batch=1,
                     global_batch=8, seq_len=2048, moe_host_issue_s=1e-4), H100, 8)
    assert not [op for op in layer_template(dense.model, Dims.from_job(dense), False)
                if op.kind is OpKind.HOST]


def test_a_host_bound_layer_costs_its_ops_times_the_issue_time():
    """Far beyond the device's time, each extra second per op adds ``ops x layers`` seconds per
    pass: 7 ops forward and 7 backward per layer, one micro-batch per step."""
    m = load_model("mixtral-8x7b")
    a, b = (predict_job(_job(host=h)).step_time_s for h in (0.02, 0.03))
    assert b - a == pytest.approx(0.01 * 7 * 2 * m.n_layers, rel=0.02)


def test_token_drop_and_off_are_unchanged_and_the_host_shows_in_the_breakdown():
    base = predict_job(_job()).step_time_s
    # a host op that never binds (far below the device's time) changes nothing
    assert predict_job(_job(host=1e-9)).step_time_s == pytest.approx(base, rel=1e-12)
    drop = predict_job(_job(cf=2.0)).step_time_s
    assert predict_job(_job(host=5e-3, cf=2.0)).step_time_s == drop
    eager = predict_job(_job(host=5e-3))
    assert eager.step_time_s > base
    assert eager.breakdown_s["host"] > 0
    att = attribute(eager)  # raises if the per-op split disagrees with the breakdown
    assert att.by_tag["moe_host"] == pytest.approx(eager.breakdown_s["host"])
    assert att.by_part["dispatch_combine"] >= att.by_tag["moe_host"]


def test_negative_issue_time_is_refused():
    from meshcast.errors import MeshcastError

    with pytest.raises((MeshcastError, ValueError), match="moe_host_issue_s"):
        _job(host=-1e-4)
