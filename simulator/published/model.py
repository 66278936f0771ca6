"""A published row's model shape -> ModelSpec.

Shapes the row does not give are never guessed: an empty required cell skips the row. Hybrid
Mamba models and LoRA fine-tuning are not modelled (skipped). MLA attention (DeepSeek-V3) is an
equivalent GQA with the same projection parameters, as in the zoo's ``deepseek-v3``: ``N`` heads,
``K = N/16``, ``Hd = P_mla / (D (2N + 2K))``. Group-limited routing (DeepSeek's ``n_group`` /
``topk_group``) comes from the row's notes, else from the family's released config.
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from meshcast.errors import from_validation_error
from simulator.published.names import is_swiglu
from simulator.published.rows import PublishedRow, RowError
from simulator.specs.model import ModelSpec, MoESpec


def _mla_params(text: str, D: int, N: int) -> int | None:
    """Projection parameters of MLA from ``q_lora A, kv_lora C, qk_nope P + rope R, v Q``:
    ``D A + A N (P+R) + D (C+R) + C N (P+Q) + N Q D`` (DeepSeek-V2/V3 papers, sec. 2.1)."""
    g = {k: re.search(rf"{k}\D*(\d+)", text) for k in ("q_lora", "kv_lora", "qk_nope", "rope", "v ")}
    if not all(g.values()):
        return None
    A, C, P, R, Q = (int(v.group(1)) for v in g.values())
    return D * A + A * N * (P + R) + D * (C + R) + C * N * (P + Q) + N * Q * D


#: Group-limited routing (n_group, topk_group) of model families whose rows do not state it,
#: from their released configs: DeepSeek-V3 / R1 (config.json n_group 8, topk_group 4) and
#: DeepSeek-V2 (n_group 8, topk_group 3; V2-Lite routes over one group).
ROUTING_GROUPS = {"deepseekv3": (8, 4), "deepseekr1": (8, 4), "deepseekv2": (8, 3)}


def _routing_groups(row: PublishedRow, notes: str) -> tuple[int, int | None]:
    """``(expert_groups, groups_per_token)``: the row's ``n_group`` / ``topk_group`` where its
    notes give them, else its family's (:data:`ROUTING_GROUPS`), else unlimited."""
    g, m = re.search(r"n_group\D{0,3}(\d+)", notes), re.search(r"topk_group\D{0,3}(\d+)", notes)
    if g and m:
        return int(g.group(1)), int(m.group(1))
    name = re.sub(r"[^a-z0-9]", "", row.text("model").lower())
    for family, groups in ROUTING_GROUPS.items():
        if name.startswith(family) and "lite" not in name:
            return groups
    return 1, None


def _moe(row: PublishedRow) -> MoESpec:
    E, k = row.int("n_experts", required=True), row.int("top_k", required=True)
    notes = row.text("moe_layer_notes").lower()
    first = re.search(r"first (\d+) layers? dense", notes)
    dropless = "tokendrop" not in row.text("model").lower()
    groups, per_token = _routing_groups(row, f"{notes} {row.text('notes').lower()}")
    return MoESpec(n_experts=E, top_k=k, expert_ffn_hidden=row.int("expert_ffn_hidden", required=True),
                   n_shared_experts=row.count("n_shared_experts"),
                   capacity_factor=None if dropless else float(k),
                   first_dense_layers=int(first.group(1)) if first else 0, dispatch="gather",
                   expert_groups=groups, groups_per_token=per_token)


def model_of(row: PublishedRow) -> ModelSpec:
    """The row's model; RowError names the missing or bad cell."""
    text = " ".join(row.text(c) for c in ("notes", "moe_layer_notes", "model")).lower()
    if "mamba" in text:
        raise RowError(f"line {row.line}: moe_layer_notes: hybrid Mamba layers are not modelled "
                       "by meshcast (attention/MLP/MoE decoders only)")
    if "lora" in (row.text("source_table") + " " + row.text("notes")).lower():
        raise RowError(f"line {row.line}: source_table: LoRA fine-tuning (frozen base weights: no "
                       "weight gradients or optimizer update for them) is not modelled")
    L, D = row.int("n_layers", required=True), row.int("d_model", required=True)
    N = row.int("n_heads", required=True)
    K, hd = row.int("n_kv_heads", default=N), row.int("head_dim")
    try:
        moe = _moe(row) if row.yes("is_moe") else None
    except ValidationError as e:
        raise RowError(f"line {row.line}: {from_validation_error(e, 'moe')}") from None
    ffn = row.int("ffn_hidden", required=moe is None) or moe.expert_ffn_hidden
    if "mla" in text and (p := _mla_params(text, D, N)):
        K = max(N // 16, 1)
        hd = round(p / (D * (2 * N + 2 * K)))
    try:
        return ModelSpec(name=row.text("model"), source=f"published row {row.id}", n_layers=L,
                         d_model=D, n_heads=N, n_kv_heads=K, head_dim=hd, ffn_hidden=ffn,
                         ffn_kind="swiglu" if is_swiglu(row) else "gelu",
                         vocab_size=row.int("vocab", required=True),
                         seq_len=row.int("seq_len", required=True), moe=moe)
    except ValidationError as e:
        raise RowError(f"line {row.line}: {from_validation_error(e, 'model')}") from None


def pad_layers(m: ModelSpec, stages: int) -> tuple[ModelSpec, str]:
    """Megatron splits layers unevenly over pipeline stages when they do not divide; the step is
    set by a stage with ``ceil(L / stages)`` layers per chunk, so the job runs
    ``ceil(L / stages) * stages`` layers (the measured FLOPs keep the real ``L``)."""
    if m.n_layers % stages == 0:
        return m, ""
    padded = -(-m.n_layers // stages) * stages
    return (m.model_copy(update={"n_layers": padded}),
            f"{m.n_layers} layers over {stages} pipeline stages: modelled as {padded} (the "
            "busiest stage's layers on every stage)")
