"""The FLOP formulas the sources used for their TFLOP/s and MFU figures, to turn them back into
step time: ``step_time = FLOPs per step / (TFLOP/s per chip * 1e12 * chips)``.

Symbols: ``B`` sequences per step, ``s`` sequence length, ``L`` layers, ``h`` d_model, ``N``
query heads, ``K`` KV heads, ``Hd`` head dim, ``F`` FFN hidden, ``V`` vocab, ``k`` experts a token
is routed to. Each function counts one whole step (all chips) unless it says "per device".
"""

from __future__ import annotations


def narayanan_eq3_flops(B: float, s: float, L: float, h: float, V: float) -> float:
    """Narayanan et al. 2021 (SC'21, arXiv 2104.04473), eq. (3), with full activation recompute:

    ``F = 96 B s L h^2 (1 + s/(6h) + V/(16 L h))``

    (per layer forward ``24 B s h^2 + 4 B s^2 h``, counted 4 times: forward, recompute and a
    backward of twice the forward; the logit layer ``2 B s h V`` counted 3 times). GPT with
    ``F = 4h``; the paper's Table 1 TFLOP/s use it.
    """
    return 96.0 * B * s * L * h * h * (1.0 + s / (6.0 * h) + V / (16.0 * L * h))


def megatron_flops(B: float, s: float, L: float, h: float, V: float, N: int, K: int, Hd: int,
                   F: float, swiglu: bool, k: int = 1) -> float:
    """Megatron-LM ``num_floating_point_operations`` (megatron/training/training.py, Megatron-Core
    r0.8, the version of the README's H100 table), no recompute counted:

    ``12 B s L h^2 [ (1 + K/N + s/h) (N Hd / h) + (F/h) k g + V/(2 L h) ]``, ``g = 3/2`` for
    SwiGLU, else 1.

    For GPT (``K = N``, ``N Hd = h``, ``F = 4h``, ``k = 1``, no SwiGLU) it reduces to
    ``72 B s L h^2 (1 + s/(6h) + V/(12 L h))``. Attention scores are counted without the causal
    half.
    """
    g = 1.5 if swiglu else 1.0
    ratio = N * Hd / h
    return 12.0 * B * s * L * h * h * ((1.0 + K / N + s / h) * ratio + (F / h) * k * g
                                       + V / (2.0 * L * h))


def maxtext_flops_per_device(b: float, s: float, L: float, D: float, V: float, N: int, K: int,
                             Hd: int, F: float, gated: bool) -> float:
    """MaxText ``calculate_tflops_training_per_device`` (src/maxtext/utils/maxtext_utils.py, dense
    decoder, the commit the v4/v5e README rows cite), per device with ``b`` sequences per device:

    ``3 [ L (ffn + qkv + proj) + 2 b s D V ] + 3 L causal_attn``, where
    ``ffn = 2 b s F D (a + 1)`` (``a`` = 2 gated activations for SwiGLU, else 1),
    ``qkv = 2 b s D (N + 2K) Hd``, ``proj = 2 b s D N Hd`` and
    ``causal_attn = 4 b s^2 N Hd / 2``.

    It is PaLM's ``6 N_params + 6 L s N Hd`` per token (Chowdhery et al. 2022, App. B, causal
    attention halved) without the input embedding.
    """
    a = 2 if gated else 1
    ffn = 2.0 * b * s * F * D * (a + 1)
    qkv = 2.0 * b * s * D * (N + 2 * K) * Hd
    proj = 2.0 * b * s * D * N * Hd
    embed = 2.0 * b * s * D * V
    attn = 4.0 * b * s * s * N * Hd / 2.0
    return 3.0 * (L * (ffn + qkv + proj) + embed) + 3.0 * L * attn
