"""Model FLOPs for MFU.

Per token (training, forward + backward = 3 x forward):
``6 * N_mm + 6 * L * s * N_h * Hd``, where ``N_mm`` counts the parameters of every matmul a token
passes through (active experts, router, LM head; not the input embedding lookup) and the second
term is causal self-attention (``QK^T`` and ``AV``: ``4 s N_h Hd`` per token per layer forward,
half of it masked). This is the PaLM formula (Chowdhery et al. 2022, App. B) with causal
attention counted as half. MFU = model FLOPs / (step time x chips x dense bf16 peak), whatever
precision the matmuls run in, so bf16 and fp8 runs compare on one scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulator.specs.model import ModelSpec


def matmul_params(m: ModelSpec) -> int:
    """Active parameters used in matmuls: active minus the input embedding (if untied)."""
    lookup = 0 if m.tied_embeddings else m.vocab_size * m.d_model
    return m.active_params - lookup


def model_flops_per_token(m: ModelSpec, seq_len: int) -> float:
    """``6 * N_mm + 6 * L * s * N_h * Hd`` (see module docstring)."""
    return 6.0 * matmul_params(m) + 6.0 * m.n_layers * seq_len * m.n_heads * m.hd


def model_flops_per_step(m: ModelSpec, seq_len: int, tokens: int) -> float:
    return model_flops_per_token(m, seq_len) * tokens
