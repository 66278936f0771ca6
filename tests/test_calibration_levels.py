"""Issue 16 parts 2-3: each network level measured and fitted, validation across hosts.

The level a collective crosses is read off the real mesh's devices (``process_index``), so the
plan is tested on fake devices; the fit on rows the cost model itself generated for a host level
and a cross-host level (bandwidths 3 GB/s and 0.5 GB/s per device); the end to end run on two
local processes of four CPU devices each is at the bottom."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from calibration.fitting.fit import _coefficients, fit_all
from calibration.levels import ACROSS_HOSTS, WITHIN_HOST, axis_levels, calibration_mesh, host_of
from calibration.raw import COLUMNS, SINGLE_HOST_COLUMNS, read_raw_rows, rows_hash, write_raw_rows
from meshcast.errors import MeshcastError
from simulator.cost.collectives import Collective, collective_time
from simulator.cost.topology import AxisPart, Level
from tests.test_calibration_fit import row, synthetic_rows

HIER = f"{WITHIN_HOST}+{ACROSS_HOSTS}"


class FakeDevice:
    def __init__(self, id: int, process_index: int):
        self.id, self.process_index = id, process_index

    def __repr__(self):
        return f"D{self.id}@{self.process_index}"


def fake_mesh(shape: tuple[int, ...], per_host: int) -> np.ndarray:
    """A device array as jax lays out ``jax.devices()`` of several processes: process-major."""
    n = math.prod(shape)
    return np.array([FakeDevice(i, i // per_host) for i in range(n)], dtype=object).reshape(shape)


# --- levels of the real mesh --------------------------------------------------------------
def test_each_axis_of_a_hosts_x_devices_mesh_gets_its_level():
    devs = fake_mesh((2, 2, 2), per_host=4)  # data across 2 hosts, expert x model within each
    names = ("data", "expert", "model")
    assert axis_levels(devs, names, ("data",)) == (ACROSS_HOSTS, 2)
    assert axis_levels(devs, names, ("expert",)) == (WITHIN_HOST, 1)
    assert axis_levels(devs, names, ("model",)) == (WITHIN_HOST, 1)
    assert axis_levels(devs, names, ("data", "model")) == (HIER, 2)
    assert axis_levels(devs, names, ("expert", "model")) == (WITHIN_HOST, 1)
    one_host = fake_mesh((2, 2, 2), per_host=8)
    assert {axis_levels(one_host, names, (a,)) for a in names} == {(WITHIN_HOST, 1)}


def test_an_axis_spanning_hosts_is_hierarchical():
    devs = fake_mesh((8,), per_host=4)  # data=8 over 2 hosts of 4
    assert axis_levels(devs, ("data",), ("data",)) == (HIER, 2)
    assert axis_levels(fake_mesh((4,), per_host=1), ("data",), ("data",)) == (ACROSS_HOSTS, 4)


def test_groups_straddling_hosts_unevenly_are_refused():
    devs = np.array([FakeDevice(i, p) for i, p in enumerate([0, 0, 0, 1])], dtype=object)
    with pytest.raises(MeshcastError, match="span \\[1, 2\\] hosts"):
        axis_levels(devs.reshape(2, 2), ("data", "model"), ("model",))
    three = np.array([FakeDevice(i, p) for i, p in enumerate([0, 0, 1])], dtype=object)
    with pytest.raises(MeshcastError, match="unequal shares"):
        axis_levels(three, ("data",), ("data",))


def test_a_tpu_device_is_on_its_slice():
    class Tpu(FakeDevice):
        platform, slice_index = "tpu", 1

    assert host_of(Tpu(0, 3)) == 1 and host_of(FakeDevice(0, 3)) == 3


def test_calibration_mesh_puts_hosts_outermost():
    assert calibration_mesh(8, 1) == {"data": 2, "expert": 2, "model": -1}  # as before
    assert calibration_mesh(6, 1) == {"data": -1}
    assert calibration_mesh(8, 2) == {"data": 2, "expert": 2, "model": -1}
    assert calibration_mesh(16, 2) == {"data": 2, "expert": 2, "model": -1}
    assert calibration_mesh(4, 2) == {"data": 2, "model": -1}
    assert calibration_mesh(4, 4) == {"data": 4}


def test_the_plan_places_every_collective_on_a_level():
    from calibration.cases import plan_cases
    from calibration.measure.run import shape_job
    from simulator.specs.sharding import ShardingSpec

    sizes = {"data": 2, "expert": 2, "model": 2}
    job = shape_job(ShardingSpec(mesh=sizes), 8)
    coll = [c for c in plan_cases(sizes, job, True, devices=fake_mesh((2, 2, 2), 4))
            if c.kind == "collective"]
    by_axis = {c.axis: (c.levels, c.hosts, c.group_size) for c in coll}
    assert by_axis == {"data": (ACROSS_HOSTS, 2, 2), "expert": (WITHIN_HOST, 1, 2),
                       "model": (WITHIN_HOST, 1, 2), "data+model": (HIER, 2, 4)}
    assert {c.op for c in coll if c.axis == "data+model"} == {k.value for k in Collective}
    # one host, or no devices given: the same cases (and case ids) as before multi-host runs
    single = plan_cases(sizes, job, True, devices=fake_mesh((2, 2, 2), 8))
    plain = plan_cases(sizes, job, True)
    assert [c.case_id for c in single] == [c.case_id for c in plain]
    assert {c.levels for c in single if c.kind == "collective"} == {WITHIN_HOST}
    assert {c.levels for c in plain if c.kind == "collective"} == {""}
    r = coll[0].row_fields()
    assert set(r) == set(COLUMNS[:COLUMNS.index("rep")]) and r["levels"] == coll[0].levels


# --- raw rows ------------------------------------------------------------------------------
def test_raw_rows_record_levels_and_older_files_read_as_one_host(tmp_path):
    rows = [row("c", "collective", 1e-3, op="all_gather", axis="data", group_size=2,
                nbytes=4096.0, levels=ACROSS_HOSTS, hosts=2)]
    write_raw_rows(tmp_path, rows)
    (got,) = read_raw_rows(tmp_path)
    assert got["levels"] == ACROSS_HOSTS and got["hosts"] == 2
    old = {k: v for k, v in rows[0].items() if k not in ("levels", "hosts")}
    with open(tmp_path / "raw.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SINGLE_HOST_COLUMNS)
        w.writeheader()
        w.writerow(old)
    (got,) = read_raw_rows(tmp_path)
    assert got["levels"] == "" and got["hosts"] == 1
    # a single-host run's rows hash as they did before the level columns existed
    assert rows_hash([old]) == rows_hash(read_raw_rows(tmp_path))


def test_an_unknown_level_rejects_the_file(tmp_path):
    write_raw_rows(tmp_path, [row("c", "collective", 1e-3, op="permute", axis="data",
                                  levels="rack")])
    with pytest.raises(MeshcastError, match="line 2 field levels: 'rack'"):
        read_raw_rows(tmp_path)


# --- the fit, level by level --------------------------------------------------------------
HOST_BW, HOST_LAT, CROSS_BW, CROSS_LAT = 3e9, 1e-4, 5e8, 1e-3
META2 = {"n_devices": 8, "n_hosts": 2}


def _levels():
    host = Level(WITHIN_HOST, "switch", 4, HOST_BW, HOST_LAT, 1.0, False)
    return host, Level(ACROSS_HOSTS, "fat_tree", 2, CROSS_BW, CROSS_LAT, 1.0, False)


def two_level_rows(noise: float = 0.0) -> list[dict]:
    """The single-host synthetic rows on 2 hosts x 4 devices: the ``model`` axis within a host,
    ``data`` (2) across hosts, ``data+model`` (4: 2 x 2) spanning both, each timed by the
    simulator's own formulas on the two levels."""
    rows = [dict(r, **META2) for r in synthetic_rows() if r["kind"] != "collective"]
    host, cross = _levels()
    groups = (("model", 4, (AxisPart(host, 4),), WITHIN_HOST, 1),
              ("data", 2, (AxisPart(cross, 2),), ACROSS_HOSTS, 2),
              ("data+model", 4, (AxisPart(host, 2), AxisPart(cross, 2)), HIER, 2))
    for axis, f, parts, levels, hosts in groups:
        for op in Collective:
            for i, b in enumerate(2**p for p in range(12, 25, 2)):
                t = collective_time(op, parts, float(b)) * (1 + noise * (-1) ** i)
                rows.append(row(f"c:{op.value}:{axis}:{b}", "collective", t, op=op.value,
                                axis=axis, group_size=f, nbytes=float(b), levels=levels,
                                hosts=hosts, **META2))
    return rows


def test_the_fit_recovers_each_level_and_predicts_the_hierarchical_groups():
    from calibration.fitting.profile_out import profile_from_rows

    prof, _, fits, _ = profile_from_rows(two_level_rows())
    host, cross = prof.network
    assert (host.name, host.kind, host.size) == (WITHIN_HOST, "switch", 4)
    assert (cross.name, cross.kind, cross.size) == (ACROSS_HOSTS, "fat_tree", 2)
    assert host.link_bandwidth_bytes_per_s.value == pytest.approx(HOST_BW, rel=1e-5)
    assert cross.link_bandwidth_bytes_per_s.value == pytest.approx(CROSS_BW, rel=1e-5)
    assert cross.latency_s.value == pytest.approx(CROSS_LAT, rel=1e-4)
    assert fits["collective:all_gather:data"].level == ACROSS_HOSTS
    hier = fits["collective:all_reduce:data+model"]
    assert hier.level == HIER and math.isnan(hier.in_sample_error)
    assert hier.held_out_error < 1e-5 and all(h for *_, h in hier.predictions)
    # the forecast topology is hosts x devices per host: an 8-device job spans both levels
    from simulator.cost.topology import job_levels

    assert [(lv.name, lv.size) for lv in job_levels(prof, 8)] == [(WITHIN_HOST, 4),
                                                                 (ACROSS_HOSTS, 2)]


def test_fit_report_gives_held_out_error_per_level(tmp_path):
    from calibration.fitting.fit_cli import run_fit

    write_raw_rows(tmp_path, two_level_rows(noise=0.03))
    table = run_fit(tmp_path)
    report = json.loads((tmp_path / "fit_report.json").read_text())
    levels = report["levels"]
    assert set(levels) == {WITHIN_HOST, ACROSS_HOSTS, HIER}
    for name in (WITHIN_HOST, ACROSS_HOSTS):
        assert 0.0 < levels[name]["held_out_median_abs_error"] < 0.1
    assert levels[HIER]["predicted_from"] == [WITHIN_HOST, ACROSS_HOSTS]
    assert levels[HIER]["in_sample_median_abs_error"] is None
    assert report["groups"]["collective:permute:data"]["level"] == ACROSS_HOSTS
    assert "predicted from the fitted levels" in table


def test_single_host_rows_fit_one_level_as_before():
    from calibration.fitting.profile_out import profile_from_rows

    prof = profile_from_rows(synthetic_rows())[0]
    assert [(lv.name, lv.size) for lv in prof.network] == [(WITHIN_HOST, 8)]


def test_a_base_profile_keeps_its_links_and_gets_each_levels_efficiency():
    from calibration.fitting.profile_out import profile_from_rows
    from hardware_profiles import load_profile

    base = load_profile("h100-sxm")
    prof = profile_from_rows(two_level_rows(), base)[0]
    assert [lv.size for lv in prof.network] == [lv.size for lv in base.network]
    inner, outer = prof.network[0], prof.network[-1]
    link = outer.link_bandwidth_bytes_per_s.value
    assert link == base.network[-1].link_bandwidth_bytes_per_s.value
    assert outer.efficiency.value == pytest.approx(min(1.0, CROSS_BW / link), rel=1e-5)
    assert outer.latency_s.value == pytest.approx(CROSS_LAT, rel=1e-4)
    assert inner.efficiency.value == pytest.approx(
        HOST_BW / inner.link_bandwidth_bytes_per_s.value, rel=1e-5)
    # one host: the datasheet network is left alone, as before
    assert profile_from_rows(synthetic_rows(), base)[0].network == base.network


def test_cross_host_coefficients_are_the_switch_ones():
    """A group across hosts is priced by the same one-level formulas (fat tree = switch)."""
    _, cross = _levels()
    for op in Collective:
        c_lat, c_bw = _coefficients(op.value, 2)
        assert collective_time(op, (AxisPart(cross, 2),), 2**20) == pytest.approx(
            c_lat * CROSS_LAT + c_bw * 2**20 / CROSS_BW)


def test_fit_all_keeps_hierarchical_groups_out_of_the_level_fits():
    _, fits = fit_all(two_level_rows())
    assert not any(g.endswith("data+model") for g in fits)


# --- validate across hosts ----------------------------------------------------------------
def fake_case_levels(per_host: int):
    """:func:`calibration.measure.validate.case_levels` on fake devices, ``per_host`` a host."""
    from calibration.measure.mesh import mesh_axes
    from simulator.specs.sharding import ShardingSpec

    def levels(mesh_sizes: dict) -> dict[str, str]:
        names, shape = mesh_axes(ShardingSpec(mesh=mesh_sizes), math.prod(mesh_sizes.values()))
        devs = fake_mesh(shape, per_host)
        return {a: axis_levels(devs, names, (a,))[0] for a, v in mesh_sizes.items() if v > 1}

    return levels


def test_multi_host_cases_span_the_hosts():
    from calibration.measure.validate import multi_host_cases

    levels = fake_case_levels(per_host=4)
    cases = multi_host_cases(8, 2, quick=False)
    got = [(kind, levels(mesh)) for kind, mesh, _ in cases]
    assert got[:3] == [
        ("dense", {"data": ACROSS_HOSTS, "fsdp": WITHIN_HOST, "model": WITHIN_HOST}),
        ("moe", {"expert": HIER, "model": WITHIN_HOST}),  # expert across hosts (and within)
        ("moe", {"data": ACROSS_HOSTS, "expert": WITHIN_HOST, "model": WITHIN_HOST})]
    assert got[3] == ("dense", {"data": HIER}) and got[4][1]["fsdp"] == HIER
    assert multi_host_cases(8, 2, quick=True) == cases[:2]
    assert all(math.prod(m.values()) == 8 and gb == 16 for _, m, gb in cases)
    with pytest.raises(MeshcastError, match="even number of devices per host"):
        multi_host_cases(6, 2, quick=True)


def test_validate_over_hosts_reports_each_cases_levels_and_the_cross_host_error(tmp_path,
                                                                               monkeypatch):
    import jax

    from calibration.fitting.fit_cli import run_fit
    from calibration.measure import validate as v

    write_raw_rows(tmp_path, two_level_rows())
    run_fit(tmp_path)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 8)
    monkeypatch.setattr(v, "case_levels", fake_case_levels(per_host=4))
    monkeypatch.setattr(v, "measure_step", lambda *a, **k: 1.0)  # no jax steps: 1 s measured
    lines: list[str] = []
    out = v.validate(tmp_path, quick=True, log=lines.append)
    assert [c["case"] for c in out["cases"]] == ["dense data=2,fsdp=2,model=2",
                                                 "moe expert=4,model=2"]
    assert out["cases"][1]["levels"] == {"expert": HIER, "model": WITHIN_HOST}
    assert out["hosts"] == 2
    assert out["median_abs_error_across_hosts"] == pytest.approx(out["median_abs_error"])
    assert any("levels: data cross_host, fsdp host, model host" in ln for ln in lines)
    assert "over the 2 cases whose mesh crosses hosts (2 processes)" in lines[-1]


# --- end to end: two local processes on the loopback interface ----------------------------
def run_levels_end_to_end(out, devices: int, quick_validate: bool = True) -> dict:
    """``meshcast calibrate --local-processes 2 --devices D --quick``, ``fit``, ``validate
    --local-processes 2 --devices D [--quick] --json`` into ``out``; returns the figures: the two
    levels' fitted bandwidths and latencies, the held-out error per level, each validated case
    and the seconds each stage took."""
    import subprocess
    import sys
    import time

    from hardware_profiles import load_profile_file

    cli = [sys.executable, "-m", "simulator.cli.main"]
    local = ["--backend", "cpu", "--local-processes", "2", "--devices", str(devices)]
    took = {}

    def run(stage, *args):
        t0 = time.perf_counter()
        res = subprocess.run([*cli, *args], capture_output=True, text=True, timeout=900)
        took[stage] = time.perf_counter() - t0
        assert res.returncode == 0, f"{stage}: {res.stderr[-3000:]}"
        return res.stdout

    run("calibrate", "calibrate", *local, "--quick", "--out", str(out))
    run("fit", "fit", str(out))
    val = json.loads(run("validate", "validate", "--calibration", str(out), *local, "--json",
                         *(["--quick"] if quick_validate else [])))
    prof = load_profile_file(out / "profile.yaml")
    report = json.loads((out / "fit_report.json").read_text())
    return {"levels": [(lv.name, lv.size, lv.link_bandwidth_bytes_per_s.value, lv.latency_s.value,
                        {k: o.efficiency.value for k, o in lv.collectives.items()})
                       for lv in prof.network],
            "held_out": {k: v["held_out_median_abs_error"] for k, v in report["levels"].items()},
            "validate": val, "took": took, "rows": read_raw_rows(out)}


def print_figures(fig: dict) -> None:
    for name, size, bw, lat, eff in fig["levels"]:
        print(f"  level {name:<10} size {size}: {bw / 1e9:.3f} GB/s per device, latency "
              f"{lat * 1e6:.0f} us; per-kind efficiency "
              + ", ".join(f"{k} {v:.2f}" for k, v in eff.items()))
    for name, e in fig["held_out"].items():
        print(f"  held-out median |error| {name}: {100 * e:.1f}%")
    for c in fig["validate"]["cases"]:
        print(f"  {c['case']:<30} measured {c['measured_s'] * 1e3:8.1f} ms  forecast "
              f"{c['forecast_s'] * 1e3:8.1f} ms  error {100 * c['error']:+6.1f}%  "
              + ", ".join(f"{a} {lv}" for a, lv in c["levels"].items()))
    v = fig["validate"]
    print(f"  median |error| over the cross-process steps: "
          f"{100 * v['median_abs_error_across_hosts']:.1f}% (issue 16 target <= 20%)")
    print("  took " + ", ".join(f"{k} {s:.0f} s" for k, s in fig["took"].items()))


def test_two_local_processes_calibrate_fit_and_validate_across_them(tmp_path):
    """Issue 16's end-to-end test, 2 processes x 4 CPU devices with the quick validate (the
    full validate is ``benchmarks/bench_calibration_levels.py``): every level measured, the
    fitted profile is hosts x devices per host with two different bandwidths, and a dense and an
    MoE step whose meshes span both processes are set beside their forecasts. The figures are
    printed (a CPU host shared with other work moves them), not asserted."""
    fig = run_levels_end_to_end(tmp_path / "run", devices=4)
    rows = fig["rows"]
    assert {r["n_hosts"] for r in rows} == {2} and {r["n_devices"] for r in rows} == {8}
    coll = {(r["axis"], r["levels"], r["hosts"]) for r in rows if r["kind"] == "collective"}
    assert {lv for _, lv, _ in coll} == {WITHIN_HOST, ACROSS_HOSTS, HIER}
    (host, _, bw_in, *_), (cross, hosts, bw_out, *_) = fig["levels"]
    assert (host, cross, hosts) == (WITHIN_HOST, ACROSS_HOSTS, 2)
    assert bw_in != bw_out
    assert set(fig["held_out"]) == {WITHIN_HOST, ACROSS_HOSTS, HIER}
    cases = fig["validate"]["cases"]
    assert {c["case"].split()[0] for c in cases} == {"dense", "moe"}
    assert all(any(lv != WITHIN_HOST for lv in c["levels"].values()) for c in cases)
    assert all(c["measured_s"] > 0 and c["forecast_s"] > 0 for c in cases)
    print_figures(fig)
