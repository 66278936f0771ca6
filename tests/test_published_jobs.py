"""One row of each source mapped to a job by hand (Megatron conventions: EP carved out of DP;
MaxText: DCN data parallel over slices, FSDP within), and unmappable rows reported."""

from __future__ import annotations

import pytest

from simulator.published.jobs import Case, Skip, row_to_case
from simulator.published.rows import PublishedRow
from tests.published_helpers import row_at

MESH0 = {"data": 1, "fsdp": 1, "expert": 1, "model": 1, "pipeline": 1, "seq": 1}


def _case(line: int) -> Case:
    c = row_to_case(row_at(line))
    assert isinstance(c, Case), c
    return c


def test_maxtext_v5e_128b_two_slices():
    """Line 27: MaxText 128B on 512 v5e = 2 slices of 256: ici fsdp 16 x tp 16 per slice, DCN
    data 2; per_device_batch_size 1 (global 512 = 1 x 512 devices), so a tensor-parallel group
    of 16 chips holds 16 sequences per micro-step and the step is one micro-step; remat
    qkv_proj_offloaded -> full; 110 TFLOP/s with MaxText's formula; XLA's async collectives (the
    script's LIBTPU_INIT_ARGS) run the TP collectives beside the matmuls."""
    c = _case(27)
    j = c.job
    assert j.chips == 512 and j.mesh == {**MESH0, "data": 2, "fsdp": 16, "model": 16}
    assert j.sharding.slice_shape == [16, 16] and j.sharding.bindings == {"data": ["dcn"]}
    assert (j.sharding.micro_batch, j.global_batch, j.seq_len) == (16, 512, 2048)
    assert j.microbatches == 1
    assert (j.sharding.remat, j.sharding.precision) == ("full", "bf16")
    assert not j.sharding.distributed_optimizer and j.sharding.tp_comm_overlap
    m = j.model
    assert (m.n_layers, m.d_model, m.n_heads, m.hd, m.ffn_hidden, m.ffn_kind, m.vocab_size) == (
        64, 8192, 128, 128, 57344, "swiglu", 32000)
    # per device: b=1, s=2048; 6N + 6 L s N Hd per token
    n = 64 * (3 * 8192 * 57344 + 8192 * 384 * 128 + 8192 * 128 * 128) + 8192 * 32000
    flops = (6 * n + 6 * 64 * 2048 * 128 * 128) * 2048
    assert c.measured.how == "tflops:maxtext"
    assert c.measured.step_time_s == pytest.approx(flops / 110e12, rel=1e-9)


def test_megatron_bridge_qwen3_235b_h100():
    """Line 45: Qwen3-235B-A22B, 256 H100, TP2 PP8 DP16 EP32 VPP4, FP8, 8192 x 4096 tokens at
    1712 tokens/s/GPU. EP 32 > DP 16: EP spans TP -> expert=16 x model=2 (same expert weights
    per GPU); 94 layers over 8 x 4 chunks -> the busiest stage's 3 layers per chunk, 96."""
    c = _case(45)
    j = c.job
    assert j.mesh == {**MESH0, "model": 2, "pipeline": 8, "expert": 16}
    assert (j.sharding.pipeline_schedule, j.sharding.virtual_stages) == ("interleaved", 4)
    assert j.model.n_layers == 96 and any("94 layers" in n for n in c.notes)
    assert any("EP=32 spans TP" in n for n in c.notes)
    assert (j.sharding.precision, j.sharding.remat, j.sharding.micro_batch, j.global_batch) == (
        "fp8", "none", 1, 8192)
    assert j.sharding.distributed_optimizer and j.sharding.tp_comm_overlap
    assert j.sharding.ep_comm_overlap
    moe = j.model.moe
    assert (moe.n_experts, moe.top_k, moe.expert_ffn_hidden, moe.capacity_factor, moe.dispatch) == (
        128, 8, 1536, None, "gather")
    assert (j.model.n_kv_heads, j.model.hd, j.model.vocab_size) == (4, 128, 151936)
    assert c.measured.how == "tokens_per_s"
    assert c.measured.step_time_s == pytest.approx(8192 * 4096 / (1712 * 256), rel=1e-12)


def test_nemo_2407_llama3_8b_context_parallel():
    """Line 138: NeMo 24.07 Llama 3 8B, 8 H100, TP1 PP1 CP2 (DP 4), FP8, 128 x 8192 at 12273
    tokens/s/GPU -> step 128*8192/(12273*8) = 10.680 s."""
    c = _case(138)
    j = c.job
    assert j.mesh == {**MESH0, "data": 4, "seq": 2}
    assert (j.sharding.precision, j.global_batch, j.seq_len, j.sharding.micro_batch) == (
        "fp8", 128, 8192, 1)
    assert (j.model.n_kv_heads, j.model.ffn_hidden, j.model.ffn_kind) == (8, 14336, "swiglu")
    assert c.measured.step_time_s == pytest.approx(10.680, abs=5e-4)


def test_narayanan_gpt_76b_a100():
    """Line 112: Narayanan et al. Table 1, 76.1B GPT on 1024 A100s, TP8 PP4 DP32, batch 1792 of
    2048, mixed FP16 (A100 fp16 peak = bf16 peak) -> bf16, full recompute, GELU (2 matrices,
    F = 4h), no distributed optimizer (2021); 140 TFLOP/s with the paper's eq. (3)."""
    c = _case(112)
    j = c.job
    assert j.mesh == {**MESH0, "data": 32, "model": 8, "pipeline": 4}
    assert (j.sharding.precision, j.sharding.remat, j.global_batch) == ("bf16", "full", 1792)
    assert not j.sharding.distributed_optimizer and not j.sharding.tp_comm_overlap
    assert not j.sharding.ep_comm_overlap
    assert (j.model.ffn_kind, j.model.ffn_hidden, j.model.d_model) == ("gelu", 40960, 10240)
    B, s, L, h, V = 1792, 2048, 60, 10240, 51200
    f = 96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
    assert c.measured.how == "tflops:narayanan_eq3"
    assert c.measured.step_time_s == pytest.approx(f / (140e12 * 1024), rel=1e-12)


def test_megatron_readme_strong_scaling_from_mfu():
    """Line 127: GPT-177B on 4608 H100, TP8 PP6 DP96, only MFU 42% published: TFLOP/s =
    0.42 x 989.4 (the profile's dense bf16 peak), FLOPs by Megatron's 72-form formula."""
    c = _case(127)
    assert c.job.mesh == {**MESH0, "data": 96, "model": 8, "pipeline": 6}
    B, s, L, h, V = 1152, 4096, 96, 12288, 131072
    f = 72 * B * s * L * h * h * (1 + s / (6 * h) + V / (12 * L * h))
    assert c.measured.how == "mfu:megatron"
    assert c.measured.step_time_s == pytest.approx(f / (0.42 * 989.4e12 * 4608), rel=1e-9)


def test_unknown_hardware_is_skipped_with_its_reason():
    row = row_at(138)
    bad = type(row)(row.line, {**row.raw, "hardware": "TPU v9x"})
    s = row_to_case(bad)
    assert isinstance(s, Skip)
    assert "TPU v9x" in s.reason and "unknown profile" in s.reason and "h100-sxm" in s.reason


@pytest.mark.parametrize("col, value, words", [
    ("n_accel", "abc", ["n_accel", "'abc'", "not a number", "fix the cell"]),
    ("tp", "3", ["tp x pp x cp x dp", "n_accel", "fix dp or n_accel"]),
    ("precision", "INT2", ["precision", "'INT2'", "FP8"]),
    ("global_batch_seqs", "", ["global_batch_seqs", "needed but empty"]),
])
def test_bad_cell_names_field_value_and_fix(col, value, words):
    row = row_at(138)
    s = row_to_case(type(row)(row.line, {**row.raw, col: value}))
    assert isinstance(s, Skip)
    for w in words:
        assert w in s.reason, (w, s.reason)
    assert s.reason.startswith("line 138:")


def test_hybrid_mamba_lora_and_missing_shape_are_skipped():
    reasons = {line: row_to_case(row_at(line)) for line in (34, 36, 48)}
    assert all(isinstance(s, Skip) for s in reasons.values())
    assert "Mamba" in reasons[34].reason
    assert "LoRA" in reasons[36].reason
    assert "n_layers" in reasons[48].reason and "needed but empty" in reasons[48].reason


def test_maxtext_moe_row_puts_ep_inside_the_slice():
    """A MaxText MoE row (none is in the file yet): ep shards experts within each slice, the
    rest of the slice after tp and ep stays on fsdp."""
    row = row_at(27)
    moe = {**row.raw, "is_moe": "yes", "n_experts": "16", "top_k": "2",
           "expert_ffn_hidden": "8192", "ep": "4"}
    # measured by TFLOP/s only: MaxText's formula here is the dense one, so the row is skipped
    skip = row_to_case(type(row)(row.line, moe))
    assert not isinstance(skip, Case) and "dense form" in skip.reason
    moe["step_time_s"] = "12.5"
    c = row_to_case(type(row)(row.line, moe))
    assert isinstance(c, Case), c
    assert c.job.mesh == {**MESH0, "data": 2, "model": 16, "expert": 4, "fsdp": 4}
    assert c.job.model.moe.capacity_factor is None  # no token-drop tag: dropless


def _with(line: int, **cells) -> PublishedRow:
    r = row_at(line)
    return PublishedRow(r.line, {**r.raw, **cells})


def test_deepseek_v3_rows_take_the_recipes_deduplicated_dispatch():
    # line 39: DeepSeek-V3 on B200, EP 32 over 4 nodes; every Megatron-Bridge DeepSeek-V3 preset
    # sets moe_flex_dispatcher_backend (DeepEP / HybridEP)
    case = row_to_case(row_at(39))
    assert case.job.sharding.moe_dispatcher == "deepep"
    assert any("DeepEP" in n and "Megatron-Bridge" in n for n in case.notes)


def test_other_moe_rows_keep_the_plain_all_to_all():
    case = row_to_case(row_at(45))  # Qwen3-235B on H100: its recipe sets the alltoall dispatcher
    assert case.job.model.is_moe and case.job.sharding.moe_dispatcher == "alltoall"
    assert not any("DeepEP" in n for n in case.notes)


def test_a_row_names_its_dispatcher_in_a_column_or_its_notes():
    assert row_to_case(_with(45, moe_dispatcher="HybridEP")).job.sharding.moe_dispatcher == "deepep"
    assert row_to_case(_with(39, moe_dispatcher="alltoall")).job.sharding.moe_dispatcher == "alltoall"
    noted = _with(45, notes=row_at(45).text("notes") + "; DeepEP dispatcher")
    assert row_to_case(noted).job.sharding.moe_dispatcher == "deepep"


def test_an_unknown_dispatcher_cell_skips_the_row_naming_the_column():
    skip = row_to_case(_with(45, moe_dispatcher="nvshmem-magic"))
    assert isinstance(skip, Skip)
    assert "moe_dispatcher" in skip.reason and "nvshmem-magic" in skip.reason


def test_a_recipe_pinned_to_a_layout_matches_that_layout_only():
    # Qwen3-30B-A3B's H100 preset (EP 16 over two nodes, PP 1) sets HybridEP: line 33 runs it;
    # line 65 (PP 2, EP 8, VPP 12, an older release's layout) is in no current preset
    assert row_to_case(row_at(33)).job.sharding.moe_dispatcher == "deepep"
    assert row_to_case(row_at(65)).job.sharding.moe_dispatcher == "alltoall"
    # the B200 preset pins micro-batch 4: line 42 has it, line 73 (micro-batch 1) does not
    assert row_to_case(row_at(42)).job.sharding.moe_dispatcher == "deepep"
    assert row_to_case(row_at(73)).job.sharding.moe_dispatcher == "alltoall"


def test_deepseek_rows_route_group_limited_as_their_config():
    """DeepSeek-V3 rows take n_group 8 / topk_group 4 from the family's released config; a row
    whose notes state n_group / topk_group takes those; other MoE rows route over every expert."""
    from tests.published_helpers import all_rows

    cases = [c for r in all_rows() if isinstance(c := row_to_case(r), Case)]
    routing = {c.id: (c.job.model.moe.expert_groups, c.job.model.moe.groups_per_token)
               for c in cases if c.job.model.moe}
    ds = [c.id for c in cases if c.job.model.name.lower().startswith("deepseek")]
    assert ds and all(routing[k] == (8, 4) for k in ds)
    assert all(v == (1, None) for k, v in routing.items() if k not in ds)
    qwen = next(r for r in all_rows() if r.text("model").startswith("Qwen3_30B"))
    raw = dict(qwen.raw, notes=qwen.raw["notes"] + "; router n_group 16, topk_group 2")
    c = row_to_case(PublishedRow(raw=raw, line=qwen.line))
    assert (c.job.model.moe.expert_groups, c.job.model.moe.groups_per_token) == (16, 2)
