"""ModelSpec: a dense or MoE decoder-only transformer, and its parameter counts.

Symbols (scaling-book style): ``L`` layers, ``D`` d_model, ``N`` query heads, ``K`` KV heads,
``Hd`` head dim, ``F`` FFN hidden, ``V`` vocab, ``E`` experts, ``k`` top-k, ``Fe`` expert hidden.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from meshcast.frozen import Frozen

#: Upper bounds of the integer fields: far beyond any model trained, small enough that parameter
#: counts and per-step FLOPs stay exact in 64 bits (a YAML typo of 10^24 is an error, not a hang).
MAX_LAYERS = 1 << 14
MAX_WIDTH = 1 << 22  # d_model, FFN hidden, head dim
MAX_HEADS = 1 << 16
MAX_VOCAB = 1 << 24
MAX_SEQ_LEN = 1 << 24
MAX_EXPERTS = 1 << 16


class MoESpec(Frozen):
    """The MoE part of a model.

    ``capacity_factor`` includes top-k (Du et al. 2024 / AXLearn): capacity per expert per group
    ``C = capacity_factor * group_size / E``. ``capacity_factor: null`` means dropless.
    ``load_imbalance`` is the busiest expert's token share over the mean (>= 1); with a capacity
    factor the expert buffers are padded to ``C`` so it only drops tokens, dropless it sets the pace.
    """

    n_experts: int = Field(ge=1, le=MAX_EXPERTS)
    top_k: int = Field(ge=1, le=MAX_EXPERTS)
    capacity_factor: float | None = Field(default=2.0, gt=0, le=MAX_EXPERTS)
    expert_ffn_hidden: int = Field(ge=1, le=MAX_WIDTH)
    n_shared_experts: int = Field(default=0, ge=0, le=MAX_EXPERTS)
    shared_expert_ffn_hidden: int | None = Field(default=None, ge=1, le=MAX_WIDTH)
    layer_interval: int = Field(default=1, ge=1, le=MAX_LAYERS,
                                description="every k-th layer is MoE")
    first_dense_layers: int = Field(default=0, ge=0, le=MAX_LAYERS)
    dispatch: Literal["einsum", "gather"] = Field(
        default="einsum",
        description="einsum: GShard/AXLearn one-hot dispatch matmuls; gather: sort/permute "
        "(Megatron grouped GEMM), memory bound",
    )
    group_size_tokens: int = Field(default=2048, ge=1, le=MAX_SEQ_LEN,
                                   description="tokens per routing group")
    router_flops_per_token: float = Field(
        default=0.0, ge=0, le=1e15, description="extra router cost beyond the D x E gate matmul"
    )
    load_imbalance: float = Field(default=1.0, ge=1.0, le=MAX_EXPERTS)
    expert_groups: int = Field(
        default=1, ge=1, le=MAX_EXPERTS,
        description="routing groups of n_experts / expert_groups consecutive experts (DeepSeek's "
        "n_group)")
    groups_per_token: int | None = Field(
        default=None, ge=1, le=MAX_EXPERTS,
        description="group-limited routing: a token's experts come from at most this many groups "
        "(DeepSeek's topk_group; with one group per node, node-limited routing); null: any")

    @property
    def dropless(self) -> bool:
        """No capacity limit (``capacity_factor: null``): no token dropped, shapes data-dependent."""
        return self.capacity_factor is None

    @field_validator("capacity_factor")
    @classmethod
    def _not_tiny(cls, v: float | None) -> float | None:
        if v is not None and v < 1e-3:
            raise ValueError(f"capacity_factor {v:g} is below 0.001 (it includes top_k: 2.0 is "
                             "usual); use null for dropless")
        return v

    @model_validator(mode="after")
    def _k_le_e(self) -> MoESpec:
        if self.top_k > self.n_experts:
            raise ValueError(
                f"top_k={self.top_k} exceeds n_experts={self.n_experts}; use top_k <= n_experts"
            )
        if self.n_experts % self.expert_groups:
            raise ValueError(f"expert_groups={self.expert_groups} does not divide n_experts="
                             f"{self.n_experts}; give a divisor of it (1: no groups)")
        m = self.groups_per_token
        if m is not None and m > self.expert_groups:
            raise ValueError(f"groups_per_token={m} exceeds expert_groups={self.expert_groups}; "
                             "use at most expert_groups (or null: any group)")
        if m is not None and self.top_k > m * (self.n_experts // self.expert_groups):
            raise ValueError(f"top_k={self.top_k} exceeds the {m} x {self.n_experts // self.expert_groups}"
                             " experts of groups_per_token groups; raise groups_per_token")
        return self


class ModelSpec(Frozen):
    """A decoder-only transformer, dense (``moe: null``) or MoE."""

    name: str
    source: str = Field(min_length=3)
    notes: str = ""
    n_layers: int = Field(ge=1, le=MAX_LAYERS)
    d_model: int = Field(ge=1, le=MAX_WIDTH)
    n_heads: int = Field(ge=1, le=MAX_HEADS)
    n_kv_heads: int | None = Field(default=None, ge=1, le=MAX_HEADS)
    head_dim: int | None = Field(default=None, ge=1, le=MAX_WIDTH)
    ffn_hidden: int = Field(ge=1, le=MAX_WIDTH)
    ffn_kind: Literal["gelu", "swiglu"] = "swiglu"
    vocab_size: int = Field(ge=1, le=MAX_VOCAB)
    seq_len: int = Field(ge=1, le=MAX_SEQ_LEN)
    tied_embeddings: bool = False
    moe: MoESpec | None = None

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.n_heads % self.kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.kv_heads}"
            )
        if self.head_dim is None and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set head_dim explicitly"
            )
        if self.moe and self.moe.first_dense_layers > self.n_layers:
            raise ValueError(
                f"moe.first_dense_layers={self.moe.first_dense_layers} exceeds "
                f"n_layers={self.n_layers}"
            )
        return self

    # --- derived shapes -------------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hd(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    @property
    def ffn_matrices(self) -> int:
        """Weight matrices per FFN: 3 for SwiGLU (gate, up, down), 2 for GELU."""
        return 3 if self.ffn_kind == "swiglu" else 2

    def is_moe_layer(self, i: int) -> bool:
        """Layer ``i`` (0-based) is MoE if past the first dense layers and on the interval."""
        m = self.moe
        if m is None or i < m.first_dense_layers:
            return False
        return (i - m.first_dense_layers) % m.layer_interval == m.layer_interval - 1

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.n_layers))

    # --- parameter counts -----------------------------------------------------------------
    @property
    def attention_params(self) -> int:
        """``D*N*Hd`` (Q) + ``2*D*K*Hd`` (K, V) + ``N*Hd*D`` (out); biases and norms ignored."""
        return self.d_model * self.hd * (2 * self.n_heads + 2 * self.kv_heads)

    def ffn_params(self, hidden: int) -> int:
        return self.ffn_matrices * self.d_model * hidden

    @property
    def dense_ffn_params(self) -> int:
        return self.ffn_params(self.ffn_hidden)

    @property
    def expert_params(self) -> int:
        """Parameters of one routed expert."""
        assert self.moe is not None
        return self.ffn_params(self.moe.expert_ffn_hidden)

    @property
    def shared_expert_params(self) -> int:
        m = self.moe
        if m is None or m.n_shared_experts == 0:
            return 0
        return m.n_shared_experts * self.ffn_params(m.shared_expert_ffn_hidden or m.expert_ffn_hidden)

    @property
    def router_params(self) -> int:
        return self.d_model * self.moe.n_experts if self.moe else 0

    @property
    def embedding_params(self) -> int:
        """Input embedding plus (untied) output projection: ``V*D`` each."""
        return self.vocab_size * self.d_model * (1 if self.tied_embeddings else 2)

    def _layer_totals(self, experts_counted: int) -> int:
        n_moe = self.n_moe_layers
        dense = (self.n_layers - n_moe) * self.dense_ffn_params
        if not self.moe:
            return self.n_layers * self.attention_params + dense
        moe = n_moe * (
            experts_counted * self.expert_params + self.shared_expert_params + self.router_params
        )
        return self.n_layers * self.attention_params + dense + moe

    @property
    def total_params(self) -> int:
        """All parameters, embeddings included."""
        return self._layer_totals(self.moe.n_experts if self.moe else 0) + self.embedding_params

    @property
    def active_params(self) -> int:
        """Parameters a token passes through (top-k experts), embeddings included."""
        return self._layer_totals(self.moe.top_k if self.moe else 0) + self.embedding_params
