"""Formulas the step graph and the search share, each stated once over ``float | ndarray``.

Sizes (mesh axes ``t`` model, ``e`` expert, ``fs`` fsdp, ``cp`` seq, micro-batch ``b``) may be
Python numbers or numpy arrays (one entry per candidate configuration); every function
broadcasts. The graph path (:mod:`simulator.graph`, :mod:`simulator.predict`) calls them with
numbers, the search (:mod:`simulator.search`) with columns. Notation as in the scaling book:
``D`` model width, ``V`` vocabulary, ``L`` layers, ``|X|`` the size of mesh axis ``X``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from simulator.specs.model import ModelSpec

#: A Python number or a numpy column of them (one entry per configuration).
Num = float | np.ndarray


# --- parameters held per device ----------------------------------------------------------------

def layer_params(m: ModelSpec, t: Num, e: Num, moe_layer: bool) -> tuple[Num, Num]:
    """``(non-expert, expert)`` parameters of one layer a device holds before FSDP sharding.

    Dense layer: ``(P_attn + P_ffn) / t``, no expert part. MoE layer: non-expert
    ``(P_attn + P_shared) / t + P_router`` (the router is replicated), expert
    ``E * P_expert / (e * t)`` (experts split over ``expert``, each expert's FFN over ``model``).
    """
    if not moe_layer:
        return (m.attention_params + m.dense_ffn_params) / t, 0.0
    dense = (m.attention_params + m.shared_expert_params) / t + m.router_params
    return dense, m.moe.n_experts * m.expert_params / (e * t)


def embedding_params(m: ModelSpec, t: Num, first: bool, last: bool) -> Num:
    """Embedding / LM-head parameters a pipeline rank holds, vocab-parallel over ``model``:
    ``tables * V * D / t`` with one table on the first rank (input embedding), one on the last
    (output projection), two on a single rank unless they are tied, none in between."""
    if not (first or last):
        return 0.0
    tables = 2 if (first and last and not m.tied_embeddings) else 1
    return tables * m.vocab_size * m.d_model / t


def stage_params(m: ModelSpec, t: Num, e: Num, fs: Num, kinds: Iterable[bool], first: bool,
                 last: bool) -> tuple[Num, Num]:
    """``(non-expert, expert)`` parameters one device of a pipeline rank keeps after FSDP:
    ``(sum_layers layer_params + embedding_params) / fs``, the embedding share counted as
    non-expert. ``kinds`` holds one ``is_moe_layer`` flag per layer of the rank."""
    dense = expert = 0.0
    for kind, count in sorted(Counter(kinds).items()):
        de, ex = layer_params(m, t, e, kind)
        dense, expert = dense + count * de, expert + count * ex
    dense = dense + embedding_params(m, t, first, last)
    return dense / fs, expert / fs


# --- data-parallel replicas: gradient reduction and optimizer shards ------------------------

def replica_sizes(dp: Num, e: Num, cp: Num) -> tuple[Num, Num]:
    """``(non-expert, expert)`` ranks holding the same parameter shard, whose gradients are
    summed once per step: every batch axis that splits tokens but not weights. Non-expert
    weights are replicated over ``data x expert x seq`` (the expert axis splits tokens; each
    ``seq`` rank computes a partial gradient over its part of the sequence), routed experts over
    ``data x seq``. Megatron-Core reduces over the data-parallel group with context parallelism
    (``get_data_parallel_group(with_context_parallel=True)``, holding the expert-parallel ranks)
    and, for experts, the expert-data-parallel group; its distributed optimizer shards the state
    over the same groups (megatron/core/distributed/distributed_data_parallel.py)."""
    return dp * e * cp, dp * cp


def replica_axes(e, cp) -> tuple[str, str]:
    """The mesh-axis groups of :func:`replica_sizes` as collectives name them:
    ``data[+expert][+seq]`` for non-expert weights, ``data[+seq]`` for experts (an axis of one
    chip is left out; ``e`` and ``cp`` are compared with 1, so on columns every row must agree)."""
    seq = "+seq" if cp > 1 else ""
    return "data" + ("+expert" if e > 1 else "") + seq, "data" + seq


def optimizer_shards(distributed: bool, dp: Num, e: Num, cp: Num) -> tuple[Num, Num]:
    """``(non-expert, expert)`` ranks a distributed optimizer (ZeRO-1) shards the optimizer state
    and its update over: the replicas of :func:`replica_sizes`; ``(1, 1)`` without one."""
    return replica_sizes(dp, e, cp) if distributed else (1, 1)


def param_gather_hidden(gather_s: Num, t_fwd: Num, chunks: int, after_compute: Num) -> Num:
    """Seconds of the distributed optimizer's weight all-gather that Megatron's
    ``--overlap-param-gather`` hides under the next step's first forward.

    The gather (``A`` seconds on the rank) is chunked by layer (``n`` chunks, the rank's layers)
    and each chunk is prefetched under the previous layer's forward (``t_fwd / n`` each), so
    one chunk stays exposed, plus whatever the chunks take beyond the forward:
    ``exposed = A/n + max(0, A - t_fwd) (n - 1)/n`` (Megatron-Bridge, Communication Overlap:
    "this overlap method exposes only one DP communication chunk"). Hidden: ``A - exposed``,
    and never more than the step spends after its last compute op (``after_compute``), where
    the gather ran when not overlapped. Both paths apply it to a rank's tail after scheduling
    (``predict._time_stage``, ``StageTable.time``): it subtracts the forward time, which no
    max-plus form of the schedule can express."""
    n = max(int(chunks), 1)
    exposed = gather_s / n + np.maximum(gather_s - t_fwd, 0.0) * (n - 1) / n
    return np.maximum(np.minimum(gather_s - exposed, after_compute), 0.0)


# --- optimizer bytes per parameter -------------------------------------------------------------

def moment_bytes(optimizer) -> int:
    """Bytes of one Adam moment: 4 for ``state_dtype="fp32"``, 2 for bf16."""
    return 4 if optimizer.state_dtype == "fp32" else 2


def optimizer_state_bytes_per_param(optimizer) -> int:
    """Optimizer state kept per parameter: ``(4 if master_weights) + 2 * moment`` bytes (fp32
    master weights, Adam's ``m`` and ``v``). With fp32 moments and master weights: 12 B, the
    ``12`` of Megatron-Core's ``6 + 12/d`` ("Distributed Optimizer" docs)."""
    return (4 if optimizer.master_weights else 0) + 2 * moment_bytes(optimizer)


def optimizer_update_bytes_per_param(optimizer, grad_bytes: Num) -> Num:
    """HBM bytes the Adam update moves per local parameter:
    ``2 * state + grad_bytes + 2`` = ``(8 if master_weights) + grad_bytes + 4 * moment + 2``.

    It reads and writes every byte of optimizer state (:func:`optimizer_state_bytes_per_param`:
    the fp32 master, ``m`` and ``v``), reads the gradient (``grad_bytes``) and writes the bf16
    weight (2 B). ``optimizer`` is an :class:`~simulator.specs.sharding.OptimizerSpec`."""
    return 2 * optimizer_state_bytes_per_param(optimizer) + grad_bytes + 2


# --- MoE routing --------------------------------------------------------------------------------

def dedup_routing(moe) -> tuple[int, int, int, int | None]:
    """How tokens pick experts, as the deduplicated dispatch needs it
    (:func:`simulator.cost.collectives.dedup_shares`): ``(n_experts, top_k, expert_groups,
    groups_per_token)``."""
    return moe.n_experts, moe.top_k, moe.expert_groups, moe.groups_per_token


# --- pipeline ----------------------------------------------------------------------------------

def stage_layers(n_layers: int, pp: int, v: int) -> list[list[int]]:
    """Layer indices per pipeline rank: rank ``r`` holds chunks ``c * pp + r`` (``c < v``) of
    ``L / (pp v)`` consecutive layers each (Megatron's interleaved assignment; ``v = 1`` gives
    contiguous blocks). Plain integers: it shapes the graph, not a column."""
    per_chunk = n_layers // (pp * v)
    return [[i for c in range(v) for i in range((c * pp + r) * per_chunk,
                                                (c * pp + r + 1) * per_chunk)]
            for r in range(pp)]


def warmup_forwards(rank: Num, pp: Num, m: Num, v: Num) -> Num:
    """Forward passes pipeline rank ``rank`` of ``pp`` runs before its first backward, in chunks
    of ``1 / v`` of its layers: 1F1B (``v = 1``; PipeDream-Flush, Narayanan et al. 2021)
    ``min(pp - rank - 1, m)``; Megatron's interleaved schedule (``v > 1`` virtual stages)
    ``min(2 (pp - rank - 1) + (v - 1) pp, m v)``. The schedule orders
    (:mod:`simulator.graph.pipeline`) and the activations alive at once
    (:func:`simulator.graph.memory.in_flight_microbatches`) both count from it."""
    v = np.asarray(v)
    return np.minimum(np.where(v > 1, 2 * (pp - rank - 1) + (v - 1) * pp, pp - rank - 1), m * v)


def tokens_per_device(micro_batch: Num, seq_len: Num, cp: Num) -> Num:
    """Tokens of one micro-batch on one device: ``T = b * s // cp`` (the sequence split over
    ``seq``)."""
    return micro_batch * seq_len // cp


def pipeline_send_bytes(micro_batch: Num, seq_len: Num, cp: Num, d_model: Num, t: Num) -> Num:
    """Bytes of one activation send between pipeline ranks: ``T * D / t * 2``, the bf16 hidden
    state of the ``T`` tokens (:func:`tokens_per_device`) a device holds, sequence-parallel over
    ``model``. Always 2 bytes per element, as the graph path has always sent it."""
    return tokens_per_device(micro_batch, seq_len, cp) * d_model / t * 2


# --- utilisation -------------------------------------------------------------------------------

def mfu(model_flops: Num, step_s: Num, chips: Num, peak_flops: Num) -> Num:
    """Model FLOPs utilisation: ``model_flops / (step_s * chips * peak_flops)`` (PaLM, Chowdhery
    et al. 2022 App. B; the model FLOPs of :mod:`simulator.cost.flops`, the dense bf16 peak)."""
    return model_flops / (step_s * chips * peak_flops)


__all__ = ["layer_params", "embedding_params", "stage_params", "replica_sizes", "replica_axes",
           "optimizer_shards", "param_gather_hidden", "dedup_routing", "moment_bytes",
           "optimizer_state_bytes_per_param", "optimizer_update_bytes_per_param",
           "stage_layers", "warmup_forwards", "tokens_per_device", "pipeline_send_bytes", "mfu"]
