"""Issue 3's accuracy benchmark: a fresh quick calibration on 8 virtual CPU devices, its fit
(``DIR/profile.yaml``), then six (model, mesh) train steps measured vs forecast from that file,
and the median absolute error (target < 15%, none over 30%), all in one run. Prints figures; run
with `make bench`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


@pytest.mark.benchmark
def test_calibrate_fit_validate_on_cpu(tmp_path):
    cli = [sys.executable, "-m", "simulator.cli.main"]
    t0 = time.perf_counter()
    cal = subprocess.run([*cli, "calibrate", "--backend", "cpu", "--devices", "8", "--quick",
                          "--out", str(tmp_path)], capture_output=True, text=True)
    t_cal = time.perf_counter() - t0
    assert cal.returncode == 0, cal.stderr[-2000:]
    fit = subprocess.run([*cli, "fit", str(tmp_path)], capture_output=True, text=True)
    assert fit.returncode == 0, fit.stderr[-2000:]
    val = subprocess.run([*cli, "validate", "--calibration", str(tmp_path), "--json"],
                         capture_output=True, text=True)
    assert val.returncode == 0, val.stderr[-2000:]
    out = json.loads(val.stdout)
    print(f"\nquick calibration: {t_cal:.1f} s (target < 180 s)")
    print(f"validated {out['profile']} (sha256 {out['profile_sha256'][:16]}), steps in "
          f"{out['dtype']}")
    for c in out["cases"]:
        print(f"  {c['case']:<34} measured {c['measured_s'] * 1e3:8.1f} ms  forecast "
              f"{c['forecast_s'] * 1e3:8.1f} ms  error {100 * c['error']:+6.1f}%")
    worst = max(abs(c["error"]) for c in out["cases"])
    print(f"  median |error| {100 * out['median_abs_error']:.1f}% (target < 15%), "
          f"worst {100 * worst:.1f}% (target < 30%)")
