"""Property tests (hypothesis) of whole-step forecasts on the h100-sxm profile.

Small dense and MoE models are built inline; meshes are drawn so that every axis divides what it
must (chips, heads, experts, layers), and the properties are checked on the resulting predictions:
monotonicity in hardware speed, data-parallel scaling, memory vs micro-batch, the breakdown
summing to the step time, and "every bad input is a MeshcastError".
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hardware_profiles import load_profile
from hardware_profiles.schema import HardwareProfile
from meshcast.errors import MeshcastError
from simulator.predict import StepPrediction, predict
from simulator.specs.model import ModelSpec, MoESpec

H100 = load_profile("h100-sxm")

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
REL = 1e-9  # float slack for "never larger" comparisons


# --- strategies --------------------------------------------------------------------------------

@st.composite
def models(draw, moe: bool | None = None) -> ModelSpec:
    """A small dense or MoE decoder (heads, kv heads, layers and experts all powers of two)."""
    is_moe = draw(st.booleans()) if moe is None else moe
    n_heads = draw(st.sampled_from([4, 8]))
    kv = draw(st.sampled_from([k for k in (1, 2, 4, 8) if n_heads % k == 0]))
    d_model = draw(st.sampled_from([128, 256]))
    n_layers = draw(st.sampled_from([1, 2, 4, 8]))
    spec = dict(
        name="prop-moe" if is_moe else "prop-dense", source="hypothesis property test",
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_kv_heads=kv,
        ffn_hidden=draw(st.sampled_from([256, 512, 1024])),
        ffn_kind=draw(st.sampled_from(["swiglu", "gelu"])),
        vocab_size=draw(st.sampled_from([256, 1000])),
        seq_len=draw(st.sampled_from([128, 256, 512])),
        tied_embeddings=draw(st.booleans()),
    )
    if is_moe:
        n_experts = draw(st.sampled_from([2, 4, 8]))
        spec["moe"] = MoESpec(
            n_experts=n_experts,
            top_k=draw(st.integers(1, min(2, n_experts))),
            capacity_factor=draw(st.sampled_from([None, 1.0, 2.0])),
            expert_ffn_hidden=draw(st.sampled_from([128, 256])),
            n_shared_experts=draw(st.sampled_from([0, 1])),
            layer_interval=draw(st.sampled_from([1, 2])),
            dispatch=draw(st.sampled_from(["einsum", "gather"])),
            load_imbalance=draw(st.sampled_from([1.0, 1.5])),
        )
    return ModelSpec(**spec)


def _log2(n: int) -> int:
    return n.bit_length() - 1


@st.composite
def jobs(draw, moe: bool | None = None, max_log_chips: int = 6) -> dict:
    """Keyword arguments for ``predict``: a model, power-of-two chips and a mesh that fits them."""
    model = draw(models(moe))
    k = draw(st.integers(0, max_log_chips))
    left = k
    mesh: dict[str, int] = {}
    limits = {
        "model": _log2(math.gcd(model.n_heads, model.kv_heads)),
        "pipeline": _log2(model.n_layers),
        "expert": _log2(model.moe.n_experts) if model.moe else 0,
        "seq": 1,  # seq_len >= 128, so seq=2 always divides it
        "fsdp": k,
    }
    for axis in draw(st.permutations(list(limits))):
        e = draw(st.integers(0, min(limits[axis], left)))
        if e:
            mesh[axis] = 2 ** e
            left -= e
    # the rest on data, written either explicitly or as -1
    if draw(st.booleans()):
        mesh["data"] = -1
    elif left:
        mesh["data"] = 2 ** left
    chips = 2 ** k
    pp = mesh.get("pipeline", 1)
    m = draw(st.integers(1, 3))
    schedule, v = "1f1b", 1
    if pp > 1 and model.n_layers % (2 * pp) == 0 and draw(st.booleans()):
        schedule, v, m = "interleaved", 2, pp * draw(st.integers(1, 2))
    micro_batch = draw(st.integers(1, 2))
    shards = 2 ** left * mesh.get("fsdp", 1) * mesh.get("expert", 1)
    return dict(
        model=model, chips=chips, mesh=mesh, micro_batch=micro_batch,
        global_batch=micro_batch * shards * m,
        remat=draw(st.sampled_from(["none", "selective", "full"])),
        precision=draw(st.sampled_from(["bf16", "bf16", "fp8"])),
        distributed_optimizer=draw(st.booleans()),
        pipeline_schedule=schedule, virtual_stages=v,
    )


def run(kw: dict, hw: HardwareProfile = H100) -> StepPrediction:
    return predict(hardware=hw, **kw)


# --- profile edits -----------------------------------------------------------------------------

def _scaled(sourced, factor: float):
    return sourced.model_copy(update={"value": sourced.value * factor})


def scale_links(hw: HardwareProfile, factor: float, level: str | None) -> HardwareProfile:
    """Multiply one network level's (or, with ``level=None``, every level's) link bandwidth."""
    net = [lv.model_copy(update={"link_bandwidth_bytes_per_s":
                                 _scaled(lv.link_bandwidth_bytes_per_s, factor)})
           if level in (None, lv.name) else lv for lv in hw.network]
    return hw.model_copy(update={"network": net})


def scale_bf16(hw: HardwareProfile, factor: float) -> HardwareProfile:
    peaks = dict(hw.chip.peak_flops_per_s)
    peaks["bf16"] = _scaled(peaks["bf16"], factor)
    return hw.model_copy(update={"chip": hw.chip.model_copy(update={"peak_flops_per_s": peaks})})


def scale_hbm_bw(hw: HardwareProfile, factor: float) -> HardwareProfile:
    chip = hw.chip.model_copy(update={"hbm_bandwidth_bytes_per_s":
                                      _scaled(hw.chip.hbm_bandwidth_bytes_per_s, factor)})
    return hw.model_copy(update={"chip": chip})


factors = st.floats(1.0, 16.0, allow_nan=False, allow_infinity=False)
level_names = st.sampled_from([None] + [lv.name for lv in H100.network])


def test_profile_edits_take_effect():
    """The helpers change exactly the number they claim to (so the properties test something)."""
    assert scale_links(H100, 2.0, "ib").network[1].link_bandwidth_bytes_per_s.value == 100e9
    assert scale_links(H100, 2.0, "ib").network[0].link_bandwidth_bytes_per_s.value == 450e9
    assert scale_bf16(H100, 2.0).peak_flops("bf16") == 2 * H100.peak_flops("bf16")
    assert scale_hbm_bw(H100, 2.0).chip.hbm_bandwidth_bytes_per_s.value == 6.7e12
    kw = dict(model=ModelSpec(name="t", source="inline", n_layers=2, d_model=256, n_heads=4,
                              ffn_hidden=512, vocab_size=256, seq_len=256),
              chips=16, mesh={"data": -1})
    base = run(kw).step_time_s
    assert run(kw, scale_links(H100, 10.0, "ib")).step_time_s < base
    assert run(kw, scale_bf16(H100, 10.0)).step_time_s < base
    assert run(kw, scale_hbm_bw(H100, 10.0)).step_time_s < base


# --- monotone in hardware speed ----------------------------------------------------------------

@settings(max_examples=40, **SETTINGS)
@given(kw=jobs(), factor=factors, level=level_names)
def test_more_link_bandwidth_never_slower(kw, factor, level):
    base = run(kw)
    fast = run(kw, scale_links(H100, factor, level))
    assert fast.step_time_s <= base.step_time_s * (1 + REL), (base.breakdown_s, fast.breakdown_s)


@settings(max_examples=40, **SETTINGS)
@given(kw=jobs(), factor=factors)
def test_more_peak_flops_never_slower(kw, factor):
    base = run(kw)
    fast = run(kw, scale_bf16(H100, factor))
    assert fast.step_time_s <= base.step_time_s * (1 + REL), (base.breakdown_s, fast.breakdown_s)


@settings(max_examples=40, **SETTINGS)
@given(kw=jobs(), factor=factors)
def test_more_hbm_bandwidth_never_slower(kw, factor):
    base = run(kw)
    fast = run(kw, scale_hbm_bw(H100, factor))
    assert fast.step_time_s <= base.step_time_s * (1 + REL), (base.breakdown_s, fast.breakdown_s)


@settings(max_examples=25, **SETTINGS)
@given(kw=jobs(), factor=factors)
def test_everything_faster_never_slower(kw, factor):
    fast_hw = scale_hbm_bw(scale_bf16(scale_links(H100, factor, None), factor), factor)
    assert run(kw, fast_hw).step_time_s <= run(kw).step_time_s * (1 + REL)


# --- data-parallel scaling ---------------------------------------------------------------------

@st.composite
def dp_jobs(draw) -> dict:
    """A job whose data axis can double: explicit data size, chips <= 32 (so 2x fits h100-sxm)."""
    kw = draw(jobs(max_log_chips=5))
    mesh = {a: v for a, v in kw["mesh"].items() if a != "data"}
    fixed = math.prod(mesh.values())
    mesh["data"] = kw["chips"] // fixed
    kw["mesh"] = mesh
    return kw


def _double_data(kw: dict) -> dict:
    out = dict(kw)
    out["mesh"] = dict(kw["mesh"], data=2 * kw["mesh"]["data"])
    out["chips"] = 2 * kw["chips"]
    out["global_batch"] = 2 * kw["global_batch"]
    return out


@settings(max_examples=40, **SETTINGS)
@given(kw=dp_jobs())
def test_more_data_replicas_at_fixed_per_device_batch_never_faster(kw):
    # ZeRO-1 (distributed_optimizer) shards the optimizer update over data, so more replicas can
    # legitimately shorten a step whose optimizer update outweighs the added gradient traffic;
    # see test_zero1_more_replicas_can_be_faster_through_the_optimizer below.
    kw = dict(kw, distributed_optimizer=False)
    small, big = run(kw), run(_double_data(kw))
    assert big.microbatches == small.microbatches
    assert big.step_time_s >= small.step_time_s * (1 - REL), (small.breakdown_s, big.breakdown_s)
    # and the throughput never more than doubles
    assert big.tokens_per_s <= 2 * small.tokens_per_s * (1 + REL)


def test_zero1_more_replicas_can_be_faster_through_the_optimizer():
    """The exception to the property above, pinned: a tiny MoE on 1 -> 2 chips with ZeRO-1 gets
    faster because the (per-device) optimizer update halves and outweighs the added comm."""
    model = ModelSpec(name="tiny-moe", source="inline", n_layers=4, d_model=128, n_heads=4,
                      n_kv_heads=1, ffn_hidden=256, vocab_size=256, seq_len=128,
                      moe=MoESpec(n_experts=4, top_k=1, capacity_factor=None,
                                  expert_ffn_hidden=256))
    kw = dict(model=model, chips=1, mesh={"data": 1}, micro_batch=1, global_batch=1,
              remat="none", precision="fp8", distributed_optimizer=True)
    small, big = run(kw), run(_double_data(kw))
    assert big.breakdown_s["optimizer"] < small.breakdown_s["optimizer"]
    assert big.breakdown_s["compute"] == pytest.approx(small.breakdown_s["compute"], rel=1e-12)
    # without ZeRO-1 the same doubling is never faster
    kw["distributed_optimizer"] = False
    assert run(_double_data(kw)).step_time_s >= run(kw).step_time_s


@settings(max_examples=40, **SETTINGS)
@given(model=models(), log_d=st.integers(0, 5), mb=st.integers(1, 3), m=st.integers(1, 3),
       remat=st.sampled_from(["none", "selective", "full"]))
def test_doubling_chips_under_pure_data_parallel_never_doubles_step_time(model, log_d, mb, m, remat):
    d = 2 ** log_d
    kw = dict(model=model, chips=d, mesh={"data": d}, micro_batch=mb, global_batch=mb * d * m,
              remat=remat)
    small, big = run(kw), run(_double_data(kw))
    assert small.step_time_s <= big.step_time_s * (1 + REL)
    assert big.step_time_s < 2 * small.step_time_s, (small.breakdown_s, big.breakdown_s)


# --- memory vs micro-batch ---------------------------------------------------------------------

def _mem(pred: StepPrediction) -> dict:
    return pred.to_dict()["memory"]


@settings(max_examples=40, **SETTINGS)
@given(kw=jobs(), extra=st.integers(1, 3))
def test_memory_grows_with_micro_batch_at_fixed_microbatch_count(kw, extra):
    small = run(kw)
    bigger = dict(kw, micro_batch=kw["micro_batch"] + extra,
                  global_batch=kw["global_batch"] // kw["micro_batch"]
                  * (kw["micro_batch"] + extra))
    big = run(bigger)
    assert big.microbatches == small.microbatches
    ms, mb = _mem(small), _mem(big)
    assert mb["per_device_bytes"] >= ms["per_device_bytes"]
    if ms["activations_bytes"] > 0:
        assert mb["per_device_bytes"] > ms["per_device_bytes"]
    assert mb["capacity_bytes"] == ms["capacity_bytes"]
    if small.job.axis("pipeline") == 1:
        # One stage: its parts move on their own. (With a pipeline the memory reported is the
        # worst rank's, and which rank is worst can switch as the batch grows, e.g. to the last
        # rank with its logits, so the parts may move either way while the total still grows.)
        assert mb["activations_bytes"] > ms["activations_bytes"]
        for k in ("weights_bytes", "gradients_bytes", "optimizer_bytes"):
            assert mb[k] == ms[k]


@settings(max_examples=30, **SETTINGS)
@given(kw=jobs(), mbs=st.lists(st.integers(1, 8), min_size=2, max_size=4, unique=True))
def test_memory_grows_with_micro_batch_default_global_batch(kw, mbs):
    """Default global batch (one micro-batch per shard): memory is increasing in micro_batch."""
    kw = dict(kw, global_batch=None, pipeline_schedule="1f1b", virtual_stages=1)
    mems = [_mem(run(dict(kw, micro_batch=b))) for b in sorted(mbs)]
    for lo, hi in zip(mems, mems[1:]):
        assert hi["per_device_bytes"] >= lo["per_device_bytes"]
        if lo["activations_bytes"] > 0:
            assert hi["per_device_bytes"] > lo["per_device_bytes"]


@settings(max_examples=25, **SETTINGS)
@given(kw=jobs())
def test_every_remat_policy_stores_activations(kw):
    """Even remat=full keeps each layer's input, so the strict property above is never vacuous."""
    assert _mem(run(kw))["activations_bytes"] > 0


# --- breakdown ---------------------------------------------------------------------------------

@settings(max_examples=40, **SETTINGS)
@given(kw=jobs())
def test_breakdown_sums_to_step_time(kw):
    pred = run(kw)
    d = pred.to_dict()
    assert d["step_time_s"] > 0 and math.isfinite(d["step_time_s"])
    assert all(v >= -1e-12 * d["step_time_s"] for v in d["breakdown_s"].values()), d["breakdown_s"]
    assert math.isclose(sum(d["breakdown_s"].values()), d["step_time_s"],
                        rel_tol=1e-9, abs_tol=0.0), d["breakdown_s"]
    assert 0 < d["mfu"] < 1
    assert d["tokens_per_s"] == pytest.approx(pred.job.tokens_per_step / d["step_time_s"])


# --- bad inputs --------------------------------------------------------------------------------

AXES = ["data", "fsdp", "expert", "model", "pipeline", "seq"]
sizes = st.one_of(st.integers(-3, 9), st.sampled_from([16, 24, 32, 48, 64, 4096, 10**6]))
mesh_dicts = st.dictionaries(
    st.one_of(st.sampled_from(AXES), st.sampled_from(["tensor", "Data", ""])),
    st.one_of(sizes, st.sampled_from([2.0, 2.5, "4", "x", None])),
    max_size=4,
)
maybe_int = st.one_of(st.none(), st.integers(-2, 200), st.sampled_from([10**4, 3.5, "8"]))
BAD_EXTRAS = {
    "global_batch_tokens": maybe_int,
    "virtual_stages": st.integers(-1, 4),
    "pipeline_schedule": st.sampled_from(["1f1b", "interleaved", "gpipe"]),
    "remat": st.sampled_from(["none", "selective", "full", "some"]),
    "precision": st.sampled_from(["bf16", "fp8", "fp4"]),
    "bindings": st.dictionaries(st.sampled_from(AXES + ["tensor"]),
                                st.lists(st.sampled_from(["nvlink", "ib", "dcn"]), max_size=2),
                                max_size=2),
    "axis_order": st.permutations(AXES) | st.just(["data"]),
    "slice_shape": st.just([4, 4]),
    "distributed_optimizer": st.booleans(),
}


def _predict_or_meshcast_error(**kw) -> None:
    """Either a sane prediction or a MeshcastError with a message; any other exception fails."""
    try:
        pred = predict(hardware="h100-sxm", **kw)
    except MeshcastError as e:
        assert str(e).strip()
        event("MeshcastError")
        return
    event("predicted")
    assert pred.step_time_s > 0 and math.isfinite(pred.step_time_s)
    assert math.isclose(sum(pred.breakdown_s.values()), pred.step_time_s, rel_tol=1e-9)


@settings(max_examples=100, **SETTINGS)
@given(model=models(), chips=st.one_of(st.integers(-2, 70),
                                       st.sampled_from([96, 4096, 10**7, 8.0, 8.5, "8", "x"])),
       mesh=mesh_dicts, micro_batch=st.one_of(st.integers(-1, 5), st.just(2.5)),
       global_batch=maybe_int, seq_len=st.one_of(st.none(), st.integers(-1, 3), st.just(128)),
       extra=st.fixed_dictionaries({}, optional=BAD_EXTRAS))
def test_random_inputs_raise_meshcast_error_only(model, chips, mesh, micro_batch, global_batch,
                                                 seq_len, extra):
    """Wholly random meshes, batches and chip counts (nearly all invalid)."""
    _predict_or_meshcast_error(model=model, chips=chips, mesh=mesh, global_batch=global_batch,
                               micro_batch=micro_batch, seq_len=seq_len, **extra)


MUTATIONS = {
    "chips": st.integers(-2, 70) | st.sampled_from([96, 4096, 10**7, 8.5, "x"]),
    "mesh_axis": st.tuples(st.sampled_from(AXES + ["tensor"]), sizes | st.just(None)),
    "mesh_drop": st.sampled_from(AXES),
    "micro_batch": st.integers(-1, 5) | st.just(2**20),
    "global_batch": maybe_int,
    "global_batch_tokens": maybe_int,
    "seq_len": st.integers(-1, 600),
    **{k: v for k, v in BAD_EXTRAS.items() if k != "global_batch_tokens"},
}


@settings(max_examples=100, **SETTINGS)
@given(kw=jobs(), muts=st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=1, max_size=3,
                                unique=True), data=st.data())
def test_mutated_valid_jobs_raise_meshcast_error_only(kw, muts, data):
    """A valid job with one to three fields changed to random (often invalid) values."""
    kw = dict(kw, mesh=dict(kw["mesh"]))
    for name in muts:
        value = data.draw(MUTATIONS[name], label=name)
        if name == "mesh_axis":
            kw["mesh"][value[0]] = value[1]
        elif name == "mesh_drop":
            kw["mesh"].pop(value, None)
        else:
            kw[name] = value
    _predict_or_meshcast_error(**kw)


@settings(max_examples=30, **SETTINGS)
@given(model=st.text(max_size=12) | st.sampled_from(["llama3-8b", "LLAMA3-8B", "nope.yaml",
                                                      "tests", "/", ""]),
       hardware=st.text(max_size=12) | st.sampled_from(["h100-sxm", "H100", "dgx h100",
                                                        "missing.yml", "tests", "/"]))
def test_bad_model_and_hardware_names_raise_meshcast_error_only(model, hardware):
    try:
        predict(model=model, hardware=hardware, chips=8, mesh={"data": -1})
    except MeshcastError as e:
        assert str(e).strip()


_HUGE_PIPELINE_BATCH = r"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))  # 1 GiB: fail fast instead of swapping
from meshcast.errors import MeshcastError
from simulator.predict import predict
from simulator.specs.model import ModelSpec
m = ModelSpec(name="d", source="inline", n_layers=2, d_model=128, n_heads=4, ffn_hidden=256,
              vocab_size=256, seq_len=128)
try:
    p = predict(model=m, hardware="h100-sxm", chips=2, mesh={"pipeline": 2}, global_batch=2**40)
    print("predicted", p.step_time_s)
except MeshcastError as e:
    print("MeshcastError", e)
"""


def test_huge_pipelined_global_batch_answers_or_raises_meshcast_error():
    try:
        r = subprocess.run([sys.executable, "-c", _HUGE_PIPELINE_BATCH], capture_output=True,
                           text=True, timeout=20, cwd=Path(__file__).resolve().parents[1])
    except subprocess.TimeoutExpired:
        pytest.fail("predict() did not return within 20 s")
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith(("predicted", "MeshcastError")), r.stdout
