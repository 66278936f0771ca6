"""Collective cost: the algorithm a real library runs on each network level.

Notation (scaling-book style): a group of ``f`` devices along one level, per-device per-direction
bandwidth ``W`` (times the level's achieved efficiency), per-step latency ``a``.
Byte conventions: all-gather takes the *gathered* (output) size ``S`` per device; reduce-scatter
the *input* size ``S``; all-reduce the buffer size ``S``; all-to-all the per-device buffer ``B``
(sent plus kept); permute the bytes each device sends.

Summary (one level, large messages):

=================  =========================================  ================================
collective         switch / fat tree (ring, NCCL)             torus dimension
=================  =========================================  ================================
all-gather         (f-1)/f * S / W + (f-1) a                  ring: (f-1)/f * S / (2W) + (f-1)/2 a
                                                              line: (f-1)/f * S / W + (f-1) a
reduce-scatter     same as all-gather                         same as all-gather
all-reduce         2 x all-gather                             2 x all-gather
all-to-all         (f-1)/f * B / W + a                        ring: B * sum_d min(d,f-d) / (2 f W)
                                                              line: floor(f/2) ceil(f/2) B / (f W)
permute            S / W + a                                  S / W + a
=================  =========================================  ================================

A level may carry per-kind efficiency and latency (calibration measures all-to-all apart from
ring all-reduce); ``collective_time`` applies them before the formulas above.

Across levels (an axis spanning e.g. NVLink x InfiniBand) the collective is hierarchical (NCCL
tree/2D, Thakur et al. 2005; Sanders et al. 2009): all-gather runs the outermost level first on
the smallest data, reduce-scatter the innermost first, all-reduce = reduce-scatter + all-gather.
A direct all-to-all drives every level at once; the busiest level sets the pace.

Sources: Patarasuk & Yuan 2009 (bandwidth-optimal ring all-reduce); Austin et al., "How to Scale
Your Model" (JAX scaling book, 2025), ch. "All About Sharded Matmuls" (all-reduce = 2 x all-gather,
bidirectional rings, all-to-all on a torus).

Deduplicated expert dispatch (DeepEP / HybridEP, Megatron's flex dispatcher): a token routed to
``k`` of ``E`` experts crosses a level once per destination *block* it hits, not once per expert.
At level ``j`` of an expert group placed as ``f_0 x f_1 x ...`` (innermost first) a block is what
sits below that level: one device at the innermost level, one node above it, holding
``E_j = E / prod_{i>=j} f_i`` experts. With the ``k`` experts drawn uniformly (force-balanced
routing), a token hits a given other block with ``P_j = 1 - C(E - E_j, k) / C(E, k)``, so a device
sends ``(f_j - 1) P_j S`` bytes across level ``j`` for ``S`` bytes per token copy, against
``(f_j - 1)/f_j k S`` for the plain all-to-all: the plain formula runs on the buffer scaled by
``f_j P_j / k``. (DeepSeek-V3 with EP 32 over 4 nodes of 8: ``P = 0.90``, the fabric carries 0.45
of the plain bytes. The NVLink forwarding of tokens that arrived over the fabric is not counted.)
Group-limited routing (DeepSeek's ``n_group G`` / ``topk_group M``: a token's experts come from
at most ``M`` of ``G`` groups of ``g = E / G`` consecutive experts; node-limited routing when a
group is a node) changes ``P_j`` (:func:`dedup_block_hit`): the token picks ``M`` groups, then
its ``k`` experts uniformly among their ``M g``.
Sources: DeepSeek-V3 technical report (arXiv 2412.19437) sec. 3.2.2 (node-limited routing, at
most 4 nodes per token) and its config (n_group 8, topk_group 4); DeepEP README.
"""

from __future__ import annotations

import math
from enum import Enum

from simulator.cost.topology import AxisPart


class Collective(str, Enum):
    ALL_GATHER = "all_gather"
    REDUCE_SCATTER = "reduce_scatter"
    ALL_REDUCE = "all_reduce"
    ALL_TO_ALL = "all_to_all"
    PERMUTE = "permute"


def ring_gather_time(size_bytes: float, f: int, bw: float, latency: float) -> float:
    """Unidirectional ring all-gather (or reduce-scatter): ``(f-1)/f * S / W + (f-1) a``."""
    if f <= 1:
        return 0.0
    return (f - 1) / f * size_bytes / bw + (f - 1) * latency


def bidir_ring_gather_time(size_bytes: float, f: int, bw: float, latency: float) -> float:
    """Bidirectional ring on a wrapped torus dimension: halves travel each way.

    ``(f-1)/f * S / (2W) + (f-1)/2 * a`` (scaling book: a bidirectional ring doubles bandwidth).
    """
    if f <= 1:
        return 0.0
    return (f - 1) / f * size_bytes / (2 * bw) + (f - 1) / 2 * latency


def gather_time_on(part: AxisPart, size_bytes: float) -> float:
    """All-gather of ``S`` output bytes over one level part."""
    lv = part.level
    bw = lv.effective_bandwidth
    if lv.kind == "torus" and part.wraps and part.factor > 2:
        return bidir_ring_gather_time(size_bytes, part.factor, bw, lv.latency_s)
    return ring_gather_time(size_bytes, part.factor, bw, lv.latency_s)


def all_to_all_time_on(part: AxisPart, buffer_bytes: float) -> float:
    """All-to-all of a per-device buffer ``B`` over one level part.

    switch / fat tree (direct, full bisection): ``(f-1)/f * B / W + a``.
    torus ring (wrapped): total chunk-hops ``B * sum_{d=1}^{f-1} min(d, f-d)`` over ``2f`` directed
    links: ``B * H / (2 f W)`` (= ``B f / (8W)`` for even f) + ``floor(f/2) a``.
    torus line (no wrap): the middle cut carries ``floor(f/2) ceil(f/2) B / f`` each way over one
    link + ``(f-1) a``.
    """
    f = part.factor
    if f <= 1:
        return 0.0
    lv = part.level
    bw = lv.effective_bandwidth
    if lv.kind != "torus":
        return (f - 1) / f * buffer_bytes / bw + lv.latency_s
    if part.wraps and f > 2:
        hops = sum(min(d, f - d) for d in range(1, f))
        return buffer_bytes * hops / (2 * f * bw) + (f // 2) * lv.latency_s
    return (f // 2) * math.ceil(f / 2) * buffer_bytes / (f * bw) + (f - 1) * lv.latency_s


def all_gather_time(parts: tuple[AxisPart, ...], size_bytes: float) -> float:
    """Hierarchical all-gather: outermost level first on ``S * prod(f_done) / F`` bytes."""
    total_f = math.prod(p.factor for p in parts)
    t, done = 0.0, 1
    for p in reversed(parts):
        done *= p.factor
        t += gather_time_on(p, size_bytes * done / total_f)
    return t


def reduce_scatter_time(parts: tuple[AxisPart, ...], size_bytes: float) -> float:
    """Hierarchical reduce-scatter: innermost level first, each stage on ``S / prod(f_done)``."""
    t, done = 0.0, 1
    for p in parts:
        t += gather_time_on(p, size_bytes / done)
        done *= p.factor
    return t


def all_reduce_time(parts: tuple[AxisPart, ...], size_bytes: float) -> float:
    """All-reduce = reduce-scatter + all-gather (so 2 x all-gather on one level)."""
    return reduce_scatter_time(parts, size_bytes) + all_gather_time(parts, size_bytes)


def all_to_all_time(parts: tuple[AxisPart, ...], buffer_bytes: float,
                    shares: tuple[float, ...] | None = None) -> float:
    """Direct all-to-all across levels: the busiest level's transfer plus every level's latency.
    ``shares`` scales the buffer per level (the deduplicated dispatch's :func:`dedup_shares`)."""
    if not parts:
        return 0.0
    lat = sum(p.level.latency_s for p in parts if p.factor > 1)
    shares = shares or (1.0,) * len(parts)
    busiest = max(all_to_all_time_on(p, buffer_bytes * x) - p.level.latency_s
                  for p, x in zip(parts, shares))
    return busiest + lat


def _miss(pool: int, avoid: int, k: int) -> float:
    """``C(pool - avoid, k) / C(pool, k)``: chance ``k`` distinct draws from ``pool`` avoid a set
    of ``avoid``."""
    miss = 1.0
    for i in range(k):
        miss *= max(pool - avoid - i, 0) / (pool - i)
    return miss


def dedup_block_hit(n_experts: int, top_k: int, block_experts: float, groups: int = 1,
                    groups_per_token: int | None = None) -> float:
    """Chance a token's ``k`` distinct experts include at least one of a block's ``E_b``.

    Unlimited routing (``k`` drawn uniformly from ``E``): ``P = 1 - C(E - E_b, k) / C(E, k)``.
    Group-limited (``M`` of ``G`` groups of ``g = E/G`` experts, then ``k`` uniformly among the
    ``M g`` chosen): a block inside one group (``E_b <= g``) is hit with
    ``(M/G) (1 - C(M g - E_b, k) / C(M g, k))``; a block of ``b = E_b / g`` whole groups with
    ``sum_j H(j) (1 - C((M - j) g, k) / C(M g, k))``, ``H(j) = C(b, j) C(G - b, M - j) / C(G, M)``
    the chance ``j`` of its groups are chosen. Blocks that do not align with groups (neither
    divides the other) take the unlimited form."""
    e_b = int(round(block_experts))
    if e_b >= n_experts or top_k >= n_experts:
        return 1.0
    G, M = groups, groups_per_token
    g = n_experts // G
    if M is None or M >= G or (e_b % g and g % e_b):
        return 1.0 - _miss(n_experts, e_b, top_k)
    if e_b <= g:
        return M / G * (1.0 - _miss(M * g, e_b, top_k))
    b = e_b // g
    total = math.comb(G, M)
    return sum(math.comb(b, j) * math.comb(G - b, M - j) / total
               * (1.0 - _miss(M * g, j * g, top_k)) for j in range(1, min(b, M) + 1))


def dedup_shares(parts: tuple[AxisPart, ...], n_experts: int, top_k: int, groups: int = 1,
                 groups_per_token: int | None = None) -> tuple[float, ...]:
    """Per level ``j`` the deduplicated dispatch's share of the plain buffer, ``f_j P_j / k``,
    with blocks of ``E / prod_{i>=j} f_i`` experts (see the module docstring)."""
    out, outer = [], math.prod(p.factor for p in parts)
    for p in parts:
        hit = dedup_block_hit(n_experts, top_k, n_experts / outer, groups, groups_per_token)
        out.append(p.factor * hit / top_k)
        outer //= p.factor
    return tuple(out)


def permute_time(parts: tuple[AxisPart, ...], size_bytes: float) -> float:
    """Point-to-point send to the next rank along the axis, over its outermost level."""
    if not parts:
        return 0.0
    lv = parts[-1].level
    return size_bytes / lv.effective_bandwidth + lv.latency_s


COLLECTIVE_TIME = {
    Collective.ALL_GATHER: all_gather_time,
    Collective.REDUCE_SCATTER: reduce_scatter_time,
    Collective.ALL_REDUCE: all_reduce_time,
    Collective.ALL_TO_ALL: all_to_all_time,
    Collective.PERMUTE: permute_time,
}


def collective_time(kind: Collective, parts: tuple[AxisPart, ...], size_bytes: float,
                    dedup: tuple[int, ...] | None = None) -> float:
    """Time of one collective of ``kind`` over an axis placed as ``parts``; ``dedup`` (the
    routing of :func:`~simulator.cost.formulas.dedup_routing`) makes an all-to-all the
    deduplicated expert dispatch."""
    if size_bytes <= 0 or not parts:
        return 0.0
    if any(p.level.per_kind for p in parts):
        parts = tuple(AxisPart(p.level.for_kind(kind.value), p.factor) for p in parts)
    if dedup is not None and kind is Collective.ALL_TO_ALL:
        return all_to_all_time(parts, size_bytes, dedup_shares(parts, *dedup))
    return COLLECTIVE_TIME[kind](parts, size_bytes)
