"""Known answers for collectives, derived by hand from the formulas' sources."""

from __future__ import annotations

import pytest

from simulator.cost.collectives import Collective, collective_time
from simulator.cost.topology import build_topology

ORDER = ["model", "seq", "expert", "fsdp", "data", "pipeline"]


def parts(profile, chips, mesh, bindings=None, axis="model"):
    topo = build_topology(profile, chips, mesh, ORDER, bindings or {})
    return topo.placement[axis]


def test_ring_all_reduce_inside_one_nvlink_node(gpu_profile):
    # 8 GPUs on a switch: ring all-reduce = 2 (f-1)/f S / W + 2 (f-1) a
    S = 1e9
    p = parts(gpu_profile, 8, {"model": 8})
    expected = 2 * (7 / 8) * S / 100e9 + 2 * 7 * 2e-6
    assert collective_time(Collective.ALL_REDUCE, p, S) == pytest.approx(expected, rel=1e-12)


def test_all_gather_is_half_an_all_reduce_on_one_level(gpu_profile):
    p = parts(gpu_profile, 8, {"model": 8})
    ag = collective_time(Collective.ALL_GATHER, p, 3e8)
    ar = collective_time(Collective.ALL_REDUCE, p, 3e8)
    assert ar == pytest.approx(2 * ag, rel=1e-12)


def test_hierarchical_all_reduce_over_nvlink_and_ib(gpu_profile):
    # data = 32 on 8 NVLink x 4 IB: RS(nvlink, S) + RS(ib, S/8) + AG(ib, S/8) + AG(nvlink, S)
    S = 8e8
    p = parts(gpu_profile, 32, {"data": 32}, axis="data")
    assert [(x.level.name, x.factor) for x in p] == [("nvlink", 8), ("ib", 4)]
    nv = (7 / 8) * S / 100e9 + 7 * 2e-6
    ib = (3 / 4) * (S / 8) / 10e9 + 3 * 5e-6
    assert collective_time(Collective.ALL_REDUCE, p, S) == pytest.approx(2 * (nv + ib), rel=1e-12)


def test_all_to_all_over_wrapped_torus_dimension(torus_profile):
    # f = 4 on a wrapped ring: hop distances 1, 2, 1 -> H = 4; T = B H / (2 f W) + 2 a
    B = 1e8
    p = parts(torus_profile, 16, {"expert": 4, "data": 4}, {"expert": ["ici_x"]}, axis="expert")
    assert p[0].wraps
    expected = B * 4 / (2 * 4 * 50e9) + 2 * 1e-6
    assert collective_time(Collective.ALL_TO_ALL, p, B) == pytest.approx(expected, rel=1e-12)
    # = B f / (8 W) for even f: the bidirectional-ring all-to-all of the scaling book
    assert expected - 2e-6 == pytest.approx(B * 4 / (8 * 50e9), rel=1e-12)


def test_all_to_all_on_a_torus_line_without_wraparound(torus_profile):
    # 2x2 slice: no wraparound; f = 2 line: floor(1) ceil(1) B / (2 W) + a
    B = 1e8
    p = parts(torus_profile, 4, {"expert": 2, "data": 2}, {"expert": ["ici_y"]}, axis="expert")
    assert not p[0].wraps
    assert collective_time(Collective.ALL_TO_ALL, p, B) == pytest.approx(B / (2 * 50e9) + 1e-6)


def test_bidirectional_ring_halves_bandwidth_time_on_wrapped_torus(torus_profile):
    S = 4e8
    p = parts(torus_profile, 16, {"fsdp": 4, "data": 4}, {"fsdp": ["ici_x"]}, axis="fsdp")
    expected = (3 / 4) * S / (2 * 50e9) + 1.5 * 1e-6
    assert collective_time(Collective.ALL_GATHER, p, S) == pytest.approx(expected, rel=1e-12)


def test_switch_all_to_all_is_direct(gpu_profile):
    B = 1e8
    p = parts(gpu_profile, 8, {"expert": 8}, axis="expert")
    assert collective_time(Collective.ALL_TO_ALL, p, B) == pytest.approx(
        (7 / 8) * B / 100e9 + 2e-6, rel=1e-12)


def test_all_to_all_across_levels_is_paced_by_the_busiest(gpu_profile):
    B = 1e8
    p = parts(gpu_profile, 16, {"expert": 16}, axis="expert")
    nv = (7 / 8) * B / 100e9
    ib = (1 / 2) * B / 10e9
    assert collective_time(Collective.ALL_TO_ALL, p, B) == pytest.approx(
        max(nv, ib) + 2e-6 + 5e-6, rel=1e-12)


def test_permute_crosses_the_outermost_level(gpu_profile):
    p = parts(gpu_profile, 16, {"pipeline": 2, "model": 8}, axis="pipeline")
    assert collective_time(Collective.PERMUTE, p, 1e8) == pytest.approx(1e8 / 10e9 + 5e-6)


def test_empty_group_costs_nothing(gpu_profile):
    assert collective_time(Collective.ALL_REDUCE, (), 1e9) == 0.0


def test_efficiency_scales_bandwidth():
    from tests.conftest import make_profile

    prof = make_profile([{"name": "nv", "kind": "switch", "size": 4, "bw": 100e9, "lat": 1e-9,
                          "eff": 0.5}])
    p = parts(prof, 4, {"model": 4})
    t = collective_time(Collective.ALL_GATHER, p, 1e9)
    assert t == pytest.approx(0.75 * 1e9 / 50e9 + 3e-9, rel=1e-12)
