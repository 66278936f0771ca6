"""Forward templates of one transformer layer (attention + dense MLP or MoE), per device.

Tensor parallelism is Megatron-style with sequence parallelism (Korthikanti et al. 2022): inputs
are sharded over ``model`` along the sequence; an all-gather precedes each block and a
reduce-scatter follows it. MoE follows Du et al. 2024 / AXLearn 3D sharding: tokens split over
(data, expert) groups, experts over ``expert``, expert FFN over ``model``; an all-to-all over
``expert`` dispatches and combines. Byte conventions follow :mod:`simulator.cost.collectives`.
"""

from __future__ import annotations

from typing import NamedTuple

from simulator.cost.collectives import Collective
from simulator.cost.formulas import dedup_routing
from simulator.graph.dims import Dims
from simulator.graph.ops import HOST, Op, OpKind
from simulator.specs.model import ModelSpec

AG, RS, AR, A2A = (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE,
                   Collective.ALL_TO_ALL)


class Template:
    """An ordered list of ops; each helper appends one op depending on the previous by default."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def _add(self, op: Op, deps: list[str] | None) -> str:
        if deps is None:
            deps = [self.ops[-1].name] if self.ops else []
        op.deps = [d for d in deps if d]
        self.ops.append(op)
        return op.name

    def mm(self, name, m, k, n, d: Dims, deps=None, groups: float = 1.0) -> str:
        """GEMM ``[m, k] x [k, n]``: flops ``2mkn``; bytes ``(mk + mn) * ab + kn * wb``.

        ``groups`` > 1 splits it into that many equal GEMMs (grouped expert GEMM) for efficiency.
        """
        flops = 2.0 * m * k * n
        nbytes = (m * k + m * n) * d.ab + k * n * d.wb
        return self._add(Op(name, OpKind.MATMUL, flops=flops, nbytes=nbytes,
                            unit_flops=flops / max(groups, 1.0), shape=(m, k, n)), deps)

    def ew(self, name, nbytes, deps=None, gather: bool = False, bwd_nbytes: float = 0.0) -> str:
        return self._add(Op(name, OpKind.ELEMENTWISE, nbytes=nbytes, gather=gather,
                            bwd_nbytes=bwd_nbytes), deps)

    def coll(self, name, kind, axis, nbytes, stream, deps=None, dedup=None) -> str:
        return self._add(Op(name, OpKind.COLLECTIVE, stream=stream, nbytes=nbytes, collective=kind,
                            axis=axis, dedup=dedup), deps)


class ScoreBytes(NamedTuple):
    """HBM bytes per element of the ``[b, N/t, s_q, s_k]`` attention score matrix when it is
    materialised (no flash attention); see :func:`unfused_score_bytes`."""

    gemm_fwd: float  # QK^T writes S, P'V reads P'
    softmax_fwd: float  # scale-mask-softmax and dropout
    softmax_bwd: float  # their backward
    stored: float  # kept for the backward (unless recomputed)


def unfused_score_bytes(ab) -> ScoreBytes:
    """Bytes per score element of the attention core of Megatron-LM before flash attention
    (``CoreAttention``: baddbmm ``S = QK^T``, fused scale-mask-softmax ``P``, attention dropout
    ``P'`` with a 1-byte mask, bmm ``P'V``), activations ``ab`` bytes each:

    - forward: ``QK^T`` writes ``S`` (``ab``), ``P'V`` reads ``P'`` (``ab``): ``gemm_fwd = 2 ab``;
      softmax reads ``S`` and writes ``P`` (``2 ab``), dropout reads ``P``, writes ``P'`` and
      the mask (``2 ab + 1``): ``softmax_fwd = 4 ab + 1``;
    - backward: ``dP' = dO V^T`` writes, ``dV = P'^T dO`` reads ``P'``, ``dQ = dS K`` and
      ``dK = dS^T Q`` read ``dS``: ``4 ab`` (twice ``gemm_fwd``); dropout backward reads
      ``dP'`` and the mask and writes ``dP`` (``2 ab + 1``), softmax backward reads ``dP`` and
      ``P`` and writes ``dS`` (``3 ab``): ``softmax_bwd = 5 ab + 1``;
    - stored for the backward: ``P``, the mask and ``P'``: ``stored = 2 ab + 1``, Korthikanti et
      al. 2022 sec. 4.1's ``5 a s^2 b`` bytes per layer at bf16 (softmax output ``2 a s^2 b``,
      dropout mask ``a s^2 b``, dropout output ``2 a s^2 b``).

    At bf16 that is 13 bytes per score element forward and 19 backward. Attention dropout is
    counted: Megatron-LM's default (``--attention-dropout 0.1``), the runs of those papers.
    """
    return ScoreBytes(2 * ab, 4 * ab + 1, 5 * ab + 1, 2 * ab + 1)


def _tp_overlapped(d: Dims) -> bool:
    return bool(d.tp_overlap) and d.t > 1


def attention_block(tpl: Template, m: ModelSpec, d: Dims, prev: str | None) -> str:
    """Norm, [AG model], QKV, [AG seq of K,V], flash attention, out-proj, [RS model], residual.

    Causal attention FLOPs ``4 * T * s * (N/t) * Hd / 2`` (QK^T and AV, half masked).
    Without flash attention (``not d.flash``) the ``E = T * s * N/t`` score elements are
    materialised (:func:`unfused_score_bytes`): the ``attn`` op computes the full square
    (``4 * T * s * (N/t) * Hd``, no masked half skipped) and moves ``gemm_fwd * E`` more bytes,
    its backward exactly twice the forward (four batched GEMMs, nothing recomputed); an
    ``attn_softmax`` op (softmax and dropout) moves ``softmax_fwd * E`` bytes forward and
    ``softmax_bwd * E`` backward.
    With TP comm overlap (``d.tp_overlap``) the all-gather runs beside the QKV GEMM and the
    reduce-scatter beside the out-projection (Megatron/TE pipeline them chunk by chunk), so each
    pair costs about ``max(GEMM, collective)``; their consumers wait for both.
    The ``attn`` op carries the kernel's shape for the attention curve's shape factor
    (:func:`simulator.cost.compute.attention_shape_factor`): head dim ``Hd`` and key/value length
    ``s``, the whole sequence also under context parallelism, since ``cp_kv_ag`` gathers every
    K and V and the local ``s / cp`` queries attend to all of them (as the FLOPs count it).
    """
    T, t, D, hd = d.T, d.t, m.d_model, m.hd
    ov = _tp_overlapped(d)
    norm = tpl.ew("attn_norm", 2 * T * D / t * d.ab, deps=[prev] if prev else [])
    ag = tpl.coll("attn_ag", AG, "model", T * D * d.ab, "tp") if t > 1 else ""
    qkv = tpl.mm("qkv", T, D, (m.n_heads + 2 * m.kv_heads) * hd / t, d, deps=[norm] if ov else None)
    deps = [qkv, ag] if ov else [qkv]
    if d.cp > 1:
        deps.append(tpl.coll("cp_kv_ag", AG, "seq", d.b * d.s * 2 * m.kv_heads * hd / t * d.ab,
                            "cp", deps=[qkv]))
    flops = 4.0 * T * d.s * (m.n_heads / t) * hd * 0.5
    io = T * (2 * m.n_heads + 2 * m.kv_heads) * hd / t * d.ab
    if d.flash:
        attn = tpl._add(Op("attn", OpKind.ATTENTION, flops=flops, nbytes=io, seq=d.s,
                          head_dim=hd), deps)
    else:
        e, sb = T * d.s * m.n_heads / t, unfused_score_bytes(d.ab)
        tpl._add(Op("attn", OpKind.ATTENTION, flops=2 * flops, nbytes=io + sb.gemm_fwd * e,
                   bwd_scale=2.0, seq=d.s, head_dim=hd), deps)
        attn = tpl._add(Op("attn_softmax", OpKind.ELEMENTWISE, nbytes=sb.softmax_fwd * e,
                          bwd_scale=sb.softmax_bwd / sb.softmax_fwd), None)
    out = tpl.mm("attn_out", T, m.n_heads * hd / t, D, d)
    if t > 1:
        rs = tpl.coll("attn_rs", RS, "model", T * D * d.ab, "tp", deps=[attn] if ov else None)
        if ov:
            return tpl.ew("attn_res", 3 * T * D / t * d.ab, deps=[out, rs])
    return tpl.ew("attn_res", 3 * T * D / t * d.ab)


def _ffn(tpl: Template, pre: str, m: ModelSpec, d: Dims, tokens: float, hidden: int,
         groups: float = 1.0, deps=None) -> str:
    """``in`` (gate+up for SwiGLU), activation, ``out`` over ``tokens`` rows, hidden split by t."""
    g = 2 if m.ffn_kind == "swiglu" else 1
    tpl.mm(f"{pre}_in", tokens, m.d_model, g * hidden / d.t, d, deps=deps, groups=groups)
    tpl.ew(f"{pre}_act", tokens * hidden / d.t * d.ab * (g + 1))
    return tpl.mm(f"{pre}_out", tokens, hidden / d.t, m.d_model, d, groups=groups)


def dense_mlp(tpl: Template, m: ModelSpec, d: Dims, prev: str) -> str:
    """Norm, [AG model], FFN, [RS model], residual; with TP comm overlap the all-gather runs
    beside the first GEMM and the reduce-scatter beside the second (as in attention_block)."""
    T, t, D = d.T, d.t, m.d_model
    ov = _tp_overlapped(d)
    norm = tpl.ew("mlp_norm", 2 * T * D / t * d.ab, deps=[prev])
    ag = tpl.coll("mlp_ag", AG, "model", T * D * d.ab, "tp") if t > 1 else ""
    out = _ffn(tpl, "mlp", m, d, T, m.ffn_hidden, deps=[norm] if ov else None)
    if ov:
        tpl.ops[-2].deps.append(ag)  # the activation needs the gathered input's GEMM and the gather
        rs = tpl.coll("mlp_rs", RS, "model", T * D * d.ab, "tp", deps=[tpl.ops[-2].name])
        return tpl.ew("mlp_res", 3 * T * D / t * d.ab, deps=[out, rs])
    if t > 1:
        tpl.coll("mlp_rs", RS, "model", T * D * d.ab, "tp")
    return tpl.ew("mlp_res", 3 * T * D / t * d.ab)


def slots_per_token(m: ModelSpec) -> float:
    """Expert slots per token that set the pace: ``capacity_factor`` (buffers padded to capacity
    ``C = cf * S_g / E``, so imbalance only drops tokens), or dropless ``top_k * load_imbalance``
    (the busiest expert's rank processes ``imbalance`` times the mean)."""
    moe = m.moe
    if moe.dropless:
        return moe.top_k * moe.load_imbalance
    return moe.capacity_factor


def moe_mlp(tpl: Template, m: ModelSpec, d: Dims, prev: str) -> str:
    """Router, dispatch, A2A(expert), [AG model], expert FFN, [RS model], A2A, combine.

    Each device routes its ``T/t`` sequence-parallel tokens. Einsum dispatch (GShard/AXLearn)
    costs ``2 * (T/t) * E * C * D = 2 * (T/t) * cf * S_g * D`` FLOPs; gather dispatch is a
    memory-bound permutation. After the all-to-all a device holds ``(T/t) * kf`` slots of its
    ``E/e`` experts, gathered over ``model`` to ``T * kf`` rows for the model-sharded expert FFN.
    Shared experts run beside the all-to-all path (they only need the normed input).
    With EP comm overlap (``d.ep_overlap``, Megatron's --overlap-moe-expert-parallel-comm: one
    micro-batch's all-to-alls run under another's compute) the expert FFN and the combine do not
    wait for the all-to-alls; they still occupy the expert links (the stage's per-axis link
    floor), so a micro-batch costs about ``max(compute, all-to-all)``.
    With ``d.dedup`` (DeepEP/HybridEP) both all-to-alls are the deduplicated dispatch of
    :func:`simulator.cost.collectives.dedup_shares` on the same buffer.
    """
    topk = _router(tpl, m, d, prev)
    host = _host_issue(tpl, m, d, topk)
    disp, a2a = _dispatch(tpl, m, d, topk)
    ov = _ep_overlapped(d)
    # Program order puts the shared experts right after the dispatch all-to-all is issued, so
    # their compute overlaps the all-to-all (they only need the normed input).
    ends = [_shared_experts(tpl, m, d)] if m.moe.n_shared_experts else []
    done = _expert_ffn(tpl, m, d, disp if ov else a2a)
    ends.append(_combine(tpl, m, d, done, host))
    if host:  # the ops it issues: dispatch to combine, shared experts aside (captured)
        issued = [op for op in tpl.ops[tpl.ops.index(host) + 1:]
                  if not op.name.startswith("shared")]
        host.host_s = len(issued) * d.host_s
    tl = d.T / d.t
    return tpl.ew("moe_res", 3 * tl * m.d_model * d.ab, deps=ends)


def _ep_overlapped(d: Dims) -> bool:
    return bool(d.ep_overlap) and d.e > 1


def _a2a_bytes(m: ModelSpec, d: Dims) -> float:
    """Bytes of one expert all-to-all (dispatch or combine): the ``(T/t) * kf`` routed slots of
    width ``D``."""
    return d.T / d.t * slots_per_token(m) * m.d_model * d.ab


def _einsum_slots(m: ModelSpec, d: Dims) -> float:
    """``E * C = kf * min(S_g, T)``: the expert-capacity slots of the dispatch/combine einsum."""
    return slots_per_token(m) * min(m.moe.group_size_tokens, d.T)


def _router(tpl: Template, m: ModelSpec, d: Dims, prev: str) -> str:
    """Norm, router GEMM ``[T/t, D] x [D, E]`` (plus ``router_flops_per_token``), top-k over
    fp32 scores (``3 (T/t) E * 4`` bytes); returns the top-k op."""
    moe, tl, D = m.moe, d.T / d.t, m.d_model
    tpl.ew("moe_norm", 2 * tl * D * d.ab, deps=[prev])
    tpl.mm("router", tl, D, moe.n_experts, d)
    if moe.router_flops_per_token:
        tpl.ops[-1].flops += moe.router_flops_per_token * tl
    return tpl.ew("router_topk", 3 * tl * moe.n_experts * 4)


def _dispatch(tpl: Template, m: ModelSpec, d: Dims, topk: str) -> tuple[str, str]:
    """The dispatch (an einsum ``[T/t, E C] x [E C, D]``, or a gather of ``2 (T/t) kf D ab``
    bytes) and its all-to-all over ``expert``; returns both names."""
    tl, D = d.T / d.t, m.d_model
    if m.moe.dispatch == "einsum":
        disp = tpl.mm("dispatch", tl, _einsum_slots(m, d), D, d, deps=[topk])
    else:
        disp = tpl.ew("dispatch", 2 * tl * slots_per_token(m) * D * d.ab, gather=True,
                      deps=[topk])
    a2a = tpl.coll("a2a_dispatch", A2A, "expert", _a2a_bytes(m, d), "ep", dedup=_dedup(m, d))
    return disp, a2a


def _dedup(m: ModelSpec, d: Dims) -> tuple[int, ...] | None:
    return dedup_routing(m.moe) if d.dedup else None


def _shared_experts(tpl: Template, m: ModelSpec, d: Dims) -> str:
    """[AG model], the shared experts' FFN (hidden ``n_shared * F_s``) over all ``T`` tokens
    from the normed input, [RS model]; returns the last op."""
    moe, T, D = m.moe, d.T, m.d_model
    hidden = moe.n_shared_experts * (moe.shared_expert_ffn_hidden or moe.expert_ffn_hidden)
    first = ["moe_norm"]
    if d.t > 1:
        first = [tpl.coll("shared_ag", AG, "model", T * D * d.ab, "tp", deps=first)]
    _ffn(tpl, "shared", m, d, T, hidden, deps=first)
    if d.t > 1:
        tpl.coll("shared_rs", RS, "model", T * D * d.ab, "tp")
    return tpl.ops[-1].name


def _expert_ffn(tpl: Template, m: ModelSpec, d: Dims, after: str) -> str:
    """[AG model] of the ``T kf`` routed rows, the grouped expert FFN (``E/e`` GEMMs),
    [RS model]; returns the last op."""
    moe, rows = m.moe, d.T * slots_per_token(m)
    if d.t > 1:
        after = tpl.coll("moe_ag", AG, "model", rows * m.d_model * d.ab, "tp", deps=[after])
    _ffn(tpl, "expert", m, d, rows, moe.expert_ffn_hidden, groups=max(moe.n_experts / d.e, 1.0),
         deps=[after])
    if d.t > 1:
        tpl.coll("moe_rs", RS, "model", rows * m.d_model * d.ab, "tp")
    return tpl.ops[-1].name


def _combine(tpl: Template, m: ModelSpec, d: Dims, done: str, host: Op | None) -> str:
    """The combine all-to-all over ``expert``, then the combine (einsum or scatter, as the
    dispatch); with EP comm overlap the combine waits for the expert FFN (``done``) only, and
    for the host's issue of a dropless layer when it runs eagerly."""
    tl, D = d.T / d.t, m.d_model
    a2a = tpl.coll("a2a_combine", A2A, "expert", _a2a_bytes(m, d), "ep", dedup=_dedup(m, d))
    after = [done] if _ep_overlapped(d) else [a2a]
    if host:
        after.append(host.name)
    if m.moe.dispatch == "einsum":
        return tpl.mm("combine", tl, _einsum_slots(m, d), D, d, deps=after)
    return tpl.ew("combine", 2 * tl * slots_per_token(m) * D * d.ab, gather=True, deps=after)


def _host_issue(tpl: Template, m: ModelSpec, d: Dims, sync: str) -> Op | None:
    """Dropless MoE run eagerly (``d.host_s`` > 0): the router's token counts go to the host
    (a sync), which then issues the data-dependent ops one by one (sizes known only now, so no
    CUDA graph holds them). A HOST op beside the device, starting at the sync and lasting
    ``n_ops * host_s``, must end before the combine: that part takes
    ``max(device time, n_ops * host_s)`` (Megatron's dropless all-to-all / flex dispatchers)."""
    if not d.host_s or not m.moe.dropless:
        return None
    op = Op("moe_host", OpKind.HOST, stream=HOST)
    tpl._add(op, [sync])
    return op


def layer_template(m: ModelSpec, d: Dims, moe_layer: bool) -> list[Op]:
    """The forward ops of one layer, in program order; the last op is the layer output."""
    tpl = Template()
    prev = attention_block(tpl, m, d, None)
    (moe_mlp if moe_layer else dense_mlp)(tpl, m, d, prev)
    return tpl.ops


def embedding_ops(m: ModelSpec, d: Dims) -> list[Op]:
    """Token embedding lookup (vocab-parallel): a gather of ``T * D / t`` rows (its backward a
    scatter-add into the dense ``V/t x D`` gradient table, whose bytes it adds), then
    [RS model]: each model rank holds rows of ``V/t`` tokens only, so the ``[T, D]`` partial
    lookups are summed and scattered to the sequence-parallel layout (Megatron's
    VocabParallelEmbedding + reduce-scatter to the sequence-parallel region)."""
    tpl = Template()
    tpl.ew("embed", 2 * d.T * m.d_model / d.t * d.ab, gather=True,
          bwd_nbytes=m.vocab_size / d.t * m.d_model * d.gb)  # the dense table gradient
    if d.t > 1:
        tpl.coll("embed_rs", RS, "model", d.T * m.d_model * d.ab, "tp")
    return tpl.ops


def head_ops(m: ModelSpec, d: Dims, prev: str) -> list[Op]:
    """Final norm, [AG model], vocab-parallel LM head ``[T, D] x [D, V/t]``, fp32 softmax loss."""
    tpl = Template()
    T, t, D = d.T, d.t, m.d_model
    tpl.ew("final_norm", 2 * T * D / t * d.ab, deps=[prev])
    if t > 1:
        tpl.coll("head_ag", AG, "model", T * D * d.ab, "tp")
    tpl.mm("lm_head", T, D, m.vocab_size / t, d)
    tpl.ew("loss", 3 * T * m.vocab_size / t * 4)
    return tpl.ops


__all__ = ["layer_template", "unfused_score_bytes", "ScoreBytes", "embedding_ops", "head_ops",
           "slots_per_token"]
