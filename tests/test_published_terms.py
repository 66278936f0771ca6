"""Modelling switches added for published runs: TP comm overlap and the fp8 matmul curve. Both
default to off / absent, leaving every other forecast as it was."""

from __future__ import annotations

import pytest

from hardware_profiles import load_profile
from simulator.predict import predict
from simulator.published.terms import with_values

JOB = dict(model="llama3-8b", chips=8, seq_len=4096, global_batch=16, remat="none")


def _exposed_tp(p) -> float:
    return sum(v for k, v in p.breakdown_s.items() if k.endswith(".model"))


def test_tp_overlap_hides_tp_collectives_behind_gemms():
    hw = load_profile("h100-sxm")
    plain = predict(hardware=hw, mesh={"model": 8}, **JOB)
    over = predict(hardware=hw, mesh={"model": 8}, tp_comm_overlap=True, **JOB)
    assert over.step_time_s < plain.step_time_s
    assert _exposed_tp(over) < 0.5 * _exposed_tp(plain)
    # it cannot beat the links: a micro-batch is never shorter than the model axis' traffic
    links = sum(a["op"].duration for a in over.critical.graph.nodes.values()
                if a["op"].axis == "model" and a["op"].phase in ("fwd", "bwd"))
    assert links > 0 and over.critical.t_mb >= links


def test_tp_overlap_is_a_no_op_without_tensor_parallelism():
    hw = load_profile("h100-sxm")
    a = predict(hardware=hw, mesh={"data": 8}, **JOB)
    b = predict(hardware=hw, mesh={"data": 8}, tp_comm_overlap=True, **JOB)
    assert a.step_time_s == b.step_time_s


def test_fp8_curve_applies_to_fp8_and_fp4_only():
    """fp4 runs on the fp8 curve while the profile has no fp4 curve of its own."""
    hw = load_profile("b200")
    slow = with_values(hw, {"matmul_fp8": 0.3}, "test: a low fp8 efficiency")
    for prec in ("fp8", "fp4"):
        assert (predict(hardware=slow, mesh={"data": 8}, precision=prec, **JOB).step_time_s
                > predict(hardware=hw, mesh={"data": 8}, precision=prec, **JOB).step_time_s)
    assert (predict(hardware=slow, mesh={"data": 8}, precision="bf16", **JOB).step_time_s
            == pytest.approx(predict(hardware=hw, mesh={"data": 8}, precision="bf16", **JOB)
                             .step_time_s, rel=1e-15))


def test_fp4_curve_applies_to_fp4_only():
    hw = load_profile("b200")
    slow = with_values(hw, {"matmul_fp4": 0.2}, "test: a low fp4 efficiency")
    t = {prec: (predict(hardware=slow, mesh={"data": 8}, precision=prec, **JOB).step_time_s,
                predict(hardware=hw, mesh={"data": 8}, precision=prec, **JOB).step_time_s)
         for prec in ("fp4", "fp8")}
    assert t["fp4"][0] > t["fp4"][1] and t["fp8"][0] == t["fp8"][1]


MOE = dict(model="qwen3-30b-a3b", chips=16, seq_len=4096, global_batch=32, remat="none")


def test_ep_overlap_hides_all_to_alls_but_keeps_the_link_floor():
    hw = load_profile("h100-sxm")
    plain = predict(hardware=hw, mesh={"expert": 16}, **MOE)
    over = predict(hardware=hw, mesh={"expert": 16}, ep_comm_overlap=True, **MOE)
    a2a = lambda p: p.breakdown_s.get("comm.all_to_all.expert", 0.0)  # noqa: E731
    assert a2a(plain) > 0 and over.step_time_s < plain.step_time_s
    assert a2a(over) < a2a(plain)
    # the all-to-alls still occupy the expert links: a micro-batch is never shorter than them
    links = sum(a["op"].duration for a in over.critical.graph.nodes.values()
                if a["op"].axis == "expert" and a["op"].phase in ("fwd", "bwd"))
    assert over.critical.t_mb >= links


def test_ep_overlap_is_a_no_op_for_dense_models():
    hw = load_profile("h100-sxm")
    a = predict(hardware=hw, mesh={"data": 8}, **JOB)
    b = predict(hardware=hw, mesh={"data": 8}, ep_comm_overlap=True, **JOB)
    assert a.step_time_s == b.step_time_s
