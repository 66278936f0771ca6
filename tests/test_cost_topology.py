"""Topology: levels for a job, axis placement, device groups and the links they cross."""

from __future__ import annotations

import pytest

from meshcast.errors import MeshcastError
from simulator.cost.topology import build_topology, job_levels

ORDER = ["model", "seq", "expert", "fsdp", "data", "pipeline"]


def test_gpu_levels_fill_the_nvlink_domain_first(gpu_profile):
    lv = job_levels(gpu_profile, 32)
    assert [(x.name, x.size) for x in lv] == [("nvlink", 8), ("ib", 4)]
    assert [(x.name, x.size) for x in job_levels(gpu_profile, 4)] == [("nvlink", 4), ("ib", 1)]


def test_chips_that_split_a_node_are_rejected(gpu_profile):
    with pytest.raises(MeshcastError, match="chips: 12"):
        job_levels(gpu_profile, 12)


def test_model_axis_groups_stay_inside_a_node(gpu_profile):
    topo = build_topology(gpu_profile, 32, {"model": 8, "data": 4}, ORDER, {})
    groups = topo.axis_groups("model")
    assert len(groups) == 4 and all(len(g) == 8 for g in groups)
    assert all(max(g) // 8 == min(g) // 8 for g in groups)  # one node each
    assert topo.links_used("model") == {"nvlink"}
    assert topo.links_used("data") == {"ib"}
    data_groups = topo.axis_groups("data")
    assert sorted(data_groups[0]) == [0, 8, 16, 24]


def test_binding_moves_an_axis_to_the_named_level(gpu_profile):
    topo = build_topology(gpu_profile, 32, {"model": 4, "data": 8}, ORDER, {"data": ["nvlink", "ib"]})
    assert [(p.level.name, p.factor) for p in topo.placement["data"]] == [("nvlink", 8)]
    assert [(p.level.name, p.factor) for p in topo.placement["model"]] == [("ib", 4)]
    assert topo.links_used("model") == {"ib"}


def test_binding_to_unknown_level_names_the_levels(gpu_profile):
    with pytest.raises(MeshcastError, match="bindings.model: unknown level 'ici_x'.*nvlink, ib"):
        build_topology(gpu_profile, 16, {"model": 8, "data": 2}, ORDER, {"model": ["ici_x"]})


def test_axis_too_big_for_its_bound_level(gpu_profile):
    with pytest.raises(MeshcastError, match="mesh.model=16 does not fit"):
        build_topology(gpu_profile, 16, {"model": 16}, ORDER, {"model": ["nvlink"]})


def test_torus_slice_and_wraparound(torus_profile):
    lv = job_levels(torus_profile, 16)
    assert [(x.name, x.size, x.wraparound) for x in lv] == [
        ("ici_x", 4, True), ("ici_y", 4, True), ("dcn", 1, False)]
    small = job_levels(torus_profile, 4)
    assert [(x.size, x.wraparound) for x in small[:2]] == [(2, False), (2, False)]
    multi = job_levels(torus_profile, 64)
    assert multi[-1].size == 4  # four 4x4 slices over DCN


def test_torus_graph_has_wraparound_links(torus_profile):
    topo = build_topology(torus_profile, 16, {"fsdp": 4, "model": 4}, ORDER,
                          {"fsdp": ["ici_x"], "model": ["ici_y"]})
    g = topo.graph
    assert g.has_edge(0, 3)  # x wraps: device (3, 0) back to (0, 0)
    assert g.has_edge(0, 12)  # y wraps
    assert topo.links_used("fsdp") == {"ici_x"}
    assert topo.links_used("model") == {"ici_y"}


def test_unknown_chip_count_for_torus(torus_profile):
    assert job_levels(torus_profile, 8)[-1].size == 2  # two 2x2 slices over DCN
    with pytest.raises(MeshcastError, match="valid slice sizes: \\[4, 16\\]"):
        job_levels(torus_profile, 6)


def test_slice_shape_override(torus_profile):
    lv = job_levels(torus_profile, 16, slice_shape=[2, 2])
    assert [x.size for x in lv] == [2, 2, 4]
    with pytest.raises(MeshcastError, match="slice_shape: \\[3, 3\\]"):
        job_levels(torus_profile, 9, slice_shape=[3, 3])
