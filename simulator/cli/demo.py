"""`make demo`: forecast a dense and an MoE model on built-in hardware and print them."""

from __future__ import annotations

from simulator.predict import predict
from simulator.cli.report import format_prediction

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
    for kw in DEMO_JOBS:
        print(format_prediction(predict(**kw)))
        print()


if __name__ == "__main__":
    main()
