"""GB200 NVL72 jobs that are not whole racks (issue 13 item 4): a job takes whole 4-GPU compute
trays, the same number in every rack it uses, in as few racks as possible; mesh axes inside a
rack run on NVLink, axes across racks on InfiniBand (hierarchically when they span both)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hardware_profiles import load_profile
from hardware_profiles.schema import HardwareProfile
from simulator.cost.collectives import Collective, collective_time
from meshcast.errors import MeshcastError
from simulator.predict import predict, predict_job
from simulator.search import enumerate_candidates, make_space, rank_table
from simulator.search.fast import memory_per_device, step_times
from simulator.specs.job import make_job
from simulator.cost.topology import build_topology, job_levels

ORDER = ["model", "seq", "expert", "fsdp", "data", "pipeline"]
RACK = 72


@pytest.fixture(scope="module")
def gb200() -> HardwareProfile:
    return load_profile("gb200-nvl72")


def _levels(profile, chips):
    return [(lv.name, lv.size) for lv in job_levels(profile, chips)]


@pytest.mark.parametrize("chips, expected", [
    (64, [("nvlink", 64), ("ib", 1)]),     # 16 trays in one rack
    (128, [("nvlink", 64), ("ib", 2)]),    # 2 racks of 16 trays (Slurm --segment=16)
    (256, [("nvlink", 64), ("ib", 4)]),    # 4 racks of 16 trays
    (96, [("nvlink", 48), ("ib", 2)]),     # 2 racks of 12 trays
    (72, [("nvlink", 72), ("ib", 1)]),     # one full rack, as before
    (144, [("nvlink", 72), ("ib", 2)]),    # two full racks, as before
    (216, [("nvlink", 72), ("ib", 3)]),
    (2, [("nvlink", 2), ("ib", 1)]),       # part of one tray
])
def test_jobs_take_equal_whole_trays_in_as_few_racks_as_possible(gb200, chips, expected):
    assert _levels(gb200, chips) == expected
    per_rack = expected[0][1]
    assert per_rack <= RACK and (per_rack % 4 == 0 or chips < 4)


@pytest.mark.parametrize("chips", [64, 128, 256])
def test_a_model_axis_of_8_stays_inside_a_rack_on_nvlink(gb200, chips):
    topo = build_topology(gb200, chips, {"model": 8, "data": chips // 8}, ORDER, {})
    per_rack = topo.levels[0].size
    assert [(p.level.name, p.factor) for p in topo.placement["model"]] == [("nvlink", 8)]
    assert topo.links_used("model") == {"nvlink"}
    groups = topo.axis_groups("model")
    assert len(groups) == chips // 8
    assert all(len({d // per_rack for d in g}) == 1 for g in groups)  # one rack each


def test_a_data_axis_across_two_racks_uses_only_ib(gb200):
    topo = build_topology(gb200, 128, {"model": 8, "fsdp": 8, "data": 2}, ORDER, {})
    assert [(p.level.name, p.factor) for p in topo.placement["data"]] == [("ib", 2)]
    assert topo.links_used("data") == {"ib"}
    assert topo.links_used("fsdp") == {"nvlink"}
    assert all(len({d // 64 for d in g}) == 2 for g in topo.axis_groups("data"))
    # a ring all-reduce over IB only: 2 (f-1)/f S / W + 2 (f-1) a with f = 2
    ib = job_levels(gb200, 128)[1]
    S = 1e9
    want = 2 * (0.5 * S / ib.effective_bandwidth + ib.latency_s)
    got = collective_time(Collective.ALL_REDUCE, topo.placement["data"], S)
    assert got == pytest.approx(want, rel=1e-12)


def test_an_axis_spanning_racks_is_hierarchical_nvlink_then_ib(gb200):
    topo = build_topology(gb200, 128, {"model": 8, "data": 16}, ORDER, {})
    parts = topo.placement["data"]
    assert [(p.level.name, p.factor) for p in parts] == [("nvlink", 8), ("ib", 2)]
    assert topo.links_used("data") == {"nvlink", "ib"}
    nv, ib = job_levels(gb200, 128)
    S = 8e8
    # RS(nvlink, S) + RS(ib, S/8) + AG(ib, S/8) + AG(nvlink, S)
    t_nv = (7 / 8) * S / nv.effective_bandwidth + 7 * nv.latency_s
    t_ib = (1 / 2) * (S / 8) / ib.effective_bandwidth + ib.latency_s
    got = collective_time(Collective.ALL_REDUCE, parts, S)
    assert got == pytest.approx(2 * (t_nv + t_ib), rel=1e-12)


@pytest.mark.parametrize("chips, mesh, placed", [
    (64, {"data": -1, "model": 8}, {"model": "nvlink:8", "data": "nvlink:8"}),
    (128, {"data": 2, "fsdp": 8, "model": 8},
     {"model": "nvlink:8", "fsdp": "nvlink:8", "data": "ib:2"}),
    (256, {"data": -1, "fsdp": 8, "model": 8},
     {"model": "nvlink:8", "fsdp": "nvlink:8", "data": "ib:4"}),
    (72, {"data": -1, "model": 8}, {"model": "nvlink:8", "data": "nvlink:9"}),
    (144, {"data": -1, "model": 8}, {"model": "nvlink:8", "data": "nvlink:9+ib:2"}),
])
def test_nvl72_jobs_forecast(chips, mesh, placed):
    p = predict(model="llama3-70b", hardware="gb200-nvl72", chips=chips, mesh=mesh,
                seq_len=4096, global_batch=288 if chips % 9 == 0 else 256, remat="full")
    assert math.isfinite(p.step_time_s) and p.step_time_s > 0
    assert p.to_dict()["placement"] == placed
    assert p.memory.fits
    crosses_racks = any("ib" in where for where in placed.values())
    assert crosses_racks == (chips > RACK)
    assert any(k.startswith("comm.") for k in p.breakdown_s)


@pytest.mark.parametrize("chips, nearest", [(70, "68 or 72"), (130, "128 or 132"), (6, "4 or 8")])
def test_counts_that_split_a_tray_are_refused_with_the_nearest_valid_counts(gb200, chips, nearest):
    with pytest.raises(MeshcastError, match=rf"chips: {chips} .*multiple of 4.*"
                                            rf"nearest valid: {nearest}$"):
        job_levels(gb200, chips)
    with pytest.raises(MeshcastError, match=rf"chips: {chips} "):
        predict(model="llama3-70b", hardware="gb200-nvl72", chips=chips, mesh={"data": -1})


def test_too_many_chips_name_the_largest_system(gb200):
    with pytest.raises(MeshcastError, match=r"chips: 36868 exceeds .*36864 chips.*nearest valid: 36864"):
        job_levels(gb200, 36868)


def test_placement_unit_is_a_profile_field_not_a_gb200_special_case(gb200):
    raw = gb200.model_dump()
    raw["network"][0]["placement_unit"] = None
    whole_racks = HardwareProfile.model_validate(raw)
    assert _levels(whole_racks, 144) == [("nvlink", 72), ("ib", 2)]
    with pytest.raises(MeshcastError, match="does not fill whole nvlink groups of 72"):
        job_levels(whole_racks, 128)  # the old rule: whole racks only
    raw["network"][0]["placement_unit"] = {"value": 8, "source": "test: 8-GPU trays"}
    assert _levels(HardwareProfile.model_validate(raw), 128) == [("nvlink", 64), ("ib", 2)]
    assert _levels(HardwareProfile.model_validate(raw), 96) == [("nvlink", 48), ("ib", 2)]
    raw["network"][0]["placement_unit"] = {"value": 5, "source": "test: does not divide 72"}
    with pytest.raises(ValueError, match="placement_unit 5 must be a whole number dividing size 72"):
        HardwareProfile.model_validate(raw)


def test_8_gpu_servers_are_unchanged():
    h100 = load_profile("h100-sxm")
    assert _levels(h100, 32) == [("nvlink", 8), ("ib", 4)]
    assert _levels(h100, 4) == [("nvlink", 4), ("ib", 1)]
    with pytest.raises(MeshcastError, match=r"chips: 12 does not fill whole nvlink groups of 8 "
                                            r".*nearest valid: 8 or 16"):
        job_levels(h100, 12)


def test_the_search_agrees_with_the_graph_path_on_two_partial_racks(gb200):
    space = make_space(model="llama3-8b", hardware="gb200-nvl72", chips=128, seq_len=2048,
                       global_batch=64)
    assert [(lv.name, lv.size) for lv in space.levels] == _levels(gb200, 128)
    cands = enumerate_candidates(space)
    mem = memory_per_device(cands)
    fits = mem <= space.hardware.chip.hbm_capacity_bytes.value
    idx = np.random.default_rng(4).choice(np.nonzero(fits)[0], size=6, replace=False)
    sub = cands.take(idx)
    fast = step_times(sub).step_s
    crossing = 0
    for i in range(len(sub)):
        pred = predict_job(make_job(space.model, sub.sharding(i), space.hardware, space.chips))
        assert pred.memory.per_device_bytes == pytest.approx(mem[idx[i]], rel=1e-12)
        assert fast[i] == pytest.approx(pred.step_time_s, rel=0.02), sub.row(i)
        crossing += any("ib" in w for w in pred.to_dict()["placement"].values())
    assert crossing == len(sub)  # 128 GPUs on two racks: some axis always crosses them
    res = rank_table(cands, top=1, finalists=4)
    assert res.top[0].fast_step_s == pytest.approx(res.top[0].prediction.step_time_s, rel=0.02)
