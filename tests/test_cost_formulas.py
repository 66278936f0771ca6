"""simulator.cost.formulas and the array-capable roofline: each formula against numbers worked by
hand, and the same function on numpy columns against its value on each number (the search calls
it on columns, the graph path on numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from hardware_profiles import load_profile
from hardware_profiles.schema import EfficiencyCurve
from simulator.cost import formulas as f
from simulator.cost.compute import ComputeModel
from simulator.specs.model import ModelSpec, MoESpec
from simulator.specs.sharding import OptimizerSpec

# D=8, N=2, K=1, Hd=4, GELU F=16, V=10: attention 8*4*(2*2+2*1) = 192, FFN 2*8*16 = 256.
TINY = ModelSpec(name="tiny", source="test", n_layers=4, d_model=8, n_heads=2, n_kv_heads=1,
                 ffn_hidden=16, ffn_kind="gelu", vocab_size=10, seq_len=8)
# 4 experts of F_e=6: 2*8*6 = 96 each; router 8*4 = 32.
TINY_MOE = TINY.model_copy(update={"moe": MoESpec(n_experts=4, top_k=2, expert_ffn_hidden=6)})


def test_layer_params_by_hand():
    assert f.layer_params(TINY, 2, 1, False) == (448 / 2, 0.0)
    assert f.layer_params(TINY_MOE, 2, 2, True) == (192 / 2 + 32, 4 * 96 / (2 * 2))


def test_embedding_params_by_hand():
    assert f.embedding_params(TINY, 2, True, True) == 2 * 80 / 2  # untied: input + output
    assert f.embedding_params(TINY, 2, True, False) == 80 / 2
    assert f.embedding_params(TINY, 2, False, False) == 0.0
    tied = TINY.model_copy(update={"tied_embeddings": True})
    assert f.embedding_params(tied, 1, True, True) == 80


def test_stage_params_by_hand():
    # two dense layers + two MoE layers at t=2, e=2, fs=4, first rank with its input table.
    dense, expert = f.stage_params(TINY_MOE, 2, 2, 4, [False, True, False, True], True, False)
    assert dense == (2 * 224 + 2 * 128 + 40) / 4
    assert expert == 2 * 96 / 4


def test_parameter_counts_on_columns_equal_each_number():
    t, e, fs = np.array([1, 2, 1, 2]), np.array([1, 1, 4, 2]), np.array([1, 8, 2, 4])
    kinds = [False, True, True]
    cols = f.stage_params(TINY_MOE, t, e, fs, kinds, True, True)
    for i in range(len(t)):
        one = f.stage_params(TINY_MOE, int(t[i]), int(e[i]), int(fs[i]), kinds, True, True)
        assert (cols[0][i], cols[1][i]) == one


def test_optimizer_bytes_per_param_by_hand():
    adam = OptimizerSpec()  # fp32 master, fp32 moments, fp32 gradients
    assert f.optimizer_state_bytes_per_param(adam) == 4 + 2 * 4
    assert f.optimizer_update_bytes_per_param(adam, 4) == 8 + 4 + 4 * 4 + 2
    lean = OptimizerSpec(state_dtype="bf16", grad_dtype="bf16", master_weights=False)
    assert f.optimizer_state_bytes_per_param(lean) == 2 * 2
    assert f.optimizer_update_bytes_per_param(lean, 2) == 0 + 2 + 4 * 2 + 2
    assert np.array_equal(f.optimizer_update_bytes_per_param(adam, np.array([4, 2])), [30, 28])


def test_replicas_of_a_parameter_by_hand_and_on_columns():
    """Non-expert weights are copied on data x expert x seq ranks, experts on data x seq; the
    group names leave out axes of one chip; a distributed optimizer shards over the replicas."""
    assert f.replica_sizes(4, 2, 2) == (16, 8)
    assert f.replica_axes(2, 2) == ("data+expert+seq", "data+seq")
    assert f.replica_axes(1, 2) == ("data+seq", "data+seq")
    assert f.replica_axes(4, 1) == ("data+expert", "data")
    assert f.replica_axes(1, 1) == ("data", "data")
    assert f.optimizer_shards(True, 4, 2, 2) == (16, 8)
    assert f.optimizer_shards(False, 4, 2, 2) == (1, 1)
    dp, e, cp = np.array([1, 2, 8]), np.array([4, 1, 2]), np.array([2, 2, 1])
    dense, expert = f.replica_sizes(dp, e, cp)
    assert np.array_equal(dense, [8, 4, 16]) and np.array_equal(expert, [2, 4, 8])


def test_stage_layers_interleave_chunks():
    assert f.stage_layers(8, 2, 1) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert f.stage_layers(8, 2, 2) == [[0, 1, 4, 5], [2, 3, 6, 7]]
    assert f.stage_layers(6, 3, 2) == [[0, 3], [1, 4], [2, 5]]
    assert f.stage_layers(4, 1, 1) == [[0, 1, 2, 3]]


def test_warmup_forwards_by_hand_and_on_columns():
    """1F1B: rank r of 4 runs 3 - r forwards first (fewer if m is short); interleaved with v = 2:
    2 (pp - r - 1) + (v - 1) pp chunks, at most m v."""
    assert [int(f.warmup_forwards(r, 4, 8, 1)) for r in range(4)] == [3, 2, 1, 0]
    assert int(f.warmup_forwards(0, 4, 2, 1)) == 2
    assert [int(f.warmup_forwards(r, 4, 8, 2)) for r in range(4)] == [10, 8, 6, 4]
    assert int(f.warmup_forwards(0, 4, 4, 3)) == 12  # 2 * 3 + 2 * 4 = 14 chunks, capped at m v
    cols = f.warmup_forwards(np.array([0, 3, 0]), 4, np.array([8, 8, 4]), np.array([1, 2, 3]))
    assert np.array_equal(cols, [3, 4, 12])


def test_pipeline_send_bytes_by_hand():
    # T = 2 * 4096 // 2 = 4096 tokens, D / t = 1024, 2 bytes each.
    assert f.pipeline_send_bytes(2, 4096, 2, 4096, 4) == 4096 * 1024 * 2
    assert f.tokens_per_device(3, 5, 2) == 7  # floor: b * s // cp
    cols = f.pipeline_send_bytes(np.array([1, 2]), 4096, np.array([1, 2]), 4096, np.array([1, 4]))
    assert np.array_equal(cols, [4096 * 4096 * 2, 4096 * 1024 * 2])


def test_mfu_by_hand():
    assert f.mfu(1e15, 2.0, 8, 1e15) == 1 / 16
    assert np.allclose(f.mfu(1e15, np.array([1.0, 4.0]), 8, 1e15), [1 / 8, 1 / 32], rtol=0,
                       atol=0)


def test_efficiency_curve_by_hand_and_on_arrays():
    c = EfficiencyCurve(max_efficiency=0.8, half_saturation=1e9, source="test")
    assert c.at(1e9) == 0.4
    assert c.at(0.0) == 0.8  # no op: the ceiling, never a division by zero
    x = np.array([0.0, 1.0, 1e6, 1e9, 3e12])
    assert np.array_equal(c.at(x), [c.at(float(v)) for v in x])
    flat = EfficiencyCurve(max_efficiency=0.5, half_saturation=0.0, source="test")
    assert np.array_equal(flat.at(np.array([0.0, 2.0])), [0.5, 0.5])


@pytest.fixture(scope="module")
def cm() -> ComputeModel:
    return ComputeModel.from_profile(load_profile("h100-sxm"), "bf16")


def test_roofline_by_hand(cm):
    """A GEMM far above its half-saturation is FLOPs bound at ``peak * e_max`` (to 1e-6 of
    it); no FLOPs and no bytes cost the launch alone."""
    flops = 1e18
    want = flops / (cm.peak_flops * cm.matmul.max_efficiency) + cm.launch_s
    assert cm.matmul_time(flops, 1.0) == pytest.approx(want, rel=1e-6)
    assert cm.matmul_time(0.0, 0.0) == cm.launch_s
    assert cm.elementwise_time(0.0) == cm.launch_s
    assert cm.memory_time(0.0) == 0.0
    nbytes = 1e9
    assert cm.memory_time(nbytes) == nbytes / (cm.hbm_bw * cm.memory.at(nbytes))


def test_roofline_on_arrays_equals_each_number(cm):
    flops = np.array([0.0, 1e6, 1e9, 1e12, 1e15, 1e12])
    nbytes = np.array([0.0, 1e3, 1e9, 1e6, 1e9, 0.0])
    unit = np.array([0.0, 0.0, 1e8, 0.0, 1e12, 1e10])
    seq = np.array([128.0, 512.0, 4096.0, 8192.0, 1024.0, 64.0])
    cases = [
        (cm.matmul_time(flops, nbytes, unit),
         [cm.matmul_time(a, b, u) for a, b, u in zip(flops, nbytes, unit)]),
        (cm.attention_time(flops, nbytes, seq=seq, head_dim=128.0),
         [cm.attention_time(a, b, seq=s, head_dim=128.0) for a, b, s in zip(flops, nbytes, seq)]),
        (cm.elementwise_time(nbytes), [cm.elementwise_time(b) for b in nbytes]),
        (cm.gather_time(nbytes), [cm.gather_time(b) for b in nbytes]),
        (cm.memory_time(nbytes), [cm.memory_time(b) for b in nbytes]),
    ]
    for cols, numbers in cases:
        assert np.array_equal(cols, numbers)
    # a number against a column broadcasts
    assert np.array_equal(cm.matmul_time(1e12, nbytes), [cm.matmul_time(1e12, b) for b in nbytes])


# --- the distributed optimizer's weight gather under the next step (--overlap-param-gather) -----
def test_param_gather_hidden_by_hand():
    from simulator.cost.formulas import param_gather_hidden

    # 4 chunks of 0.1 s under a 1 s forward: one chunk stays exposed, 0.3 s hidden
    assert param_gather_hidden(0.4, 1.0, 4, 0.4) == pytest.approx(0.3)
    # 4 chunks of 0.5 s under 0.25 s of forward each: exposed 0.5 + 3 x 0.25 = 1.25, hidden 0.75
    assert param_gather_hidden(2.0, 1.0, 4, 2.0) == pytest.approx(0.75)
    # never more than the step spends after its last compute op, never negative
    assert param_gather_hidden(0.4, 1.0, 4, 0.1) == pytest.approx(0.1)
    assert param_gather_hidden(0.0, 1.0, 4, 0.0) == 0.0
    # one chunk (one layer): nothing to hide behind
    assert param_gather_hidden(0.4, 1.0, 1, 0.4) == 0.0
    # on columns, each entry as its own number
    got = param_gather_hidden(np.array([0.4, 2.0]), np.array([1.0, 1.0]), 4, np.array([0.4, 2.0]))
    assert got == pytest.approx([0.3, 0.75])


def test_overlapped_param_gather_shortens_the_step_by_what_it_hides():
    from simulator.predict import predict

    kw = dict(model="llama3-8b", hardware="h100-sxm", chips=32, global_batch=64, seq_len=2048,
              mesh={"data": -1, "model": 4}, distributed_optimizer=True)
    plain, over = predict(**kw), predict(**kw, overlap_param_gather=True)
    ag = "comm.all_gather.data"
    saved = plain.step_time_s - over.step_time_s
    assert saved > 0 and saved == pytest.approx(plain.breakdown_s[ag] - over.breakdown_s[ag])
    assert sum(over.breakdown_s.values()) == pytest.approx(over.step_time_s, rel=1e-12)
    # one chunk per layer of the rank stays exposed at least
    assert over.breakdown_s[ag] >= plain.breakdown_s[ag] / 32 - 1e-12


def test_overlap_param_gather_needs_the_distributed_optimizer():
    from meshcast.errors import MeshcastError
    from simulator.specs.sharding import make_sharding

    with pytest.raises(MeshcastError) as e:
        make_sharding(overlap_param_gather=True)
    assert "overlap_param_gather" in str(e.value) and "distributed_optimizer" in str(e.value)
