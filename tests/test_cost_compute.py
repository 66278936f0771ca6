"""The attention curve's shape factor (issue 13 item 2): fused attention reaches less of peak at
short sequences and small head dims, ``eff = e_max * x / (x + x_half) * s / (s + seq_half) *
hd / (hd + head_dim_half)`` (EfficiencyCurve), one function
(simulator.cost.compute.attention_shape_factor) on the graph and the search paths."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from hardware_profiles import load_profile
from hardware_profiles.schema import EfficiencyCurve
from simulator.cost.compute import ComputeModel, attention_shape_factor
from simulator.graph.dims import Dims
from simulator.graph.layers import layer_template
from simulator.graph.ops import OpKind
from simulator.predict import predict, predict_job
from simulator.search import enumerate_candidates, make_space
from simulator.search.fast import memory_per_device, step_times
from simulator.specs.job import make_job
from simulator.specs.zoo import load_model
from tests.test_search_agreement import TOLERANCE, _sample

SEQ_HALF, HD_HALF = 2048.0, 32.0


def _shaped(name="h100-sxm", seq_half=SEQ_HALF, head_dim_half=0.0):
    """A built-in profile whose attention curve also depends on the kernel's shape."""
    p = load_profile(name)
    att = p.efficiency.attention.model_copy(update={"seq_half": seq_half,
                                                    "head_dim_half": head_dim_half})
    return p.model_copy(update={"efficiency": p.efficiency.model_copy(update={"attention": att})})


def test_factor_is_one_when_both_halves_are_zero():
    assert attention_shape_factor(512, 64) == 1.0
    assert attention_shape_factor(512, 64, 0.0, 0.0) == 1.0
    s = np.array([128.0, 4096.0, 131072.0])
    assert np.all(attention_shape_factor(s, 128.0) == 1.0)
    assert attention_shape_factor(None, None, SEQ_HALF, HD_HALF) == 1.0  # shape not known


def test_factor_formula_on_floats_and_arrays():
    f = attention_shape_factor(4096.0, 128.0, SEQ_HALF, HD_HALF)
    assert f == pytest.approx(4096 / (4096 + SEQ_HALF) * 128 / (128 + HD_HALF), rel=1e-15)
    s = np.array([1024.0, 4096.0])
    arr = attention_shape_factor(s, 128.0, SEQ_HALF, HD_HALF)
    assert arr.shape == (2,)
    assert arr[1] == f  # the same function, element by element
    assert attention_shape_factor(SEQ_HALF, 64.0, SEQ_HALF) == 0.5


def test_flat_profiles_are_unchanged():
    """Every built-in profile keeps the size-only curve: halves 0, attention_time as before."""
    from hardware_profiles.loader import list_profiles

    for p in list_profiles():
        a = p.efficiency.attention
        assert (a.seq_half, a.head_dim_half) == (0.0, 0.0), p.name
    cm = ComputeModel.from_profile(load_profile("h100-sxm"), "bf16")
    flops, nbytes = 3.1e11, 4.0e7
    before = max(flops / (cm.attention_peak_flops * cm.attention.at(flops)),
                 cm.memory_time(nbytes)) + cm.launch_s
    assert cm.attention_time(flops, nbytes) == before
    assert cm.attention_time(flops, nbytes, seq=512, head_dim=64) == before


def test_longer_sequences_and_larger_head_dims_get_a_higher_efficiency():
    cm = ComputeModel.from_profile(_shaped(head_dim_half=HD_HALF), "bf16")
    flops = 1e12  # same FLOPs, compute bound: time is flops / (peak * eff)
    times = [cm.attention_time(flops, 0.0, seq=s, head_dim=128) for s in (512, 2048, 8192, 32768)]
    assert all(a > b for a, b in zip(times, times[1:]))
    by_hd = [cm.attention_time(flops, 0.0, seq=4096, head_dim=h) for h in (64, 128, 256)]
    assert all(a > b for a, b in zip(by_hd, by_hd[1:]))
    flat = ComputeModel.from_profile(load_profile("h100-sxm"), "bf16")
    assert times[-1] > flat.attention_time(flops, 0.0)  # the factor only ever slows a kernel


def test_schema_rejects_negative_or_non_finite_halves():
    base = dict(max_efficiency=0.6, half_saturation=1e9, source="test curve")
    assert EfficiencyCurve(**base).seq_half == 0.0
    assert EfficiencyCurve(**base, seq_half=1024, head_dim_half=16).head_dim_half == 16
    for field in ("seq_half", "head_dim_half"):
        for bad in (-1.0, float("nan"), float("inf")):
            with pytest.raises(ValidationError):
                EfficiencyCurve(**base, **{field: bad})


def test_attention_op_carries_the_whole_kv_length_under_context_parallelism():
    """s is the key/value length the kernel sees: cp_kv_ag gathers every K and V, so the local
    s / cp queries attend to all s keys (as the attention FLOPs count them)."""
    m = load_model("llama3-8b")
    for cp in (1, 4):
        d = Dims(b=1, s=8192, t=2, e=1, fs=1, dp=1, cp=cp, pp=1, ab=2.0, wb=2.0, gb=4.0)
        attn = [op for op in layer_template(m, d, False) if op.kind is OpKind.ATTENTION]
        assert [(op.seq, op.head_dim) for op in attn] == [(8192, m.hd)]
        assert attn[0].flops == 4.0 * d.T * d.s * (m.n_heads / d.t) * m.hd * 0.5


def test_long_sequences_forecast_relatively_faster_than_short_ones():
    """With seq_half set, every job is slower than on the flat curve, a short-sequence job more
    so than a long one (same tokens per step)."""
    flat, shaped = load_profile("h100-sxm"), _shaped()
    ratio = {}
    for seq in (1024, 16384):
        job = dict(model="llama3-8b", chips=8, mesh={"data": 8}, seq_len=seq,
                   global_batch_tokens=8 * 16384, remat="full")
        t_flat = predict(hardware=flat, **job).step_time_s
        t_shaped = predict(hardware=shaped, **job).step_time_s
        ratio[seq] = t_shaped / t_flat
    # the sequence factor is 1024 / 3072 = 1/3 against 16384 / 18432 = 0.89, though attention
    # is a smaller share of the short job's compute (here +8.5 % against +3.3 %)
    assert ratio[1024] > ratio[16384] > 1.0


def test_column_cost_of_an_attention_op_is_the_graph_cost():
    """The search costs an op on columns (ColumnCost) with the graph's own cost function: an
    attention op of three configurations at once gets each configuration's float seconds,
    fused and unfused, with and without context parallelism."""
    from simulator.graph.cost import CostContext, cost
    from simulator.search.columns import column
    from simulator.search.stage import ColumnCost

    cm = ComputeModel.from_profile(_shaped(head_dim_half=HD_HALF), "bf16")
    ctx = CostContext(cm, topology=None)
    cc = ColumnCost(cm, np.zeros((3, 1, 2)))
    m = load_model("llama3-8b")
    b = np.array([1, 2, 4])
    for cp, flash in ((1, True), (4, True), (2, False)):
        def dims(bb):
            return Dims(b=bb, s=4096, t=2, e=1, fs=1, dp=1, cp=cp, pp=1, ab=2.0, wb=2.0, gb=4.0,
                        flash=flash)
        ops = [op for op in layer_template(m, dims(column(b)), False) if op.kind is OpKind.ATTENTION]
        assert ops
        for op in ops:
            want = [cost(next(o for o in layer_template(m, dims(int(bb)), False)
                              if o.name == op.name), ctx) for bb in b]
            np.testing.assert_allclose(cost(op, cc), want, rtol=1e-14)
            assert want[0] > ComputeModel.from_profile(
                load_profile("h100-sxm"), "bf16").attention_time(op.flops[0], op.nbytes[0])


@pytest.mark.parametrize("pipelined", [False, True], ids=["no-pipeline", "pipeline"])
def test_search_agrees_with_the_graph_when_seq_half_is_set(pipelined):
    """The fast path's attention uses the same shape factor: agreement with predict, on meshes
    with and without context parallelism, and the factor visibly moves the forecast."""
    hw = _shaped(head_dim_half=HD_HALF)
    space = make_space(model="llama3-8b", hardware=hw, chips=32, seq_len=8192, global_batch=32)
    cands = enumerate_candidates(space)
    mem = memory_per_device(cands)
    fits = mem <= hw.chip.hbm_capacity_bytes.value
    idx = _sample(cands, fits, pipelined, 5, seed=11)
    cp = np.nonzero(fits & (cands.axis("seq") > 1) & ((cands.axis("pipeline") > 1) == pipelined))[0]
    idx = np.unique(np.concatenate([idx, cp[:2]]))
    sub = cands.take(idx)
    assert (sub.axis("seq") > 1).any() and (sub.axis("seq") == 1).any()
    fast = step_times(sub).step_s
    flat_space = make_space(model="llama3-8b", hardware="h100-sxm", chips=32, seq_len=8192,
                            global_batch=32)
    flat_fast = step_times(enumerate_candidates(flat_space).take(idx)).step_s
    # the factor is in the search (a step may also come out slightly faster: the exact
    # schedule hides more of the FSDP reduce-scatter behind slower compute, on both paths)
    assert np.mean(np.abs(fast / flat_fast - 1.0) > 0.01) > 0.5
    for i in range(len(sub)):
        pred = predict_job(make_job(space.model, sub.sharding(i), hw, space.chips))
        assert fast[i] == pytest.approx(pred.step_time_s, rel=TOLERANCE), sub.row(i)
