"""Memory per device: weights, gradients, optimizer state, activations under the remat policy.

Activations per token per layer (in units of the bf16 activation size, divided by ``t`` under
sequence parallelism; Korthikanti et al. 2022 sec. 4, counted per stored tensor with flash
attention so no ``s^2`` term):

==========  =====================================  ==========================================
remat       attention block                         MLP (MoE: per slot ``kf`` of the expert part)
==========  =====================================  ==========================================
none        ``2D + (N+2K) Hd + N Hd``               ``2D + (g+1) F``; MoE ``2D + kf (3D + (g+1) Fe)``
selective   ``D + (N+2K) Hd``                       ``D + g F``;      MoE ``D + kf (2D + g Fe)``
full        ``D`` (layer input) per layer, plus one layer's ``none`` set while recomputing
==========  =====================================  ==========================================

``g`` = 2 for SwiGLU (gate, up), 1 for GELU. Without flash attention (``flash_attention=False``)
the ``none`` set also keeps the score matrices: ``N s stored / ab`` per token
(:func:`simulator.graph.layers.unfused_score_bytes`; Korthikanti et al. 2022's ``5 a s^2 b`` bytes
per layer at bf16); selective recompute recomputes them, as that paper's selective recompute
does. The pipeline rank holding the most micro-batches in
flight (rank 0 in 1F1B: ``min(pp, m)``) sets the activation peak.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.graph.dims import Dims
from simulator.graph.layers import (
    layer_params_local,
    slots_per_token,
    stage_params_local,
    unfused_score_bytes,
)
from simulator.pipeline import interleaved_order, one_f_one_b_order
from simulator.specs.model import ModelSpec


@dataclass(frozen=True)
class MemoryEstimate:
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


def layer_activation_elems(m: ModelSpec, moe_layer: bool, remat: str, flash: bool = True,
                           s: int = 0, ab: float = 2.0) -> float:
    """Stored activation elements per token of one layer (before dividing by ``t``); without
    ``flash`` attention the ``none`` set adds the score matrices of an ``s``-token sequence
    (``ab`` bytes per activation element)."""
    D, hd, g = m.d_model, m.hd, 2 if m.ffn_kind == "swiglu" else 1
    qkv = (m.n_heads + 2 * m.kv_heads) * hd
    if remat == "full":
        return D
    if moe_layer:
        kf, fe = slots_per_token(m), m.moe.expert_ffn_hidden
        mlp = (2 * D + kf * (3 * D + (g + 1) * fe)) if remat == "none" else (D + kf * (2 * D + g * fe))
    else:
        f = m.ffn_hidden
        mlp = (2 * D + (g + 1) * f) if remat == "none" else (D + g * f)
    attn = (2 * D + qkv + m.n_heads * hd) if remat == "none" else (D + qkv)
    if remat == "none" and not flash:
        attn += m.n_heads * s * unfused_score_bytes(ab).stored / ab
    return attn + mlp


def in_flight_microbatches(rank: int, pp: int, m: int, schedule: str, v: int) -> float:
    """Most forward passes (in units of a whole rank's layers) alive at once on ``rank``."""
    if pp == 1:
        return 1.0
    m = min(m, 4 * pp * v)  # the warm-up sets the peak; later micro-batches only repeat it
    order = interleaved_order(rank, pp, m, v) if schedule == "interleaved" and v > 1 \
        else one_f_one_b_order(rank, pp, m)
    live = peak = 0
    for kind, _, _ in order:
        live += 1 if kind == "F" else -1
        peak = max(peak, live)
    return peak / (v if schedule == "interleaved" else 1)


def estimate_memory(job, stages: list[tuple[list[int], bool, bool]]) -> MemoryEstimate:
    """The worst stage's memory; ``stages`` lists (layers, first, last) per pipeline rank."""
    best = None
    for rank, (layers, first, last) in enumerate(stages):
        est = _stage_memory(job, rank, layers, first, last)
        if best is None or est.per_device_bytes > best.per_device_bytes:
            best = est
    return best


def _stage_memory(job, rank: int, layers: list[int], first: bool, last: bool) -> MemoryEstimate:
    m, s, d = job.model, job.sharding, Dims.from_job(job)
    n = stage_params_local(m, d, layers, first, last)
    zero = job.axis("data") if s.distributed_optimizer else 1
    state = 4 if s.optimizer.state_dtype == "fp32" else 2
    weights = n * 2.0
    grads = n * d.gb
    optimizer = n * ((4 if s.optimizer.master_weights else 0) + 2 * state) / zero
    remat = s.remat
    score = dict(flash=s.flash_attention, s=d.s, ab=d.ab)
    acts_tok = sum(layer_activation_elems(m, m.is_moe_layer(i), remat, **score) for i in layers)
    flight = in_flight_microbatches(rank, d.pp, job.microbatches, s.pipeline_schedule,
                                    s.virtual_stages)
    acts = acts_tok * d.T / d.t * d.ab * flight
    transient = 0.0
    if remat == "full" and layers:
        worst = max(layer_activation_elems(m, m.is_moe_layer(i), "none", **score) for i in layers)
        transient += worst * d.T / d.t * d.ab
    if last:
        transient += 2 * d.T * m.vocab_size / d.t * 4  # fp32 logits and their gradient
    if d.fs > 1 and layers:
        biggest = max(sum(layer_params_local(m, d, m.is_moe_layer(i))) for i in layers)
        transient += 2 * biggest * d.wb  # gathered weights: current + prefetched layer
    return MemoryEstimate(weights, grads, optimizer, acts, transient,
                          job.hardware.chip.hbm_capacity_bytes.value)
