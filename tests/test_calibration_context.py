"""In-context calibration: the reference layer and head laid out as the step graph does, run
for real in JAX, and the memory curve fitted to them with the GEMM terms held fixed."""

from __future__ import annotations

import pytest

from calibration.context import context_ops, elementwise_bytes, fitted_elementwise
from calibration.fitting.fit import medians
from calibration.fitting.fit_context import GROUP, fixed_and_bytes
from calibration.fitting.profile_out import profile_from_rows
from calibration.measure.in_context import jax_case
from simulator.graph.ops import OpKind
from tests.test_calibration_fit import row, synthetic_rows


def test_block_and_head_hold_the_step_graphs_compute_ops_forward_and_backward():
    block = {op.name for op in context_ops("block", 2, 128)}
    head = {op.name for op in context_ops("head", 2, 128)}
    assert {"qkv", "attn", "mlp_in", "mlp_act", "bwd.qkv", "bwd.attn", "bwd.mlp_act"} <= block
    assert head == {"embed", "final_norm", "lm_head", "loss", "bwd.embed", "bwd.final_norm",
                    "bwd.lm_head", "bwd.loss"}
    assert not block & head
    ops = context_ops("block", 2, 128) + context_ops("head", 2, 128)
    assert all(op.kind is not OpKind.COLLECTIVE and op.phase in ("fwd", "bwd") for op in ops)
    # fp32 bytes, linear in tokens: twice the sequences, twice the elementwise bytes
    assert elementwise_bytes("block", 4, 128) == pytest.approx(2 * elementwise_bytes("block", 2, 128))


@pytest.mark.parametrize("kind", ["block", "head"])
def test_jax_case_returns_the_output_and_a_gradient_for_every_input(kind):
    import jax
    import jax.numpy as jnp

    fn, args = jax_case(kind, 1, 16, jnp.float32)
    out = jax.jit(fn)(*args)
    grads = out[1:]
    assert len(grads) == (2 if kind == "head" else len(args))
    for g, a in zip(grads, args):
        assert g.shape == a.shape
        assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


CONTEXT_SIZES = ((1, 64), (2, 64), (2, 128), (4, 128))


def _with_context_rows(rate: float, half: float, launch: float = 5e-5,
                       held_scale: float = 1.0) -> list[dict]:
    """Synthetic isolated sweeps plus block/head rows generated from the fit's own formula;
    ``held_scale`` scales the held (GEMM, attention) terms: below 1, the isolated sweeps
    over-predict them in context, as on a noisy host."""
    rows = synthetic_rows(launch=launch)
    rows += [row(f"ew{b}", "elementwise", launch + b / 2e9, nbytes=float(b))
             for b in (2**p for p in range(12, 25, 2))]
    base = profile_from_rows(rows)[0]
    for kind in ("block", "head"):
        for b, s in CONTEXT_SIZES:
            nb = elementwise_bytes(kind, b, s)
            probe = row("x", kind, 1.0, m=b, k=s, nbytes=nb)
            fixed, ew = fixed_and_bytes(medians([probe])[0], base)
            t = held_scale * fixed + sum(launch + (x + half) / rate for x in ew)
            rows.append(row(f"{kind}:{b}x{s}", kind, t, m=b, k=s, nbytes=nb))
    return rows


def test_context_fit_recovers_the_elementwise_rate_with_gemms_held_fixed():
    rate, half = 8e8, 3e5  # elementwise in context well below the 2 GB/s stream
    profile, _, fits, _ = profile_from_rows(_with_context_rows(rate, half))
    f = fits[GROUP]
    assert f.params["rate"] == pytest.approx(rate, rel=1e-5)
    assert f.params["half_saturation"] == pytest.approx(half, rel=1e-3)
    assert f.held_out_error < 1e-6 and f.predictions and any(p[3] for p in f.predictions)
    mem = profile.efficiency.memory
    bw = profile.chip.hbm_bandwidth_bytes_per_s.value
    assert bw == pytest.approx(fits["elementwise"].params["rate"])  # the stream stays the peak
    assert mem.max_efficiency * bw == pytest.approx(rate, rel=1e-5)
    assert "inside the reference layer" in mem.source
    lo, hi = mem.calibrated_range  # one op's bytes, not a case's total
    op_bytes = [op.nbytes for kind in ("block", "head") for b, s in CONTEXT_SIZES
                for op in context_ops(kind, b, s) if fitted_elementwise(op)]
    assert (lo, hi) == pytest.approx((min(op_bytes), max(op_bytes)))
    assert hi < max(elementwise_bytes("head", 4, 128), elementwise_bytes("block", 4, 128))


def test_context_faster_than_streaming_raises_the_hosts_bandwidth_not_past_one():
    profile, _, fits, _ = profile_from_rows(_with_context_rows(6e9, 1e5))
    bw = profile.chip.hbm_bandwidth_bytes_per_s.value
    assert bw == pytest.approx(6e9, rel=1e-5)
    assert profile.efficiency.memory.max_efficiency == pytest.approx(1.0)


def test_context_rate_not_identified_keeps_the_streaming_curve(tmp_path):
    """Issue 15's flaky fit: on a loaded host the isolated GEMM/attention curves over-predicted
    the layers, the context rate ran off to 2.4e20 B/s, became the host's bandwidth, and the
    gather curve's efficiency (5e9 / 2.4e20) fell below the schema's floor: fit crashed."""
    import json

    from calibration.fitting.files import REPORT_NAME
    from calibration.fitting.profile_out import write_outputs

    rows = _with_context_rows(1e30, 0.0, held_scale=0.8)  # held terms over-predict by 25%
    profile, launch, fits, digest = profile_from_rows(rows)
    f = fits[GROUP]
    assert f.not_used.startswith("rate not identified") and "streaming" in f.not_used
    assert profile.chip.hbm_bandwidth_bytes_per_s.value == pytest.approx(2e9, rel=1e-4)
    assert profile.efficiency.memory.max_efficiency == pytest.approx(1.0)
    assert "inside the reference layer" not in profile.efficiency.memory.source
    write_outputs(profile, tmp_path / "p.yaml", launch, fits, digest, tmp_path / "raw.csv")
    report = json.loads((tmp_path / REPORT_NAME).read_text())
    assert report["groups"][GROUP]["not_used"] == f.not_used
    assert "not_used" not in report["groups"]["elementwise"]


def test_context_rate_identified_is_used():
    _, _, fits, _ = profile_from_rows(_with_context_rows(8e8, 3e5, held_scale=1.1))
    assert fits[GROUP].not_used == ""


def test_without_context_rows_the_memory_curve_is_streaming():
    rows = synthetic_rows() + [row(f"ew{b}", "elementwise", 5e-5 + b / 2e9, nbytes=float(b))
                               for b in (2**p for p in range(12, 25, 2))]
    profile, _, fits, _ = profile_from_rows(rows)
    assert GROUP not in fits
    assert profile.efficiency.memory.max_efficiency == pytest.approx(1.0)
    assert profile.chip.hbm_bandwidth_bytes_per_s.value == pytest.approx(2e9, rel=1e-4)


def test_accelerator_runs_calibrate_in_bfloat16_and_cpu_in_float32():
    from calibration.cases import plan_cases
    from calibration.dtypes import precision_of_dtype, run_dtype
    from calibration.measure.run import shape_job
    from simulator.specs.sharding import ShardingSpec

    assert (run_dtype("cpu"), run_dtype("gpu"), run_dtype("tpu")) == ("float32", "bfloat16",
                                                                      "bfloat16")
    assert (precision_of_dtype("float32"), precision_of_dtype("bfloat16")) == ("fp32", "bf16")
    job = shape_job(ShardingSpec(mesh={"data": 8}), 8)
    f32 = {c.case_id: c for c in plan_cases({"data": 8}, job, True, run_dtype("cpu"))}
    b16 = {c.case_id: c for c in plan_cases({"data": 8}, job, True, run_dtype("gpu"))}
    assert {c.dtype for c in b16.values()} == {"bfloat16"}
    for cid, c in f32.items():
        if c.kind in ("block", "head"):
            half = b16[cid.replace("float32", "bfloat16")]
            assert half.flops == c.flops
            if c.kind == "block":  # bf16 activations
                assert half.nbytes == pytest.approx(c.nbytes / 2)
            else:  # the loss over the logits stays fp32
                assert c.nbytes / 2 < half.nbytes < c.nbytes


def test_a_bfloat16_reference_step_trains_on_the_same_code_path():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        os.environ["JAX_PLATFORMS"] = "cpu"
        import jax, jax.numpy as jnp
        from calibration.measure.steps import reference_step
        step, (params, opt, toks), _ = reference_step("moe", {"data": 2, "expert": 2}, 4, 32,
                                                      "bfloat16")
        assert params["embed"].dtype == jnp.bfloat16
        params, opt, loss = step(params, opt, toks)
        assert params["layers"][1]["wi"].dtype == jnp.bfloat16 and bool(jnp.isfinite(loss))
        print("ok", float(loss))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.startswith("ok"), res.stderr[-2000:]
