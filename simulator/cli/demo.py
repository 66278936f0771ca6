"""`make demo`: forecast a dense and an MoE model as ``meshcast predict`` does by default (the
shipped fit of published runs, :data:`~hardware_profiles.FITTED_DIR`, with its interval) and
print them."""

from __future__ import annotations

from hardware_profiles import FITTED_DIR, profile_dirs
from simulator.analysis.interval import interval_of
from simulator.cli.report import format_prediction
from simulator.predict import predict

DEMO_JOBS = [
    dict(model="llama3-70b", hardware="h100-sxm", chips=64,
         mesh={"data": -1, "fsdp": 8, "model": 4}, global_batch=256, remat="full"),
    dict(model="mixtral-8x7b", hardware="h100-sxm", chips=64,
         mesh={"data": -1, "expert": 8, "model": 2}, global_batch=256, remat="full",
         distributed_optimizer=True),
    dict(model="moe-6.4b", hardware="tpu-v5p", chips=128,
         mesh={"fsdp": -1, "expert": 8, "model": 4}, global_batch=512),
]


def main() -> None:
    with profile_dirs(FITTED_DIR):
        for kw in DEMO_JOBS:
            pred = predict(**kw)
            print(format_prediction(pred, interval_of(pred)))
            print()


if __name__ == "__main__":
    main()
