"""Each published source read by its own rules (simulator/published/sources.py), checked against
the source's documented semantics."""

from __future__ import annotations

import pytest

from simulator.published.jobs import Case, Skip, row_to_case
from simulator.published.rows import PublishedRow
from simulator.published.sources import GENERIC, RULES, SWITCHES, rules_for
from tests.published_helpers import all_rows, row_at


def _with(line: int, **cells) -> PublishedRow:
    r = row_at(line)
    return PublishedRow(r.line, {**r.raw, **cells})


def _case(row: PublishedRow, profiles=None) -> Case:
    c = row_to_case(row, profiles)
    assert isinstance(c, Case), c
    return c


def test_every_rule_cites_each_setting():
    for r in (*RULES, GENERIC):
        for f in ("flops", "mesh", "recompute", *SWITCHES):
            assert len(r.cites.get(f, "")) > 10, (r.name, f)
        assert r.mesh in ("megatron", "maxtext", "axlearn")
        assert r.recompute in ("none", "selective", "full")


@pytest.mark.parametrize("source_id, name", [
    ("megatron_bridge_perf_summary", "megatron_core_recipes"),
    ("nemo_2407_perf_summary", "nemo_2407_recipes"),
    ("megatron_lm_readme_h100", "megatron_lm_readme"),
    ("megatron_narayanan2021_table1", "megatron_narayanan2021"),
    ("megatron_korthikanti2022_table4", "megatron_korthikanti2022"),
    ("maxtext_tpu_configs", "maxtext"),
    ("axlearn_du2024", "axlearn"),
    ("deepspeed_zero3_paper", None),
    ("megatron_lm_readme_a100", None),  # another table of another era: no silent default
])
def test_rules_for_each_source_family(source_id, name):
    r = rules_for(source_id)
    assert (r.name if r else None) == name


def test_every_source_in_the_file_has_rules():
    assert all(rules_for(r.text("source_id")) for r in all_rows())


def test_unknown_source_is_read_by_the_named_generic_default():
    c = _case(_with(138, source_id="deepspeed_zero3_paper"))
    assert "source 'deepspeed_zero3_paper' has no rules in meshcast" in c.notes[0]
    assert "generic default" in c.notes[0] and "simulator/published/sources.py" in c.notes[0]
    s = c.job.sharding
    assert (s.flash_attention, s.distributed_optimizer, s.tp_comm_overlap) == (True, True, False)
    assert c.measured.how in ("step_time_s", "tokens_per_s")
    # with only TFLOP/s or MFU published there is no FLOP formula to read them by: skipped
    skip = row_to_case(_with(138, source_id="deepspeed_zero3_paper", step_time_s="",
                             tokens_per_s_per_accel="", tflops_per_accel="400"))
    assert isinstance(skip, Skip) and "no FLOP formula" in skip.reason


def test_row_without_a_published_layout_is_skipped():
    s = row_to_case(_with(128, tp="", pp="", dp="", cp="", fsdp_zero=""))
    assert isinstance(s, Skip) and "parallel layout not published" in s.reason
    # a MaxText row whose layout is its fsdp description alone still maps
    c = _case(_with(8, dp="", tp=""))
    assert c.job.mesh["fsdp"] == 256


def test_megatron_bridge_rows_keep_overlap_and_distributed_optimizer():
    for line in (45, 39, 77):  # Qwen3-235B FP8 H100, DeepSeek-V3 B200, Llama3-8B B200
        sh = _case(row_at(line)).job.sharding
        assert sh.tp_comm_overlap and sh.ep_comm_overlap and sh.distributed_optimizer
        assert sh.flash_attention and sh.fused_loss


def test_only_megatron_bridge_rows_fuse_the_loss():
    """Bridge presets run Transformer Engine's in-place loss on the bf16 logits
    (cross_entropy_fusion_impl 'te'); NeMo 24.07's Megatron-Core predates it, and Megatron-LM,
    MaxText and AXLearn compute the loss on fp32 logits. NeMo 24.07 otherwise keeps the
    Megatron-Core recipe settings."""
    for r in all_rows():
        c = row_to_case(r)
        if isinstance(c, Case):
            sid = r.text("source_id")
            assert c.job.sharding.fused_loss == sid.startswith("megatron_bridge"), c.id
    bridge, nemo = rules_for("megatron_bridge_perf_summary"), rules_for("nemo_2407_perf_summary")
    assert {**bridge.switches(), "fused_loss": False} == nemo.switches()
    assert (bridge.flops, bridge.mesh, bridge.recompute, bridge.grad_dtype) == \
        (nemo.flops, nemo.mesh, nemo.recompute, nemo.grad_dtype)


@pytest.mark.parametrize("line", range(107, 117))
def test_narayanan_rows_run_2021_megatron(line):
    """Narayanan et al. 2021: no TP comm overlap, no distributed optimizer, the scores
    materialised (no flash attention), full recompute as eq. (3) counts it."""
    c = _case(row_at(line))
    sh = c.job.sharding
    assert not (sh.tp_comm_overlap or sh.ep_comm_overlap or sh.distributed_optimizer)
    assert not sh.flash_attention and sh.remat == "full"
    assert c.measured.how == "tflops:narayanan_eq3"


def test_korthikanti_rows_default_to_selective_recompute():
    row = _with(112, source_id="megatron_korthikanti2022_table", recompute="")
    c = _case(row)
    sh = c.job.sharding
    assert sh.remat == "selective" and not sh.flash_attention and not sh.distributed_optimizer
    assert "recompute: megatron_korthikanti2022_table default selective" in c.notes
    # its TFLOP/s use the 72-form model FLOPs (Megatron-Core's formula for GPT)
    assert c.measured.how == "tflops:megatron"


@pytest.mark.parametrize("line, source, default", [
    (45, "megatron_bridge_perf_summary", "none"),
    (128, "nemo_2407_perf_summary", "none"),
    (126, "megatron_lm_readme_h100", "none"),
])
def test_unstated_recompute_takes_the_source_default(line, source, default):
    c = _case(row_at(line))
    assert c.job.sharding.remat == default
    assert f"recompute: {source} default {default}" in c.notes


def test_unstated_recompute_on_maxtext_is_base_yml_full():
    c = _case(_with(8, recompute="not stated"))
    assert c.job.sharding.remat == "full"
    assert "recompute: maxtext_tpu_configs default full" in c.notes
    stated = _case(row_at(8))
    assert stated.job.sharding.remat == "full" and not any("recompute:" in n for n in stated.notes)


@pytest.mark.parametrize("line", range(8, 26))
def test_maxtext_v5e_global_batch_is_per_device_times_devices(line):
    """MaxText: global batch = per_device_batch_size x JAX devices (one per v5e chip); FSDP-only
    meshes hold per_device sequences per chip, in one micro-step."""
    row = row_at(line)
    c = _case(row)
    j = c.job
    per_device, n = row.int("micro_batch"), row.int("n_accel")
    assert row.int("global_batch_seqs") == per_device * n
    assert j.global_batch == per_device * n
    assert j.sharding.micro_batch == per_device and j.microbatches == 1


@pytest.mark.parametrize("line", range(26, 32))
def test_maxtext_tensor_parallel_group_holds_per_device_times_model(line):
    """128B on v5e: ici_tensor 16, per_device_batch_size 1: each 16-chip TP group (one meshcast
    data-parallel replica) holds 16 sequences per micro-step."""
    c = _case(row_at(line))
    j = c.job
    assert j.mesh["model"] == 16
    assert j.sharding.micro_batch == 16 and j.microbatches == 1
    assert j.global_batch == j.chips


def test_maxtext_two_devices_per_chip():
    """On a chip exposing two JAX devices (TensorCores) the global batch counts both."""
    row = row_at(27)  # 512 v5e chips, TP 16, per_device 1
    prof = _case(row).job.hardware
    two = prof.model_copy(update={"chip": prof.chip.model_copy(update={"devices_per_chip": 2})})
    doubled = _with(27, global_batch_seqs="1024")
    c = _case(doubled, {prof.name: two})
    assert c.job.sharding.micro_batch == 32 and c.job.microbatches == 1
    # the published global batch of one device per chip now reads as inconsistent
    s = row_to_case(row, {prof.name: two})
    assert isinstance(s, Skip) and "per_device_batch_size" in s.reason


def test_maxtext_gradient_accumulation_and_bad_batches():
    c = _case(_with(8, global_batch_seqs=str(2 * 1536)))  # 6 x 256 x 2 accumulation steps
    assert c.job.sharding.micro_batch == 6 and c.job.microbatches == 2
    s = row_to_case(_with(8, global_batch_seqs="1000"))
    assert isinstance(s, Skip) and "global_batch_seqs" in s.reason


def test_maxtext_fractional_per_device_batch():
    """per_device_batch_size below 1 (MaxText allows it): 0.5 x 256 chips = 128 sequences, a
    16-way TP group holds 8."""
    c = _case(_with(26, micro_batch="0.5", global_batch_seqs="128"))
    assert c.job.sharding.micro_batch == 8 and c.job.global_batch == 128


def _axlearn(line: int = 27, **cells) -> PublishedRow:
    base = dict(source_id="axlearn_du2024", tp="4", dp="2", pp="", cp="", ep="",
                fsdp_zero="fsdp 64", micro_batch="", global_batch_seqs="512",
                recompute="", step_time_s="10", tflops_per_accel="", mfu_pct="", vpp="",
                grad_accum="")
    return _with(line, **{**base, **cells})


def test_axlearn_mesh_as_published_with_full_remat():
    """512 v5e chips (two v5e-256 slices): model 4, fsdp 64 within a slice, data 2 over DCN."""
    c = _case(_axlearn())
    j = c.job
    assert (j.mesh["model"], j.mesh["fsdp"], j.mesh["data"]) == (4, 64, 2)
    assert j.sharding.remat == "full" and "recompute: axlearn_du2024 default full" in c.notes
    assert j.sharding.bindings == {"data": ["dcn"]} and j.sharding.slice_shape == [16, 16]
    assert j.sharding.micro_batch == 4 and j.microbatches == 1  # 512 / (2 x 64)
    assert j.sharding.flash_attention and j.sharding.tp_comm_overlap
    assert not j.sharding.distributed_optimizer
    # one slice holds the job: data stays on ICI
    one = _case(_axlearn(26, fsdp_zero="fsdp 32")).job.sharding
    assert one.bindings == {} and one.slice_shape == [16, 16]
    # the rest of the chips go to fsdp when the cell names none; a stated policy is kept
    c = _case(_axlearn(fsdp_zero="", recompute="selective"))
    assert c.job.mesh["fsdp"] == 64 and c.job.sharding.remat == "selective"
    bad = row_to_case(_axlearn(fsdp_zero="fsdp 16"))
    assert isinstance(bad, Skip) and "n_accel" in bad.reason
    # AXLearn publishes no FLOP formula: a TFLOP/s-only row is skipped
    s = row_to_case(_axlearn(step_time_s="", tflops_per_accel="100"))
    assert isinstance(s, Skip) and "no FLOP formula" in s.reason


def test_a_loosely_matched_hardware_name_is_noted():
    c = _case(_with(8, hardware="TPU v5e (v5litepod-256)"))
    assert any("matched profile tpu-v5e" in n for n in c.notes), c.notes
    assert not any("matched profile" in n for n in _case(row_at(8)).notes)
