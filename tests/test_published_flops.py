"""The FLOP formulas used to turn published TFLOP/s and MFU into step time, on worked examples
from the papers' own rows (tolerances: the rounding of the published figures)."""

from __future__ import annotations

import pytest

from simulator.published.flops import maxtext_flops_per_device, megatron_flops, narayanan_eq3_flops


def test_narayanan_eq3_on_table1_gpt_1_7b():
    """Narayanan et al. 2021 Table 1, first row: 1.7B GPT (h=2304, L=24), batch 512 of 2048
    tokens, V=51200, 32 A100s at 137 TFLOP/s each (aggregate 4.4 PFLOP/s as published).
    By hand: 96*512*2048*24*2304^2 = 1.282470e16; 1 + 2048/13824 + 51200/884736 = 1.2060185;
    F = 1.546683e16; step = F / (137e12 * 32) = 3.5280 s."""
    f = narayanan_eq3_flops(B=512, s=2048, L=24, h=2304, V=51200)
    assert f == pytest.approx(1.546683e16, rel=1e-6)
    assert f / (137e12 * 32) == pytest.approx(3.5280, rel=1e-4)
    assert 137e12 * 32 == pytest.approx(4.4e15, rel=0.01)  # the table's aggregate column


def test_megatron_formula_reduces_to_72_form_for_gpt():
    """For GPT (MHA, N*Hd = h, F = 4h, GELU) the Megatron-LM formula is
    72 B s L h^2 (1 + s/(6h) + V/(12 L h)). Megatron-LM README H100 table, GPT-1.7B row: 48 GPUs,
    batch 192 x 4096, h=2048, L=24, V=131072, 408.8 TFLOP/s. By hand:
    72*192*4096*24*2048^2 = 5.699868e15; x (1 + 1/3 + 2/9) = 8.866462e15; step = F / (408.8e12
    * 48) = 0.45185 s; 408.8 / 989.4 = 41% MFU, as the table says."""
    B, s, L, h, V = 192, 4096, 24, 2048, 131072
    f = megatron_flops(B, s, L, h, V, N=16, K=16, Hd=128, F=4 * h, swiglu=False)
    assert f == pytest.approx(72 * B * s * L * h**2 * (1 + s / (6 * h) + V / (12 * L * h)), rel=1e-12)
    assert f == pytest.approx(8.866462e15, rel=1e-6)
    assert f / (408.8e12 * 48) == pytest.approx(0.45185, rel=1e-4)
    assert round(408.8 / 989.4 * 100) == 41


def test_megatron_formula_counts_gqa_swiglu_term_by_term():
    """Llama-3-8B shape, one sequence: per token per layer 3 x 2 x (Q,O: 2 h N Hd; K,V: 2 h K Hd;
    SwiGLU: 3 h F) + 3 x 4 s N Hd (scores, causal half not taken) and 3 x 2 h V for the logits."""
    B, s, L, h, N, K, Hd, F, V = 1, 8192, 32, 4096, 32, 8, 128, 14336, 128256
    per_layer = 6 * (2 * h * N * Hd + 2 * h * K * Hd + 3 * h * F) + 12 * s * N * Hd
    want = B * s * (L * per_layer + 6 * h * V)
    assert megatron_flops(B, s, L, h, V, N, K, Hd, F, swiglu=True) == pytest.approx(want, rel=1e-12)


def test_maxtext_is_palm_6n_plus_causal_attention():
    """MaxText's per-device count equals PaLM's 6 N + 6 L s N Hd per token (causal attention
    halved; N = matmul parameters, input embedding excluded). MaxText v4 README, 22B row:
    13 sequences of 2048 per chip, 156 TFLOP/s. By hand: N = 48 (3*6144*24576 + 6144*72*128 +
    6144*24*128) + 6144*32000 = 25,563,758,592; 6N + 6*48*2048*24*128 = 155,194,490,880 FLOPs
    per token; x 26,624 tokens / 156e12 = 26.4865 s per step."""
    b, s, L, D, V, N, K, Hd, F = 13, 2048, 48, 6144, 32000, 24, 24, 128, 24576
    params = L * (3 * D * F + D * (N + 2 * K) * Hd + D * N * Hd) + D * V
    assert params == 25_563_758_592
    per_token = 6 * params + 6 * L * s * N * Hd
    assert per_token == 155_194_490_880
    f = maxtext_flops_per_device(b, s, L, D, V, N, K, Hd, F, gated=True)
    assert f == pytest.approx(per_token * b * s, rel=1e-12)
    assert f / 156e12 == pytest.approx(26.4865, rel=1e-4)
