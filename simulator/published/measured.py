"""The measured step time of a published row, and how it was obtained.

In order of preference: the published step time; tokens/s per chip
(``step = B s / (tokens_per_s_per_accel * chips)``); TFLOP/s per chip or MFU with the source's own
FLOP formula (``step = FLOPs / (TFLOP/s * 1e12 * chips)``, MFU: ``TFLOP/s = MFU * bf16 peak``).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.published import flops as F
from simulator.published.rows import PublishedRow, RowError
from simulator.specs.model import ModelSpec


@dataclass(frozen=True)
class Measured:
    step_time_s: float
    how: str  # "step_time_s", "tokens_per_s", "tflops:<formula>", "mfu:<formula>"


def step_flops(formula: str, m: ModelSpec, B: int, s: int, chips: int) -> float:
    """FLOPs of one step (all chips) by ``formula`` for model ``m``, ``B`` sequences of ``s``."""
    L, h, V = m.n_layers, m.d_model, m.vocab_size
    if formula == "narayanan_eq3":
        return F.narayanan_eq3_flops(B, s, L, h, V)
    swiglu = m.ffn_kind == "swiglu"
    if formula == "megatron":
        k = m.moe.top_k if m.moe else 1
        ffn = m.moe.expert_ffn_hidden if m.moe else m.ffn_hidden
        return F.megatron_flops(B, s, L, h, V, m.n_heads, m.kv_heads, m.hd, ffn, swiglu, k)
    if formula == "maxtext":
        return chips * F.maxtext_flops_per_device(B / chips, s, L, h, V, m.n_heads, m.kv_heads,
                                                  m.hd, m.ffn_hidden, swiglu)
    raise ValueError(formula)


def measured_step_time(row: PublishedRow, m: ModelSpec, formula: str | None, chips: int, B: int,
                       s: int, bf16_peak: float) -> Measured:
    """The row's step time (see module docstring); ``formula`` is the source's
    (:attr:`simulator.published.sources.SourceRules.flops`, None: it publishes none); RowError
    when nothing usable is published."""
    t = row.num("step_time_s")
    if t:
        return Measured(t, "step_time_s")
    tok = row.num("tokens_per_s_per_accel")
    if tok:
        return Measured(B * s / (tok * chips), "tokens_per_s")
    tflops = row.num("tflops_per_accel")
    mfu = row.num("mfu_pct")
    if (tflops or mfu) and not formula:
        raise RowError(f"line {row.line}: tflops_per_accel/mfu_pct: no FLOP formula is known for "
                       f"source_id {row.text('source_id')!r}; give step_time_s or "
                       "tokens_per_s_per_accel")
    if (tflops or mfu) and m.moe is not None and formula != "megatron":
        raise RowError(f"line {row.line}: tflops_per_accel/mfu_pct: the {formula} FLOP formula "
                       "used here is its dense form; for an MoE row give step_time_s or "
                       "tokens_per_s_per_accel")
    if tflops:
        return Measured(step_flops(formula, m, B, s, chips) / (tflops * 1e12 * chips),
                        f"tflops:{formula}")
    if mfu:
        rate = mfu / 100.0 * bf16_peak
        return Measured(step_flops(formula, m, B, s, chips) / (rate * chips), f"mfu:{formula}")
    raise RowError(f"line {row.line}: step_time_s, tokens_per_s_per_accel, tflops_per_accel, "
                   "mfu_pct: all empty; give at least one measured figure")
