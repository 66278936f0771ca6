"""Memory per device: weights, gradients, optimizer state, activations under the remat policy.

One statement of each formula: the graph path (:func:`estimate_memory`, one job) and the search
(:func:`simulator.search.memory.memory_bytes`, whole columns of configurations) both call
:func:`rank_memory`, which puts together :func:`simulator.cost.formulas.stage_params`,
:func:`param_state_bytes`, :func:`layer_activation_elems`, :func:`activation_bytes`,
:func:`in_flight_microbatches` and :func:`transient_bytes` over floats or numpy arrays (a
:class:`~simulator.graph.dims.Dims` of numbers or of columns, a remat policy or a column of them).

**Parameter state** (:func:`param_state_bytes`), per local parameter: bf16 weights (2 B),
gradients (``grad_dtype``: the gradient buffer the backward accumulates into, kept whole on
every rank), and the optimizer's fp32 master weights (4 B) and two Adam moments
(``state_dtype``) sharded by a distributed optimizer over every axis that replicates the
parameter: ``data x expert x seq`` for non-expert parameters, ``data x seq`` for routed experts
(:func:`simulator.cost.formulas.optimizer_shards`). With bf16 weights and fp32 gradients that is
Megatron-Core's ``6 + 12/d`` bytes per parameter (docs, "Distributed Optimizer"); FSDP has
already divided the local parameters by ``fsdp``.

**Activations** per token per layer (in units of the bf16 activation size, divided by ``t``
under sequence parallelism; Korthikanti et al. 2022 sec. 4, counted per stored tensor with flash
attention so no ``s^2`` term, and without dropout masks):

=========  =======================  ==============  ====================================
remat      attention block          dense MLP       MoE MLP
=========  =======================  ==============  ====================================
none       ``2D + (N+2K) Hd + N Hd``  ``2D + (g+1) F``  ``2D + kf (c D + (g+1) Fe) + (g+1) Fs``
selective  ``D + (N+2K) Hd``        ``D + g F``     ``D + kf (c D + g Fe) + g Fs``
full       ``D`` (layer input) per layer, plus one layer's ``none`` set while it is recomputed
=========  =======================  ==============  ====================================

``g`` = 2 for SwiGLU (gate, up), 1 for GELU; ``kf`` routed slots per token
(:func:`simulator.graph.layers.slots_per_token`); ``Fs`` the shared experts' hidden width (all
of them), run on the normed input already counted. ``c`` is the copies of ``D`` a routed slot
keeps (:func:`moe_slot_copies`): 1 with gather dispatch (Megatron-Core: the permuted expert
input), 2 with einsum dispatch (GShard / XLA: the expert input and the expert output the combine
einsum keeps). ``selective`` is meshcast's policy (attention core and elementwise ops
recomputed, matmul inputs kept), which keeps less than Megatron's selective recompute (the
attention core only: Korthikanti's ``34 s b h / t`` bytes). Without flash attention
(``flash_attention=False``) the ``none`` set also keeps the score matrices: ``N s stored / ab``
per token (:func:`simulator.graph.layers.unfused_score_bytes`; Korthikanti et al. 2022's
``5 a s^2 b`` bytes per layer at bf16), so a GPT layer keeps ``s b h (32 + 5 a s / h) / t``
bytes, Korthikanti's ``34 + 5 a s / h`` less its two dropout masks. The pipeline rank holding
the most micro-batches in flight (:func:`in_flight_microbatches`: rank 0 in 1F1B: ``min(pp, m)``;
Megatron's interleaved warm-up ``2 (pp - 1) + (v - 1) pp + 1`` chunks) sets the activation peak.

**Transient** (:func:`transient_bytes`): two gathered layers under FSDP, plus the larger of two
phases that never overlap in time: the last rank's logits while the loss is formed (from the LM
head's forward to its backward; :func:`logits_bytes`: fp32 logits and their gradient, or with
``fused_loss`` the bf16 logits alone, the fused loss writing its gradient in place) and, under
full remat, one layer's ``none`` set while it is recomputed (which starts only after the LM
head's backward has freed the logits).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np

from simulator.cost import formulas
from simulator.graph.dims import Dims
from simulator.graph.layers import slots_per_token, unfused_score_bytes
from simulator.specs.model import ModelSpec
from simulator.specs.sharding import REMAT_POLICIES


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device by term (floats for one job, numpy columns in the search)."""

    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    transient_bytes: float
    capacity_bytes: float

    @property
    def per_device_bytes(self) -> float:
        return (self.weights_bytes + self.gradients_bytes + self.optimizer_bytes
                + self.activations_bytes + self.transient_bytes)

    @property
    def fits(self) -> bool:
        return self.per_device_bytes <= self.capacity_bytes

    @property
    def headroom_bytes(self) -> float:
        return self.capacity_bytes - self.per_device_bytes

    def as_dict(self) -> dict[str, float | bool]:
        return {"weights_bytes": self.weights_bytes, "gradients_bytes": self.gradients_bytes,
                "optimizer_bytes": self.optimizer_bytes, "activations_bytes": self.activations_bytes,
                "transient_bytes": self.transient_bytes, "per_device_bytes": self.per_device_bytes,
                "capacity_bytes": self.capacity_bytes, "fits": self.fits}


def param_state_bytes(dense, expert, sharding, dense_shards, expert_shards, grad_bytes):
    """``(weights, gradients, optimizer)`` bytes of ``dense + expert`` local parameters: bf16
    weights (2 B), the gradient buffer (``grad_bytes``: Megatron-Core's DDP buffer, kept whole;
    fp32 unless the run reduces gradients in bf16), and per parameter fp32 master weights (4 B,
    if kept) plus two Adam moments of ``state_dtype``, divided by the optimizer's shards
    (:func:`~simulator.cost.formulas.optimizer_shards`). Megatron-Core docs ("Distributed
    Optimizer"): bf16 parameters and fp32 gradients cost ``6 + 12/d`` bytes per parameter."""
    per_param = formulas.optimizer_state_bytes_per_param(sharding.optimizer)
    n = dense + expert
    return (n * 2.0, n * grad_bytes,
            per_param * (dense / dense_shards + expert / expert_shards))


def moe_slot_copies(m: ModelSpec) -> int:
    """Copies of the model width ``D`` one routed (token, expert) slot keeps for the backward.

    Gather dispatch (Megatron-Core's token dispatchers): the permuted expert input only, the
    input of the first grouped GEMM. The router probabilities are applied inside the activation
    (``weighted_bias_swiglu_impl`` in ``TEGroupedMLP.forward``, megatron/core/transformer/moe/
    experts.py) and ``unpermute`` is called without probabilities (token_dispatcher.py), so the
    expert output is not kept; the dispatch/combine permutations and all-to-alls keep nothing.
    Einsum dispatch (GShard / XLA): the dispatched expert input and the expert output, which the
    combine einsum keeps to form the gradient of its combine weights."""
    return 2 if m.moe.dispatch == "einsum" else 1


def layer_activation_elems(m: ModelSpec, moe_layer: bool, remat: str, flash: bool = True,
                           s: int = 0, ab: float = 2.0) -> float:
    """Stored activation elements per token of one layer (before dividing by ``t``); without
    ``flash`` attention the ``none`` set adds the score matrices of an ``s``-token sequence
    (``ab`` bytes per activation element). The table in the module docstring."""
    D, hd, g = m.d_model, m.hd, 2 if m.ffn_kind == "swiglu" else 1
    qkv = (m.n_heads + 2 * m.kv_heads) * hd
    if remat == "full":
        return D
    keep = g + 1 if remat == "none" else g  # FFN hidden tensors kept: fc1 output (+ act output)
    if moe_layer:
        moe = m.moe
        kf, fe = slots_per_token(m), moe.expert_ffn_hidden
        shared = moe.n_shared_experts * (moe.shared_expert_ffn_hidden or fe)
        mlp = ((2 * D if remat == "none" else D) + kf * (moe_slot_copies(m) * D + keep * fe)
               + keep * shared)
    else:
        mlp = (2 * D if remat == "none" else D) + keep * m.ffn_hidden
    attn = (2 * D + qkv + m.n_heads * hd) if remat == "none" else (D + qkv)
    if remat == "none" and not flash:
        attn += m.n_heads * s * unfused_score_bytes(ab).stored / ab
    return attn + mlp


def activation_bytes(elems_per_token, T, t, ab, flight):
    """Stored activations of a rank: ``elems`` per token (its layers summed) over the ``T/t``
    tokens a device holds per micro-batch, ``ab`` bytes each, times the micro-batches in
    flight."""
    return elems_per_token * T / t * ab * flight


def logits_bytes(m: ModelSpec, T, t, fused=False, ab=2.0):
    """The last rank's LM-head output while the loss is formed, over its ``T`` tokens and the
    vocabulary shard ``V / t`` (``fused``: ``ShardingSpec.fused_loss``; ``ab``: bytes of the
    matmul-dtype activations, 2 for bf16):

    - unfused: ``2 T V / t * 4`` bytes, fp32 logits and their fp32 gradient. The loss runs on an
      fp32 copy: Megatron-LM ``vocab_parallel_cross_entropy(output.float(), labels)``
      (megatron/model/gpt_model.py, v2.6); Megatron-Core's unfused and ``native`` fused losses
      both call ``VocabParallelCrossEntropy.calculate_logits_max``, which casts
      ``vocab_parallel_logits.float()`` (megatron/core/tensor_parallel/cross_entropy.py);
      MaxText casts the logits to fp32 (base.yml ``cast_logits_to_fp32: true``) before
      ``max_utils.cross_entropy_with_logits`` over the whole vocabulary; AXLearn's
      ``loss.cross_entropy`` casts bf16 logits to fp32.
    - fused: ``T V / t * ab`` bytes, the logits alone. Transformer Engine's
      ``parallel_cross_entropy`` (Megatron-Core ``cross_entropy_loss_fusion=True`` with
      ``cross_entropy_fusion_impl="te"``, megatron/core/models/common/language_module/
      language_module.py) reads the bf16 logits a block at a time into fp32 registers, keeps only
      a per-token max / sum / target logit in fp32 (``T x 3 x 4`` bytes, not counted), and its
      backward kernel stores the gradient into the logits' own buffer in their dtype
      (transformer_engine/pytorch/triton/cross_entropy.py ``cross_entropy_backward_kernel``: "The
      multiplication is performed in-place on the tensor pointed by X_ptr")."""
    if fused:
        return T * m.vocab_size / t * ab
    return 2 * T * m.vocab_size / t * 4


def transient_bytes(m: ModelSpec, T, t, ab, last: bool, recompute_elems, gathered_params, wb,
                    fused_loss: bool = False):
    """Short-lived buffers on top of the stored activations: ``gathered_params`` x 2 layers of
    FSDP-gathered weights (current + prefetched, ``wb`` bytes each), plus the larger of the last
    rank's logits (:func:`logits_bytes`, fp32 or ``fused_loss`` in place on the ``ab``-byte
    logits) and one layer's un-rematerialised activations while
    it is recomputed (``recompute_elems`` per token; 0 without full remat). The two never
    coexist: the logits live from the LM head's forward to its backward, and the first layer
    recompute starts after that backward has turned them into the gradient of the last hidden
    state (1F1B and interleaved schedules run a micro-batch's loss and its LM-head backward
    back to back on the last rank)."""
    phase = recompute_elems * T / t * ab
    if last:
        phase = np.maximum(phase, logits_bytes(m, T, t, fused_loss, ab))
    return 2 * gathered_params * wb + phase


def in_flight_microbatches(rank, pp, m, interleaved, v):
    """Most forward passes (in units of a whole rank's layers) alive at once on pipeline rank
    ``rank`` of ``pp`` with ``m`` micro-batches; numbers or numpy columns.

    - ``pp = 1``: 1.
    - otherwise the warm-up's forwards plus one, at most ``m v``, in units of the rank's ``v``
      chunks (``v = 1`` for 1F1B): ``min(w + 1, m v) / v`` with ``w`` the warm-up of
      :func:`simulator.cost.formulas.warmup_forwards` (1F1B ``min(pp - r, m)``; interleaved
      ``min(2 (pp - r - 1) + (v - 1) pp + 1, m v) / v``).

    The peak of the live count as the schedule orders (:mod:`simulator.graph.pipeline`) run
    (tests/test_search_memory.py checks it against them)."""
    vv = np.where(np.logical_and(interleaved, v > 1), v, 1)
    chunks = np.minimum(formulas.warmup_forwards(rank, pp, m, vv) + 1, m * vv)
    return np.where(pp == 1, 1.0, chunks / vv)


def rank_memory(m: ModelSpec, s, d: Dims, kinds, first: bool, last: bool, remat, flight,
                capacity: float) -> MemoryEstimate:
    """Memory of one device of a pipeline rank holding layers ``kinds`` (one ``is_moe_layer``
    flag per layer, in order; the embedding if ``first``, the LM head if ``last``) with
    ``flight`` micro-batches alive (:func:`in_flight_microbatches`), under ``remat`` (a policy
    name, or a numpy column of policy codes into REMAT_POLICIES). ``s`` is the ShardingSpec
    (optimizer, dtypes, loss and attention switches), ``d`` the Dims (numbers, or numpy columns in the search). The terms of
    the module docstring: parameter state (:func:`param_state_bytes` of
    :func:`simulator.cost.formulas.stage_params`), activations (:func:`activation_bytes` of
    :func:`layer_activation_elems`) and :func:`transient_bytes` (two of the largest layer
    gathered under FSDP; under full remat one layer's ``none`` set recomputed)."""
    dense, expert = formulas.stage_params(m, d.t, d.e, d.fs, kinds, first, last)
    shards = formulas.optimizer_shards(s.distributed_optimizer, d.dp, d.e, d.cp)
    weights, grads, optimizer = param_state_bytes(dense, expert, s, *shards, d.gb)
    score = dict(flash=s.flash_attention, s=d.s, ab=d.ab)
    acts_tok = _by_remat(remat, lambda r: sum(layer_activation_elems(m, k, r, **score)
                                              for k in kinds))
    acts = activation_bytes(acts_tok, d.T, d.t, d.ab, flight)
    worst = max((layer_activation_elems(m, k, "none", **score) for k in kinds), default=0.0)
    recompute = _by_remat(remat, lambda r: worst if r == "full" else 0.0)
    gathered = 0.0
    if kinds:
        biggest = np.max([np.add(*formulas.layer_params(m, d.t, d.e, k)) for k in set(kinds)],
                         axis=0)
        gathered = np.where(d.fs > 1, biggest, 0.0)
    transient = transient_bytes(m, d.T, d.t, d.ab, last, recompute, gathered, d.wb, s.fused_loss)
    return MemoryEstimate(weights, grads, optimizer, acts, transient, capacity)


def _by_remat(remat, value_of):
    """``value_of(policy)`` for a remat policy name, or per entry of a numpy column of policy
    codes (indices into :data:`~simulator.specs.sharding.REMAT_POLICIES`)."""
    if isinstance(remat, str):
        return value_of(remat)
    return np.choose(remat, [value_of(p) for p in REMAT_POLICIES])


def estimate_memory(job, stages: list[tuple[list[int], bool, bool]]) -> MemoryEstimate:
    """The worst stage's memory; ``stages`` lists (layers, first, last) per pipeline rank."""
    best = None
    for rank, (layers, first, last) in enumerate(stages):
        est = _stage_memory(job, rank, layers, first, last)
        if best is None or est.per_device_bytes > best.per_device_bytes:
            best = est
    return best


def _stage_memory(job, rank: int, layers: list[int], first: bool, last: bool) -> MemoryEstimate:
    s, d = job.sharding, Dims.from_job(job)
    flight = in_flight_microbatches(rank, d.pp, job.microbatches,
                                    s.pipeline_schedule == "interleaved", s.virtual_stages)
    est = rank_memory(job.model, s, d, [job.model.is_moe_layer(i) for i in layers], first, last,
                      s.remat, flight, job.hardware.chip.hbm_capacity_bytes.value)
    return MemoryEstimate(*(float(x) for x in astuple(est)))
