"""The fit recovers known parameters from rows the cost model itself generated, and reports
held-out error on sizes it did not fit."""

from __future__ import annotations

import math

import pytest

from calibration.fitting.fit import _coefficients, fit_all, split
from calibration.fitting.profile_out import calibrated_profile
from calibration.raw import rows_hash

META = {"backend": "cpu", "device_kind": "cpu", "n_devices": 8, "n_hosts": 1,
        "jax_version": "0.10.2", "jaxlib_version": "0.10.2", "xla_flags": "", "host": "h",
        "date": "2026-01-01"}


def row(case_id, kind, seconds, rep=0, **kw):
    base = dict(case_id=case_id, kind=kind, op="", axis="", group_size=1, dtype="float32", m=0,
                k=0, n=0, hd=0, nbytes=0.0, flops=0.0, levels="", hosts=1, rep=rep,
                seconds=seconds, **META)
    base.update(kw)
    return base


def synthetic_rows(launch=5e-5, rate=4e10, half=2e7, bw=3e9, lat=1e-4, noise=0.0, a2a_bw=None,
                   a2a_lat=None):
    rows = [row("launch", "launch", launch, rep=r) for r in range(3)]
    for i, s in enumerate([64, 96, 128, 192, 256, 384, 512, 768, 1024]):
        flops = 2.0 * s**3
        t = launch + (flops + half) / rate
        rows.append(row(f"mm{s}", "matmul", t * (1 + noise * (-1) ** i), m=s, k=s, n=s,
                        flops=flops))
    for op in ("all_gather", "all_to_all"):
        c_lat, c_bw = _coefficients(op, 4)
        w, a = (a2a_bw or bw, a2a_lat or lat) if op == "all_to_all" else (bw, lat)
        for i, b in enumerate([2**p for p in range(12, 25, 2)]):
            t = c_lat * a + c_bw * b / w
            rows.append(row(f"{op}{b}", "collective", t * (1 + noise * (-1) ** i), op=op,
                            axis="model", group_size=4, nbytes=float(b)))
    # every group a host profile needs (a fit never leaves one at a placeholder): streaming
    # elementwise at 2 GB/s and attention at 1e10 FLOP/s, half-saturation 5e7
    rows += [row(f"ew{b}", "elementwise", launch + b / 2e9, nbytes=float(b))
             for b in (2**p for p in range(12, 25, 2))]
    for s in (64, 128, 256, 512):
        flops = 3.5 * 2.0 * 2 * s * s * 8 * 64
        rows.append(row(f"att{s}", "attention", launch + (flops + 5e7) / 1e10, m=2, k=s, n=8,
                        hd=64, flops=flops))
    return rows


def test_fit_recovers_the_parameters_it_was_generated_with():
    launch, fits = fit_all(synthetic_rows())
    assert launch == pytest.approx(5e-5)
    mm = fits["matmul"]
    assert mm.params["rate"] == pytest.approx(4e10, rel=1e-6)
    assert mm.params["half_saturation"] == pytest.approx(2e7, rel=1e-4)
    for op in ("all_gather", "all_to_all"):
        f = fits[f"collective:{op}:model"]
        assert f.params["bandwidth_bytes_per_s"] == pytest.approx(3e9, rel=1e-6)
        assert f.params["latency_s"] == pytest.approx(1e-4, rel=1e-4)
        assert f.held_out_error < 1e-6


def test_noise_shows_up_as_held_out_error():
    _, fits = fit_all(synthetic_rows(noise=0.05))
    f = fits["matmul"]
    assert not math.isnan(f.held_out_error)
    assert 0.01 < f.held_out_error < 0.2


def test_relative_loss_fits_small_sizes_too():
    # plain least squares on seconds would ignore the latency-bound small messages
    _, fits = fit_all(synthetic_rows())
    smallest = min(fits["collective:all_gather:model"].predictions)
    size, measured, predicted, _ = smallest
    assert predicted == pytest.approx(measured, rel=1e-6)


def test_split_holds_out_sizes_not_repetitions():
    from calibration.fitting.fit import Point

    pts = [Point("g", s, 1.0) for s in (1, 2, 3, 4, 5, 6)]
    train, test = split(pts)
    assert [p.size for p in train] == [1, 3, 5] and [p.size for p in test] == [2, 4, 6]


def test_calibrated_profile_records_hash_and_error():
    rows = synthetic_rows(noise=0.02)
    launch, fits = fit_all(rows)
    digest = rows_hash(rows)
    prof = calibrated_profile(launch, fits, digest, META)
    assert prof.chip.peak_flops_per_s["bf16"].value == pytest.approx(fits["matmul"].params["rate"])
    assert digest[:16] in prof.efficiency.matmul.source
    assert "held-out median error" in prof.efficiency.matmul.source
    from hardware_profiles import load_profile

    base = calibrated_profile(launch, fits, digest, META, load_profile("h100-sxm"))
    assert base.chip.peak_flops_per_s["bf16"].value == 989.4e12  # datasheet peak kept
    assert base.efficiency.matmul.max_efficiency == pytest.approx(
        fits["matmul"].params["rate"] / 989.4e12)


def test_forecast_outside_the_calibrated_range_says_so():
    from simulator.predict import predict

    rows = synthetic_rows()
    launch, fits = fit_all(rows)
    prof = calibrated_profile(launch, fits, rows_hash(rows), META)
    assert prof.efficiency.matmul.calibrated_range == fits["matmul"].size_range
    big = predict(model="llama3-8b", hardware=prof, chips=8, seq_len=4096)
    assert any("matmul ops fall outside the calibrated range" in w for w in big.warnings)
    plain = predict(model="llama3-8b", hardware="h100-sxm", chips=8).warnings
    assert not any("calibrated range" in w for w in plain)  # datasheet curves: nothing to say


def test_each_collective_kind_keeps_its_own_bandwidth_and_latency():
    """A host whose all-to-all runs at a third of all-gather's bandwidth and twice its latency:
    the calibrated level says so per kind, and forecasts use it for that kind only."""
    from simulator.cost.collectives import Collective, collective_time
    from simulator.cost.topology import AxisPart, job_levels

    rows = synthetic_rows(bw=3e9, lat=1e-4, a2a_bw=1e9, a2a_lat=2e-4)
    launch, fits = fit_all(rows)
    lvl = calibrated_profile(launch, fits, rows_hash(rows), META).network[0]
    assert lvl.link_bandwidth_bytes_per_s.value == pytest.approx(3e9, rel=1e-6)
    assert lvl.collectives["all_to_all"].efficiency.value == pytest.approx(1 / 3, rel=1e-6)
    assert lvl.collectives["all_to_all"].latency_s.value == pytest.approx(2e-4, rel=1e-6)
    assert lvl.collectives["all_gather"].efficiency.value == pytest.approx(1.0, rel=1e-6)
    prof = calibrated_profile(launch, fits, rows_hash(rows), META)
    part = (AxisPart(job_levels(prof, 8)[0], 4),)
    for op, w, a in (("all_to_all", 1e9, 2e-4), ("all_gather", 3e9, 1e-4)):
        c_lat, c_bw = _coefficients(op, 4)
        assert collective_time(Collective(op), part, 2**22) == pytest.approx(
            c_lat * a + c_bw * 2**22 / w, rel=1e-6)


def test_attention_rows_calibrate_the_attention_curve():
    rows = synthetic_rows()
    rate, half = 1e10, 5e7
    for s in (64, 128, 256, 512):
        flops = 3.5 * 2.0 * 2 * s * s * 8 * 64
        rows.append(row(f"att{s}", "attention", 5e-5 + (flops + half) / rate, m=2, k=s, n=8,
                        hd=64, flops=flops))
    launch, fits = fit_all(rows)
    assert fits["attention"].params["rate"] == pytest.approx(rate, rel=1e-4)
    prof = calibrated_profile(launch, fits, rows_hash(rows), META)
    eff = prof.efficiency.attention
    assert eff.max_efficiency == pytest.approx(rate / fits["matmul"].params["rate"], rel=1e-4)
    assert eff.half_saturation == pytest.approx(half, rel=1e-3)
    assert eff.calibrated_range == fits["attention"].size_range


def test_raw_rows_written_before_attention_cases_still_read(tmp_path):
    import csv

    from calibration.raw import LEGACY_COLUMNS, read_raw_rows

    r = {k: v for k, v in row("mm64", "matmul", 1e-3, m=64, k=64, n=64, flops=2.0 * 64**3).items()
         if k not in ("hd", "levels", "hosts")}
    with open(tmp_path / "raw.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LEGACY_COLUMNS)
        w.writeheader()
        w.writerow(r)
    (got,) = read_raw_rows(tmp_path)
    assert got["hd"] == 0 and got["m"] == 64 and got["seconds"] == 1e-3


def test_a_fitted_profile_names_the_dtype_its_rows_were_measured_in():
    from calibration.fitting.profile_out import profile_from_rows

    for dtype in ("float32", "bfloat16"):
        rows = [{**r, "dtype": dtype} for r in synthetic_rows()]
        src = profile_from_rows(rows)[0].chip.peak_flops_per_s["bf16"].source
        assert src.endswith(f"measured in {dtype}")


def test_a_fitted_figure_the_schema_refuses_is_a_clear_error_not_a_traceback():
    """A fit is never loosened into the schema (issue 15): a runaway figure is refused by the
    profile's bounds with the field, the value and how to measure again."""
    from dataclasses import replace

    from meshcast.errors import MeshcastError

    rows = synthetic_rows()
    launch, fits = fit_all(rows)
    fits["gather"] = replace(fits["elementwise"], group="gather",
                             params={"rate": 1e-8, "half_saturation": 0.0})
    with pytest.raises(MeshcastError) as exc:
        calibrated_profile(launch, fits, rows_hash(rows), META)
    msg = str(exc.value)
    assert msg.startswith("invalid fit: fit.efficiency.gather.max_efficiency: 5e-18")
    assert "below 1e-06" in msg and "MESHCAST_CLOCK=process" in msg


def test_a_curve_fit_restarts_from_its_default_or_names_the_group():
    """Found by the fuzz (issue 15): odd rows drove the training-sizes fit to an extreme where
    the model is no longer finite; the fit on every size then started there and scipy raised.
    Now it restarts from the group's default, and rows no start can fit are a clean error."""
    from types import SimpleNamespace

    import numpy as np
    import pytest

    from calibration.fitting.fit import _solve
    from meshcast.errors import MeshcastError

    pts = [SimpleNamespace(size=s, seconds=1e-5 + s / 1e9) for s in (1e3, 1e4, 1e5, 1e6)]

    def model(theta, p):
        return theta[0] + p.size / theta[1]

    extreme = np.array([1e-5, 1e-320])  # size / 1e-320 overflows
    theta = _solve(pts, model, extreme, "collective:all_reduce:data", fallback=[1e-5, 1e9])
    assert np.all(np.isfinite(theta)) and theta[1] == pytest.approx(1e9, rel=1e-3)
    with pytest.raises(MeshcastError, match="collective:all_reduce:data rows cannot be fitted"):
        _solve(pts, model, extreme, "collective:all_reduce:data")


def test_a_launch_timed_slower_than_other_cases_is_capped_at_the_fastest():
    """Two local processes on two cores timed the launch case at 249 us and an elementwise case
    at 70 us: the throughput fit then ran its rate to 2e23 B/s. Every case pays the launch, so
    it is capped at the fastest case, and the elementwise rate is found again."""
    import pytest

    rows = synthetic_rows()
    for r in rows:
        if r["kind"] == "launch":
            r["seconds"] *= 20  # a launch measured under load
    launch, fits = fit_all(rows)
    fastest = min(r["seconds"] for r in rows if r["kind"] != "launch")
    assert launch == pytest.approx(fastest)
    assert fits["elementwise"].params["rate"] < 1e12
