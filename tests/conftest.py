"""Shared fixtures: small inline specs and a synthetic profile so tests do not lean on zoo data."""

from __future__ import annotations

import pytest

from hardware_profiles.schema import HardwareProfile

S = "test fixture value"


def sourced(v: float) -> dict:
    return {"value": v, "source": S}


def make_profile(levels: list[dict], slices: list[dict] | None = None, **chip) -> HardwareProfile:
    """A profile with round numbers: 1 PFLOP/s bf16, 1 TB/s HBM, no launch cost."""
    return HardwareProfile.model_validate({
        "name": "synthetic",
        "display_name": "synthetic test system",
        "chip": {
            "name": "synthetic",
            "vendor": "other",
            "peak_flops_per_s": {"bf16": sourced(chip.get("bf16", 1e15))},
            "hbm_capacity_bytes": sourced(chip.get("hbm", 80e9)),
            "hbm_bandwidth_bytes_per_s": sourced(chip.get("hbm_bw", 1e12)),
            "launch_overhead_s": sourced(chip.get("launch", 1e-12)),
        },
        "efficiency": {
            k: {"max_efficiency": 1.0, "half_saturation": 0.0, "source": S}
            for k in ("matmul", "attention", "memory")
        },
        "network": [
            {"name": lv["name"], "kind": lv["kind"], "size": lv["size"],
             "link_bandwidth_bytes_per_s": sourced(lv["bw"]), "latency_s": sourced(lv["lat"]),
             "efficiency": {"value": lv.get("eff", 1.0), "source": S},
             "wraparound": lv.get("wrap", False)}
            for lv in levels
        ],
        "slices": slices or [],
    })


@pytest.fixture
def gpu_profile() -> HardwareProfile:
    """8-device switch domain (100 GB/s, 2 us) on a fat tree (10 GB/s, 5 us)."""
    return make_profile([
        {"name": "nvlink", "kind": "switch", "size": 8, "bw": 100e9, "lat": 2e-6},
        {"name": "ib", "kind": "fat_tree", "size": 1024, "bw": 10e9, "lat": 5e-6},
    ])


@pytest.fixture
def torus_profile() -> HardwareProfile:
    """A 4x4 torus (wraps on full dims) with 50 GB/s links, 1 us, plus a DCN level."""
    return make_profile(
        [{"name": "ici_x", "kind": "torus", "size": 4, "bw": 50e9, "lat": 1e-6},
         {"name": "ici_y", "kind": "torus", "size": 4, "bw": 50e9, "lat": 1e-6},
         {"name": "dcn", "kind": "fat_tree", "size": 64, "bw": 5e9, "lat": 1e-5}],
        slices=[{"shape": [2, 2], "wraparound": [False, False], "source": S},
                {"shape": [4, 4], "wraparound": [True, True], "source": S}],
    )
