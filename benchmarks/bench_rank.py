"""How fast `meshcast rank` searches 1,024-chip jobs, on one core (issue 14 target: at least
1,000,000 configurations/s through the fast path on the README's MoE search and on GPT-3 175B
over 1,024 A100s, pipeline included; issue 4's: the full search under 2 s), and how far the fast
path is from the graph path on a sample of its table (they schedule one plan: float rounding).
Prints figures; run with `make bench`."""

from __future__ import annotations

import os
import statistics
import time

import numpy as np
import pytest

from simulator.predict import predict_job
from simulator.search import make_space, rank
from simulator.specs.job import make_job

JOBS = {
    "mixtral-8x7b on 1024 h100-sxm": ("mixtral-8x7b", "h100-sxm"),
    "moe-6.4b on 1024 tpu-v5p": ("moe-6.4b", "tpu-v5p"),
    "gpt3-175b on 1024 a100-sxm-80gb": ("gpt3-175b", "a100-sxm-80gb"),
}


def _one_core() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


@pytest.mark.benchmark
@pytest.mark.parametrize("label", list(JOBS))
def test_rank_1024_chip_moe(label):
    _one_core()
    model, hardware = JOBS[label]
    space = make_space(model, hardware, 1024, seq_len=4096)  # 1024 seqs x 4096 tokens per step
    t0 = time.perf_counter()
    res = rank(space, top=3)  # cold: first search in this process (compiles pipeline programs)
    cold = time.perf_counter() - t0
    fulls, rates = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        res = rank(space, top=3)
        fulls.append(time.perf_counter() - t0)
        rates.append(res.configs_per_s)
    c = res.counts
    s = {k: round(v, 3) for k, v in res.seconds.items()}
    print(f"\nrank [{label}]: {c['candidates']:,} valid configurations ({c['evaluated']:,} "
          f"evaluated, {c['out_of_memory']:,} out of memory; {c['invalid_total']:,} invalid)")
    print(f"  fast path: median {statistics.median(rates):,.0f} configs/s (best "
          f"{max(rates):,.0f}; target >= 1,000,000)")
    print(f"  full search: median {statistics.median(fulls):.2f} s, best {min(fulls):.2f} s, "
          f"first in process {cold:.2f} s (target < 2 s); last run's parts {s}")
    best = res.top[0]
    print(f"  best: {best.row['mesh']} {best.row['placement']}, mb {best.row['micro_batch']}, "
          f"remat {best.row['remat']}, {best.row['schedule']}, step {best.prediction.step_time_s:.4f} s")
    _agreement(space, res)


def _agreement(space, res, n: int = 25) -> None:
    """Max |fast / graph - 1| over ``n`` evaluated rows drawn at random."""
    idx = np.random.default_rng(0).choice(len(res.table), size=n, replace=False)
    errs = []
    for i in idx:
        pred = predict_job(make_job(space.model, res.table.sharding(i), space.hardware, space.chips))
        errs.append(abs(res.times.step_s[i] / pred.step_time_s - 1))
    print(f"  fast vs graph path on {n} random rows: max {max(errs):.2e}, median "
          f"{statistics.median(errs):.1e} (one plan: float rounding)")
