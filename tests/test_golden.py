"""Golden breakdowns: a few jobs' forecasts dumped as ``path: value`` lines, diffed in tests.

A change to the cost model or to the profile data shows up here as a readable diff. When the
change is intended, regenerate with ``MESHCAST_UPDATE_GOLDEN=1 make test`` and commit the files.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simulator.predict import predict

GOLDEN = Path(__file__).parent / "golden"
CASES = {
    "llama3-8b_h100_fsdp8_data8": dict(model="llama3-8b", hardware="h100-sxm", chips=64,
                                       mesh={"data": -1, "fsdp": 8}, global_batch=512),
    "llama3-70b_h100_tp4_pp4": dict(model="llama3-70b", hardware="h100-sxm", chips=128,
                                    mesh={"data": -1, "model": 4, "pipeline": 4},
                                    global_batch=256, distributed_optimizer=True,
                                    pipeline_schedule="interleaved", virtual_stages=5),
    "mixtral-8x7b_h100_ep8_tp2": dict(model="mixtral-8x7b", hardware="h100-sxm", chips=64,
                                      mesh={"data": -1, "expert": 8, "model": 2},
                                      global_batch=256, remat="full"),
    "moe-6.4b_tpu-v5p_3d": dict(model="moe-6.4b", hardware="tpu-v5p", chips=64,
                                mesh={"data": -1, "expert": 4, "model": 4}, global_batch=256),
}


def flatten(obj, prefix: str = "") -> list[str]:
    """``a.b.c: value`` lines, floats to 6 significant digits, keys sorted."""
    if isinstance(obj, dict):
        return [line for k in sorted(obj) for line in flatten(obj[k], f"{prefix}{k}.")]
    if isinstance(obj, float):
        return [f"{prefix[:-1]}: {obj:.6g}"]
    return [f"{prefix[:-1]}: {obj}"]


@pytest.mark.parametrize("case", list(CASES))
def test_golden_breakdown(case):
    text = "\n".join(flatten(predict(**CASES[case]).to_dict())) + "\n"
    path = GOLDEN / f"{case}.txt"
    if os.environ.get("MESHCAST_UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(text)
        if os.environ.get("CI"):
            pytest.fail(f"golden file {path.name} was missing in CI; generate and commit it")
    assert text == path.read_text(), f"forecast drifted from {path}; see the diff above"
