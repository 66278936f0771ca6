"""Built-in hardware profiles: every YAML loads, every number has a source, names resolve, and the
data is physically sane (TPU slices match their torus levels and wraparound rules).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from hardware_profiles import PROFILE_DIR, list_profiles, load_profile, load_profile_file
from hardware_profiles.loader import _norm
from hardware_profiles.schema import EfficiencyCurve, Fraction, HardwareProfile, SliceShape, Sourced
from meshcast.errors import MeshcastError
from simulator.cost.topology import job_levels

REQUIRED = {"a100-sxm-80gb", "h100-sxm", "h200", "b200", "gb200-nvl72", "mi300x",
            "tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e",
            "b300", "gb300-nvl72", "tpu-v7", "mi355x", "mi325x"}
TPUS = {"tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e", "tpu-v7"}
TPUS_3D = {"tpu-v4", "tpu-v5p", "tpu-v7"}  # 3D torus of 4x4x4 cubes joined by optical switches
# Largest single slice per generation (Cloud TPU docs): v4 pod 16x16x16, v5p max slice 16x16x24,
# v5e/v6e pod 16x16, TPU7x a whole 9216-chip pod (xpk's 16x24x24).
MAX_SLICE_CHIPS = {"tpu-v4": 4096, "tpu-v5e": 256, "tpu-v5p": 6144, "tpu-v6e": 256, "tpu-v7": 9216}
STEMS = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _sourced_items(obj, path: str = "") -> list[tuple[str, object]]:
    """Every model in the tree that carries a ``source`` (Sourced, Fraction, curves, slices)."""
    found = []
    if isinstance(obj, BaseModel):
        if "source" in type(obj).model_fields:
            found.append((path, obj))
        for name in type(obj).model_fields:
            found += _sourced_items(getattr(obj, name), f"{path}.{name}" if path else name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            found += _sourced_items(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found += _sourced_items(v, f"{path}.{i}")
    return found


def _h100_text() -> str:
    return (PROFILE_DIR / "h100-sxm.yaml").read_text()


# --- loading and names -------------------------------------------------------------------------

def test_required_profiles_present():
    assert REQUIRED <= set(STEMS), f"missing: {sorted(REQUIRED - set(STEMS))}"
    assert {p.name for p in list_profiles()} == set(STEMS)


@pytest.mark.parametrize("stem", STEMS)
def test_profile_loads_by_name_and_path(stem):
    prof = load_profile(stem)
    assert isinstance(prof, HardwareProfile)
    assert prof.name == stem, "file stem must equal the profile's name field"
    assert load_profile_file(PROFILE_DIR / f"{stem}.yaml") == prof
    assert load_profile(str(PROFILE_DIR / f"{stem}.yaml")).name == stem


@pytest.mark.parametrize("stem", STEMS)
def test_every_number_has_a_source(stem):
    items = _sourced_items(load_profile(stem))
    kinds = {type(o) for _, o in items}
    assert {Sourced, Fraction, EfficiencyCurve} <= kinds
    for path, obj in items:
        assert obj.source.strip(), f"{stem}: {path} has an empty source"
        assert len(obj.source.strip()) >= 10, f"{stem}: {path} source too vague: {obj.source!r}"


@pytest.mark.parametrize("stem", STEMS)
def test_datasheet_numbers_are_not_assumed(stem):
    """Peaks, HBM and link bandwidths must cite a document, not an assumption."""
    prof = load_profile(stem)
    numbers = {f"peak_flops_per_s.{d}": s for d, s in prof.chip.peak_flops_per_s.items()}
    numbers["hbm_capacity_bytes"] = prof.chip.hbm_capacity_bytes
    numbers["hbm_bandwidth_bytes_per_s"] = prof.chip.hbm_bandwidth_bytes_per_s
    numbers |= {f"network.{lv.name}.link_bandwidth_bytes_per_s": lv.link_bandwidth_bytes_per_s
                for lv in prof.network}
    for field, s in numbers.items():
        assert "assumed" not in s.source.lower(), f"{stem}: {field} cites an assumption"
    if prof.price_per_chip_hour_usd is not None:
        assert "$" in prof.price_per_chip_hour_usd.source
        assert "assumed" not in prof.price_per_chip_hour_usd.source.lower()


# Slice sources that still flag their wraparound rule as UNVERIFIED (none is a price). Checking one
# against a document must drop it here too (the test below fails otherwise), so the set only shrinks.
OPEN_UNVERIFIED_SLICES = {
    "tpu-v4": {(4, 4, 12)},
    "tpu-v7": {(4, 4, 4), (4, 4, 8), (4, 8, 8), (8, 8, 8), (8, 8, 16), (8, 16, 16), (16, 16, 16),
               (16, 16, 24), (16, 24, 24)},
}


@pytest.mark.parametrize("stem", STEMS)
def test_no_source_is_unverified_or_recalled(stem):
    """Every number has a real source: none is a recalled figure, none is marked UNVERIFIED (but
    the open slice caveats listed above)."""
    assert "recalled" not in (PROFILE_DIR / f"{stem}.yaml").read_text().lower()
    open_slices = OPEN_UNVERIFIED_SLICES.get(stem, set())
    flagged = set()
    for path, obj in _sourced_items(load_profile(stem)):
        text = obj.source.lower()
        assert "recalled" not in text, f"{stem}: {path} cites a recalled number: {obj.source!r}"
        if "unverified" in text:
            shape = tuple(obj.shape) if isinstance(obj, SliceShape) else None
            assert shape in open_slices, f"{stem}: {path} is UNVERIFIED: {obj.source!r}"
            flagged.add(shape)
    assert flagged == open_slices, \
        f"{stem}: {sorted(open_slices - flagged)} no longer UNVERIFIED: drop from OPEN_UNVERIFIED_SLICES"


_URL = re.compile(r"https?://\S+")
_DOCUMENT = re.compile(r"\b[\w./-]+\.(?:pdf|csv|json|js|html?|ya?ml)\b")
_DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b|\b(?:January|February|March|April|May|June|July|"
                   r"August|September|October|November|December) 20\d\d\b")


def _price_source_problems(value: float, source: str) -> list[str]:
    """What a list-price source lacks: a URL or document name, a date, the kind of price
    (on-demand list), the value itself; or what it must not say (recalled, unverified, assumed)."""
    problems = []
    if not (_URL.search(source) or _DOCUMENT.search(source)):
        problems.append("no URL or document name")
    if not _DATE.search(source):
        problems.append("no date")
    if "on-demand" not in source.lower():
        problems.append("not marked as an on-demand list price")
    if f"${value:g}" not in source:
        problems.append(f"does not state ${value:g}")
    problems += [f"says {word!r}" for word in ("unverified", "recalled", "assumed")
                 if word in source.lower()]
    return problems


@pytest.mark.parametrize("stem", STEMS)
def test_price_cites_a_url_or_document_and_a_date(stem):
    price = load_profile(stem).price_per_chip_hour_usd
    if price is not None:
        assert _price_source_problems(price.value, price.source) == [], (stem, price.source)


def test_price_source_check_rejects_recalled_and_unsourced_prices():
    recalled = ("AWS p5.48xlarge (8x H100) on-demand us-east-1 after the June 2025 price cut: "
                "$55.04/h / 8 GPUs (UNVERIFIED: recalled list price, not re-read)")
    assert set(_price_source_problems(6.88, recalled)) >= {
        "no URL or document name", "does not state $6.88", "says 'unverified'", "says 'recalled'"}
    assert "no date" in _price_source_problems(6.88, "AWS on-demand list price $6.88, aws.amazon.com.html")
    ok = ("AWS EC2 on-demand list price, us-east-1: $55.04/h / 8 = $6.88 per GPU-hour "
          "(data/p5_instances.js, 'Last updated: 2026-01-21')")
    assert _price_source_problems(6.88, ok) == []
    assert _price_source_problems(6.9, ok) == ["does not state $6.9"]


@pytest.mark.parametrize("alias,name", [
    ("TPU v5p", "tpu-v5p"), ("h100-sxm-80gb", "h100-sxm"), ("H100", "h100-sxm"),
    ("A100", "a100-sxm-80gb"), ("A100-SXM-80GB", "a100-sxm-80gb"), ("a100 80gb", "a100-sxm-80gb"),
    ("H200", "h200"), ("H200-SXM", "h200"), ("B200", "b200"), ("DGX-B200", "b200"),
    ("GB200", "gb200-nvl72"), ("gb200 nvl72", "gb200-nvl72"), ("MI300X", "mi300x"),
    ("TPU v4", "tpu-v4"), ("TPUv4", "tpu-v4"), ("v4", "tpu-v4"),
    ("TPU v5e", "tpu-v5e"), ("TPU v5 lite", "tpu-v5e"), ("v5litepod", "tpu-v5e"),
    ("tpu_v5p", "tpu-v5p"), ("TPU v6e", "tpu-v6e"), ("Trillium", "tpu-v6e"),
])
def test_aliases_resolve(alias, name):
    assert load_profile(alias).name == name


def test_every_declared_alias_resolves_to_its_profile():
    for prof in list_profiles():
        for alias in prof.aliases:
            assert load_profile(alias).name == prof.name, f"{alias!r} of {prof.name}"


def test_no_two_profiles_share_an_alias():
    owner: dict[str, str] = {}
    for prof in list_profiles():
        for alias in {_norm(a) for a in [prof.name, *prof.aliases]}:
            assert alias not in owner, f"{alias!r} claimed by {owner.get(alias)} and {prof.name}"
            owner[alias] = prof.name


def test_unknown_name_lists_known_profiles():
    with pytest.raises(MeshcastError) as e:
        load_profile("tpu-v9")
    msg = str(e.value)
    assert "tpu-v9" in msg
    for stem in REQUIRED:
        assert stem in msg


# --- corrupt files -----------------------------------------------------------------------------

def _write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_negative_bandwidth_names_the_field(tmp_path):
    text = _h100_text()
    assert "value: 50.0e9" in text
    p = _write(tmp_path, text.replace("value: 50.0e9", "value: -50.0e9"))
    with pytest.raises(MeshcastError) as e:
        load_profile(p)
    msg = str(e.value)
    assert "network.1.link_bandwidth_bytes_per_s.value" in msg
    assert "greater than 0" in msg


def test_unknown_key_names_the_field(tmp_path):
    text = _h100_text().replace("  vendor: nvidia\n", "  vendor: nvidia\n  tdp_watts: 700\n")
    with pytest.raises(MeshcastError) as e:
        load_profile(_write(tmp_path, text))
    assert "chip.tdp_watts" in str(e.value)


def test_broken_yaml_is_a_meshcast_error(tmp_path):
    p = _write(tmp_path, _h100_text() + "\nnetwork: [unclosed\n")
    with pytest.raises(MeshcastError) as e:
        load_profile(p)
    assert "not valid YAML" in str(e.value) and "bad.yaml" in str(e.value)


def test_missing_bf16_peak_is_rejected(tmp_path):
    lines = [ln for ln in _h100_text().splitlines() if not ln.strip().startswith("bf16:")]
    with pytest.raises(MeshcastError) as e:
        load_profile(_write(tmp_path, "\n".join(lines) + "\n"))
    assert "peak_flops_per_s must include bf16" in str(e.value)


def test_slice_larger_than_its_torus_level_is_rejected(tmp_path):
    text = (PROFILE_DIR / "tpu-v5e.yaml").read_text()
    assert "shape: [16, 16]" in text
    p = _write(tmp_path, text.replace("shape: [16, 16]", "shape: [16, 32]"))
    with pytest.raises(MeshcastError) as e:
        load_profile(p)
    assert "ici_y" in str(e.value) and "exceeds its size 16" in str(e.value)


def test_missing_file_is_a_meshcast_error(tmp_path):
    with pytest.raises(MeshcastError):
        load_profile(tmp_path / "nope.yaml")


# --- physical sanity ---------------------------------------------------------------------------

@pytest.mark.parametrize("stem", STEMS)
def test_chip_numbers_are_physically_plausible(stem):
    prof = load_profile(stem)
    peaks = {d: s.value for d, s in prof.chip.peak_flops_per_s.items()}
    assert 1e13 <= peaks["bf16"] <= 1e17
    if "fp8" in peaks:
        assert peaks["fp8"] >= peaks["bf16"]
    if "fp4" in peaks:
        assert peaks["fp4"] >= peaks.get("fp8", peaks["bf16"])
    if "fp16" in peaks:
        assert peaks["fp16"] == pytest.approx(peaks["bf16"])
    if "tf32" in peaks:
        assert peaks["tf32"] <= peaks["bf16"]
    if "fp32" in peaks:
        assert peaks["fp32"] <= peaks.get("tf32", peaks["bf16"])
    assert 1e11 <= prof.chip.hbm_bandwidth_bytes_per_s.value <= 1e14
    assert 8e9 <= prof.chip.hbm_capacity_bytes.value <= 1e12
    assert 1e-7 <= prof.chip.launch_overhead_s.value <= 1e-4
    # dtype fallback: fp8/fp4 never slower than bf16
    assert prof.peak_flops("fp8") >= prof.peak_flops("bf16")
    assert prof.peak_flops("fp4") >= prof.peak_flops("fp8")


@pytest.mark.parametrize("stem", STEMS)
def test_network_is_plausible_and_slows_outward(stem):
    prof = load_profile(stem)
    for lv in prof.network:
        assert 1e9 <= lv.link_bandwidth_bytes_per_s.value <= 5e12, lv.name
        assert 1e-7 <= lv.latency_s.value <= 1e-3, lv.name
        assert 0.5 <= lv.efficiency.value <= 1.0, lv.name
    inner, outer = prof.network[0], prof.network[-1]
    assert outer.kind == "fat_tree"
    assert inner.link_bandwidth_bytes_per_s.value > outer.link_bandwidth_bytes_per_s.value
    assert inner.latency_s.value < outer.latency_s.value
    for curve in (prof.efficiency.matmul, prof.efficiency.attention, prof.efficiency.memory):
        assert 0.3 <= curve.max_efficiency <= 0.95


@pytest.mark.parametrize("stem", sorted(set(STEMS) - TPUS))
def test_gpu_profiles_have_a_switch_domain_and_no_slices(stem):
    prof = load_profile(stem)
    assert prof.slices == []
    assert prof.network[0].kind == "switch"
    assert prof.network[0].size in (4, 8, 72)  # quad-GH200 nodes, HGX/OAM servers, NVL72 racks
    assert all(lv.kind != "torus" for lv in prof.network)


@pytest.mark.parametrize("stem", sorted(TPUS))
def test_tpu_torus_levels_and_slices(stem):
    prof = load_profile(stem)
    torus = [lv for lv in prof.network if lv.kind == "torus"]
    dims = 3 if stem in TPUS_3D else 2
    assert [lv.name for lv in torus] == ["ici_x", "ici_y", "ici_z"][:dims]
    assert [lv.name for lv in prof.network] == [lv.name for lv in torus] + ["dcn"]
    assert prof.network[-1].kind == "fat_tree"
    assert len({lv.link_bandwidth_bytes_per_s.value for lv in torus}) == 1  # same link on every axis
    shapes = [tuple(s.shape) for s in prof.slices]
    assert len(shapes) == len(set(shapes)), "duplicate slice shape"
    for s in prof.slices:
        assert isinstance(s, SliceShape)
        assert len(s.shape) == len(s.wraparound) == dims
        assert s.chips == math.prod(s.shape)
        for d, lv in zip(s.shape, torus):
            assert 1 <= d <= lv.size, f"{s.shape} exceeds {lv.name} size {lv.size}"
        assert s.source.strip()
    assert max(s.chips for s in prof.slices) == MAX_SLICE_CHIPS[stem]
    assert min(s.chips for s in prof.slices) <= 4
    # pod extents: v4 16^3, v5p 16x20x28 (8960 chips), v5e/v6e 16x16, TPU7x 9216 chips
    pod = math.prod(lv.size for lv in torus)
    assert pod == {"tpu-v4": 4096, "tpu-v5p": 8960, "tpu-v5e": 256, "tpu-v6e": 256,
                   "tpu-v7": 9216}[stem]


@pytest.mark.parametrize("stem", sorted(TPUS))
def test_tpu_wraparound_rules(stem):
    """v4/v5p/TPU7x: whole 4x4x4 cubes (every axis a multiple of 4) wrap on every axis, smaller
    slices not at all. v5e/v6e: an axis wraps only when it spans the full 16 chips."""
    prof = load_profile(stem)
    for s in prof.slices:
        if stem in TPUS_3D:
            cube = all(d % 4 == 0 for d in s.shape)
            assert s.wraparound == [cube] * len(s.shape), s.shape
        else:
            assert s.wraparound == [d == 16 for d in s.shape], s.shape


def test_tpu_slices_drive_job_levels():
    v5p = job_levels(load_profile("tpu-v5p"), 64)
    assert [(lv.name, lv.size, lv.wraparound) for lv in v5p[:3]] == [
        ("ici_x", 4, True), ("ici_y", 4, True), ("ici_z", 4, True)]
    small = job_levels(load_profile("tpu-v5p"), 16)
    assert [(lv.size, lv.wraparound) for lv in small[:3]] == [(2, False), (2, False), (4, False)]
    v5e = job_levels(load_profile("TPU v5e"), 128)
    assert [(lv.size, lv.wraparound) for lv in v5e[:2]] == [(8, False), (16, True)]
    multi = job_levels(load_profile("tpu-v6e"), 1024)
    assert multi[-1].name == "dcn" and multi[-1].size == 4  # four 16x16 pods over DCN


def test_gpu_nvlink_domains_fill_first():
    gb = job_levels(load_profile("gb200-nvl72"), 144)
    assert [(lv.name, lv.size) for lv in gb] == [("nvlink", 72), ("ib", 2)]
    mi = job_levels(load_profile("mi300x"), 32)
    assert [(lv.name, lv.size) for lv in mi] == [("xgmi", 8), ("net", 4)]
