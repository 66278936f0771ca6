"""The sharding study of Du et al. 2024 (issue 6): the dense-to-MoE step-time increase of the
6.4B-, 12.6B- and 29.6B-class pairs under the 3D data/expert/model layout and its alternatives
(no expert axis; expert axis folded into data; model-parallel only), on a GPU and a TPU profile,
at 256 and 1,024 chips, 1,024 sequences of 4,096 tokens per step. Prints the table (and how
long the study took); run with `make bench`. Figures: the profiles' default (uncalibrated)
efficiencies; the zoo's 12.6B/29.6B shapes and all MoE expert counts are UNVERIFIED."""

from __future__ import annotations

import time

import pytest

from simulator.analysis.study import LAYOUTS, format_study, sharding_study

HARDWARE = ("h100-sxm", "tpu-v5p")
CHIPS = (256, 1024)


@pytest.mark.benchmark
def test_sharding_study():
    t0 = time.perf_counter()
    rows = [r for chips in CHIPS for r in sharding_study(HARDWARE, chips=chips, seq_len=4096)]
    seconds = time.perf_counter() - t0
    print(f"\nsharding study: {len(rows)} rows ({len(HARDWARE)} profiles x {len(CHIPS)} chip "
          f"counts x 3 scales x {len(LAYOUTS)} layouts) in {seconds:.1f} s")
    for name, (what, _, _) in LAYOUTS.items():
        print(f"  {name:<15}{what}")
    print(format_study(rows))
    best = {}
    for r in rows:
        if r.increase is not None:
            key = (r.hardware, r.chips, r.scale)
            if key not in best or r.increase < best[key].increase:
                best[key] = r
    print("fastest layout per (hardware, chips, scale): "
          + ", ".join(f"{k[0]} x{k[1]} {k[2]}: {r.layout}" for k, r in best.items()))
    assert all(r.increase is not None or r.reason for r in rows)
    assert len(best) == len(HARDWARE) * len(CHIPS) * 3  # some layout fits every case
