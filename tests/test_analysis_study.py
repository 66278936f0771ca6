"""The sharding study (issue 6): each layout's best MoE configuration stays in its family, and
its increase over the dense reference splits into parts that add up."""

from __future__ import annotations

import pytest

from meshcast.errors import MeshcastError
from simulator.analysis.study import LAYOUTS, format_study, sharding_study, study_pair

BATCH = dict(global_batch=64, seq_len=2048)


@pytest.fixture(scope="module")
def rows():
    return study_pair("dense-6.4b", "moe-6.4b", "h100-sxm", 64, "6.4b", **BATCH)


def test_each_layout_keeps_to_its_axes(rows):
    by = {r.layout: r for r in rows}
    assert list(by) == list(LAYOUTS)
    m = by["3d"].mesh
    assert m.get("data", 1) * m.get("fsdp", 1) > 1 and m["expert"] > 1 and m["model"] > 1
    assert "expert" not in by["no_expert"].mesh
    assert set(by["expert_in_data"].mesh) <= {"expert", "model"} and by["expert_in_data"].mesh["expert"] > 1
    assert set(by["model_only"].mesh) <= {"model", "pipeline"}


def test_increase_is_the_step_ratio_and_its_parts_add_up(rows):
    for r in rows:
        assert r.dense_step_s == rows[0].dense_step_s  # one dense reference for every layout
        assert r.increase == pytest.approx(r.moe_step_s / r.dense_step_s - 1, rel=1e-12)
        assert sum(r.parts_s.values()) == pytest.approx(r.moe_step_s - r.dense_step_s, rel=1e-9)
    # Only the layouts with an expert axis pay for an all-to-all.
    by = {r.layout: r for r in rows}
    assert by["3d"].parts_s["all_to_all"] > 0 and by["no_expert"].parts_s["all_to_all"] == 0


def test_study_table_and_layouts_without_a_configuration():
    rows = sharding_study(hardware=("h100-sxm",), scales=("12.6b",), chips=32,
                          layouts=("3d", "model_only"), **BATCH)
    text = format_study(rows)
    assert "12.6b" in text and "3d" in text and "model_only" in text
    # moe-12.6b's 280B parameters (16 bytes each with Adam, 140 GB a chip even fully sharded)
    # fit 32 H100s in neither layout: each row says so, with the smallest footprint the search
    # found, and has no step time.
    for r in rows:
        assert r.moe_step_s is None and r.increase is None
        assert r.reason.startswith("does not fit: ") and "GiB" in r.reason
        assert r.reason in text


def test_study_rejects_unknown_scales_and_layouts():
    with pytest.raises(MeshcastError, match="scale: '7b'"):
        sharding_study(scales=("7b",))
    with pytest.raises(MeshcastError, match="layout: '2d'"):
        sharding_study(layouts=("2d",))


@pytest.mark.parametrize("kw, name", [(dict(hardware="nope"), "hardware"), (dict(chips=0), "chips")])
def test_study_raises_on_bad_input_instead_of_tabulating_it(kw, name):
    with pytest.raises(MeshcastError, match=name):
        sharding_study(scales="6.4b", layouts=("3d",), **{"chips": 256, **kw})
    with pytest.raises(MeshcastError, match="layout"):
        study_pair("dense-6.4b", "moe-6.4b", "h100-sxm", 256, layouts=("2d",))
