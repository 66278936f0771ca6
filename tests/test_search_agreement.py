"""The fast path against the graph path: the search times the graph's own plan (max-plus form of
the one list scheduler), so step time and memory are equal to float rounding on a sample of
configurations -- dense and MoE, with and without a pipeline, on GPU, TPU and CPU-host profiles
(the last with collectives on the compute stream) -- and the same configuration ranks first."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.predict import predict_job
from simulator.search import enumerate_candidates, make_space, rank_table
from simulator.search.fast import memory_per_device, step_times
from simulator.specs.job import make_job

TOLERANCE = 1e-9  # float rounding: both paths schedule one plan (issue 14)
JOBS = {
    "dense-gpu": dict(model="llama3-8b", hardware="h100-sxm", chips=32),
    "moe-gpu": dict(model="mixtral-8x7b", hardware="h100-sxm", chips=32),
    "dense-tpu": dict(model="llama3-8b", hardware="tpu-v5p", chips=32),
    "moe-tpu": dict(model="moe-6.4b", hardware="tpu-v5p", chips=32),  # dense and MoE layers
    # Megatron's TP and EP communication overlap (meshes with and without TP / EP in one space)
    "moe-gpu-overlap": dict(model="mixtral-8x7b", hardware="h100-sxm", chips=32,
                            tp_comm_overlap=True, ep_comm_overlap=True),
    # dropless MoE issued eagerly: the host's issue time floors the dispatch-to-combine part
    "moe-gpu-eager": dict(model="mixtral-8x7b", hardware="h100-sxm", chips=32,
                          moe_host_issue_s=3e-4),
    # deduplicated dispatch (DeepEP): expert groups inside a node and across nodes
    "moe-gpu-deepep": dict(model="qwen3-30b-a3b", hardware="h100-sxm", chips=32,
                           moe_dispatcher="deepep"),
    # collectives on the compute stream (a calibrated CPU host): the search ranks it too
    "moe-serial": dict(model="moe-6.4b", hardware="h100-sxm", chips=32, serial=True),
    "dense-serial": dict(model="llama3-8b", hardware="tpu-v5p", chips=32, serial=True),
}


def _serial(name: str):
    """A profile whose collectives run on the compute cores (as a calibrated CPU host's)."""
    from hardware_profiles import load_profile

    hw = load_profile(name)
    return hw.model_copy(update={"chip": hw.chip.model_copy(
        update={"collectives_use_compute": True})})


def _space(job):
    kw = dict(JOBS[job])
    if kw.pop("serial", False):
        kw["hardware"] = _serial(kw["hardware"])
    return make_space(**kw, seq_len=2048, global_batch=64)


def _sample(cands, fits, pipelined: bool, n: int, seed: int) -> np.ndarray:
    pool = np.nonzero(fits & ((cands.axis("pipeline") > 1) == pipelined))[0]
    return np.random.default_rng(seed).choice(pool, size=min(n, len(pool)), replace=False)


def assert_sample_agrees(space, pipelined: bool, n: int, seed: int):
    """Draw ``n`` fitting candidates of ``space`` (with or without a pipeline) and check each
    against predict: memory identical, step time within :data:`TOLERANCE`. Returns every
    candidate's per-device memory and the sampled candidates."""
    cands = enumerate_candidates(space)
    mem = memory_per_device(cands)
    fits = mem <= space.hardware.chip.hbm_capacity_bytes.value
    idx = _sample(cands, fits, pipelined, n, seed)
    assert len(idx) == n
    sub = cands.take(idx)
    fast = step_times(sub).step_s
    for i in range(len(sub)):
        pred = predict_job(make_job(space.model, sub.sharding(i), space.hardware, space.chips))
        assert pred.memory.per_device_bytes == pytest.approx(mem[idx[i]], rel=1e-12)
        assert fast[i] == pytest.approx(pred.step_time_s, rel=TOLERANCE), sub.row(i)
    return mem, sub


@pytest.mark.parametrize("job", list(JOBS))
@pytest.mark.parametrize("pipelined", [False, True], ids=["no-pipeline", "pipeline"])
def test_fast_path_agrees_with_the_graph_path(job, pipelined):
    assert_sample_agrees(_space(job), pipelined, 6, seed=4)


@pytest.mark.parametrize("job", ["dense-gpu", "moe-tpu"])
def test_the_same_configuration_ranks_first(job):
    res = rank_table(enumerate_candidates(_space(job)), top=1, finalists=6)
    assert res.top[0].index == 0  # the graph path's best finalist is the fast path's best
    assert res.top[0].fast_step_s == pytest.approx(res.top[0].prediction.step_time_s,
                                                   rel=TOLERANCE)
