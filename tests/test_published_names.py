"""Loose hardware names as published tables write them, the new sourced profiles (B300, GB300,
TPU7x, MI355X, MI325X), their lineage, and devices per chip."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware_profiles import (
    PROFILE_DIR,
    list_profiles,
    load_profile,
    matched_how,
    profile_dirs,
)
from meshcast.errors import MeshcastError
from simulator.published.names import hardware_note, profile_for
from simulator.published.rows import PublishedRow

NEW = {
    "b300": ("nvidia", "nvidia-blackwell", "b300"),
    "gb300-nvl72": ("nvidia", "nvidia-blackwell", "gb300"),
    "tpu-v7": ("google", "google-tpu", "tpu-v7"),
    "mi355x": ("amd", "amd-cdna4", "mi355x"),
    "mi325x": ("amd", "amd-cdna3", "mi325x"),
}
DROP = "alias after dropping '(...)' and the vendor"


@pytest.mark.parametrize("stem", sorted(NEW))
def test_new_profiles_load_with_their_lineage(stem):
    prof = load_profile(stem)
    assert prof.name == stem
    assert prof.lineage is not None
    assert (prof.lineage.vendor, prof.lineage.architecture, prof.lineage.chip) == NEW[stem]
    assert "fp8" in prof.chip.peak_flops_per_s
    assert prof.peak_flops("fp8") == pytest.approx(2 * prof.peak_flops("bf16"), rel=0.01)


@pytest.mark.parametrize("stem", ["b300", "gb300-nvl72", "mi355x"])
def test_fp4_chips_list_a_dense_fp4_peak(stem):
    peaks = load_profile(stem).chip.peak_flops_per_s
    assert "fp4" in peaks and peaks["fp4"].value > peaks["fp8"].value
    assert "dense" in peaks["fp4"].source


def test_every_builtin_profile_has_a_lineage():
    for prof in list_profiles():
        assert prof.lineage is not None, prof.name
        assert prof.lineage.vendor == prof.chip.vendor, prof.name


def test_devices_per_chip():
    assert load_profile("tpu-v7").chip.devices_per_chip == 2
    for stem in ("tpu-v4", "tpu-v5p", "tpu-v6e", "h100-sxm", "mi300x"):
        assert load_profile(stem).chip.devices_per_chip == 1, stem
    assert "devices_per_chip: 2" in (PROFILE_DIR / "tpu-v7.yaml").read_text()


@pytest.mark.parametrize("name,stem,how", [
    ("B300", "b300", "exact alias"),
    ("HGX B300", "b300", "exact alias"),
    ("DGX B300", "b300", "exact alias"),
    ("GB300", "gb300-nvl72", "exact alias"),
    ("GB300 NVL72", "gb300-nvl72", "exact alias"),
    ("TPU v7", "tpu-v7", "exact alias"),
    ("TPU7x", "tpu-v7", "exact alias"),
    ("Ironwood", "tpu-v7", "exact alias"),
    ("MI355X", "mi355x", "exact alias"),
    ("MI325X", "mi325x", "exact alias"),
    ("tpu-v6e", "tpu-v6e", "exact alias"),
    ("H100-SXM-80GB (700W, HBM3)", "h100-sxm", DROP),
    ("TPU v6e (Trillium)", "tpu-v6e", DROP),
    ("B200 (1000W)", "b200", DROP),
    ("GB200 NVL72 (rack)", "gb200-nvl72", DROP),
    ("TPU v7 (Ironwood)", "tpu-v7", DROP),
    ("NVIDIA H100", "h100-sxm", DROP),
    ("Google Cloud TPU v5p", "tpu-v5p", DROP),
    ("AMD Instinct MI300X", "mi300x", DROP),
    ("MI300X OAM", "mi300x", "prefix alias 'mi300x'"),
    ("tpu7x-8", "tpu-v7", "prefix alias 'tpu7x'"),
    ("GB300 NVL72 rack (1400 W)", "gb300-nvl72", "prefix alias 'gb300nvl72'"),
    ("MI355X OAM 1400W", "mi355x", "prefix alias 'mi355x'"),
])
def test_loose_names_match_and_say_how(name, stem, how):
    assert matched_how(name) == (stem, how)
    assert load_profile(name).name == stem


def test_prefix_match_takes_the_longest_alias():
    # "gb200nvl72..." starts with both "gb200" and "gb200nvl72": the longer one is reported
    assert matched_how("GB200-NVL72-x") == ("gb200-nvl72", "prefix alias 'gb200nvl72'")


@pytest.mark.parametrize("name", ["v4 pod", "v5e chips", "tpu-v9", "TPU v9x", "(rack)"])
def test_short_aliases_and_unknown_names_are_not_guessed(name):
    """Aliases under 4 characters ("v4", "v5e") are matched exactly only; a name left empty by
    dropping its parentheses matches nothing."""
    with pytest.raises(MeshcastError) as e:
        load_profile(name)
    msg = str(e.value)
    assert "unknown profile" in msg and "h100-sxm" in msg and "tpu-v7" in msg


def test_path_reports_path():
    assert matched_how(str(PROFILE_DIR / "b300.yaml")) == ("b300", "path")


def _clone(dirpath: Path, stem: str, alias: str) -> None:
    text = (PROFILE_DIR / "h100-sxm.yaml").read_text()
    lines = []
    for ln in text.splitlines():
        if ln.startswith("name:"):
            ln = f"name: {stem}"
        elif ln.startswith("aliases:"):
            ln = f'aliases: ["{alias}"]'
        lines.append(ln)
    (dirpath / f"{stem}.yaml").write_text("\n".join(lines) + "\n")


def test_ambiguous_names_are_an_error_naming_both(tmp_path):
    _clone(tmp_path, "zeta-one", "ZETA-9000")
    _clone(tmp_path, "zeta-two", "ZETA-9000")
    with profile_dirs(tmp_path):
        for name in ("ZETA-9000", "zeta 9000 (liquid)", "ZETA9000 OAM"):
            with pytest.raises(MeshcastError) as e:
                load_profile(name)
            msg = str(e.value)
            assert "ambiguous" in msg and "zeta-one" in msg and "zeta-two" in msg, msg
        # an unambiguous name still resolves, and the built-ins are still there
        assert load_profile("zeta-one").name == "zeta-one"
        assert load_profile("H100").name == "h100-sxm"


def test_a_profile_dir_shadows_a_builtin_alias(tmp_path):
    """A directory given to profile_dirs wins an alias it shares with a built-in (no ambiguity),
    for exact and loose matches alike."""
    _clone(tmp_path, "h100-mine", "H100")
    with profile_dirs(tmp_path):
        assert matched_how("H100") == ("h100-mine", "exact alias")
        assert matched_how("H100 (700W)") == ("h100-mine", DROP)
    assert matched_how("H100") == ("h100-sxm", "exact alias")


def _row(hardware: str) -> PublishedRow:
    return PublishedRow(7, {"source_id": "t", "hardware": hardware})


def test_hardware_note_only_for_loose_matches():
    loose = _row("TPU v6e (Trillium)")
    prof = profile_for(loose)
    assert prof.name == "tpu-v6e"
    assert hardware_note(loose, prof) == (
        "hardware 'TPU v6e (Trillium)' matched profile tpu-v6e (alias after dropping '(...)' and the vendor)")
    assert hardware_note(_row("MI300X OAM"), load_profile("mi300x")) == (
        "hardware 'MI300X OAM' matched profile mi300x (prefix alias 'mi300x')")
    exact = _row("TPU v6e")
    assert hardware_note(exact, profile_for(exact)) is None
    assert hardware_note(_row(""), prof) is None


def test_new_profiles_place_jobs_like_their_siblings():
    from simulator.cost.topology import job_levels

    v7 = job_levels(load_profile("TPU7x"), 64)
    assert [(lv.name, lv.size, lv.wraparound) for lv in v7[:3]] == [
        ("ici_x", 4, True), ("ici_y", 4, True), ("ici_z", 4, True)]
    pod = job_levels(load_profile("tpu-v7"), 2 * 9216)
    assert pod[-1].name == "dcn" and pod[-1].size == 2  # two whole pods over DCN
    gb = job_levels(load_profile("GB300 NVL72"), 144)
    assert [(lv.name, lv.size) for lv in gb] == [("nvlink", 72), ("ib", 2)]
    for stem in ("b300", "mi355x", "mi325x"):
        assert [lv.size for lv in job_levels(load_profile(stem), 32)] == [8, 4], stem


def test_a_profile_written_into_a_profile_dir_after_a_lookup_resolves(tmp_path):
    """The alias table is built once per set of files, not once per directory: a profile that
    `meshcast fit --out DIR` writes after a first lookup (or a file edited since) still counts."""
    _clone(tmp_path, "zeta-one", "ZETA-9000")
    with profile_dirs(tmp_path):
        assert matched_how("ZETA-9000") == ("zeta-one", "exact alias")
        _clone(tmp_path, "zeta-two", "ZETA-7000")
        assert matched_how("ZETA-7000 (liquid)") == ("zeta-two", DROP)
        with pytest.raises(MeshcastError, match="unknown profile"):
            load_profile("ZETA-5000")


# --- the export and superchip variants: H800, A800 (NVLink cut), GH200 (quad nodes) -------------
@pytest.mark.parametrize("name,stem", [
    ("NVIDIA H800", "h800"), ("H800-SXM5-80GB", "h800"), ("H800 (80GB HBM3)", "h800"),
    ("A800-SXM4-80GB", "a800"), ("NVIDIA A800 80GB", "a800"),
    ("NVIDIA GH200 Grace Hopper Superchip", "gh200"), ("GH200 (96GB)", "gh200"),
])
def test_variant_names_resolve(name, stem):
    assert load_profile(name).name == stem


@pytest.mark.parametrize("variant,base,arch", [("h800", "h100-sxm", "nvidia-hopper"),
                                               ("a800", "a100-sxm-80gb", "nvidia-ampere")])
def test_export_variants_keep_the_compute_and_halve_nvlink(variant, base, arch):
    """Same die, peaks and HBM as the chip they derive from; NVLink 400 GB/s bidirectional."""
    v, b = load_profile(variant), load_profile(base)
    assert v.lineage.architecture == b.lineage.architecture == arch
    assert v.peak_flops("bf16") == b.peak_flops("bf16")
    assert v.chip.hbm_bandwidth_bytes_per_s.value == b.chip.hbm_bandwidth_bytes_per_s.value
    assert v.network[0].link_bandwidth_bytes_per_s.value == 200e9
    assert v.network[0].link_bandwidth_bytes_per_s.value < b.network[0].link_bandwidth_bytes_per_s.value


def test_gh200_is_a_quad_node_hopper_whose_hosts_hold_four():
    from simulator.cost.goodput import failure_model
    from simulator.predict import predict

    gh = load_profile("gh200")
    assert gh.lineage.architecture == "nvidia-hopper" and gh.network[0].size == 4
    assert failure_model(gh).devices_per_host.value == 4
    assert failure_model(load_profile("h100-sxm")).devices_per_host.value == 8
    pred = predict(model="llama3-8b", hardware="gh200", chips=16, global_batch=16, seq_len=1024,
                   mesh={"data": -1, "model": 4})
    assert pred.job.topology.placement["model"][0].level.name == "nvlink"
    assert pred.step_time_s > 0 and pred.memory.fits
