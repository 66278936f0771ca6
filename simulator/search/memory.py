"""Memory per device for columns of configurations: :mod:`simulator.graph.memory`'s estimate, rank by
rank, through the same functions (so ``fits`` is the graph path's ``fits``).

:func:`simulator.graph.memory.stage_params` splits a rank's local parameters (after FSDP) into
non-expert and expert parts, :func:`simulator.graph.memory.param_state_bytes` turns them into weights,
gradients and optimizer state (sharded by :func:`simulator.graph.memory.optimizer_shards`),
:func:`simulator.graph.memory.activation_bytes` counts ``(sum_layers elems) T / t * ab * in-flight``
and :func:`simulator.graph.memory.transient_bytes` the FSDP-gathered layers plus the larger of the
last rank's logits (fp32, or in place on the bf16 logits with the base spec's ``fused_loss``)
and one layer recomputed under full remat. The rank with the largest total
sets the estimate.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from simulator.graph.memory import (
    activation_bytes,
    in_flight_microbatches,
    layer_activation_elems,
    optimizer_shards,
    param_state_bytes,
    stage_params,
    transient_bytes,
)
from simulator.search.columns import DimsView
from simulator.search.space import REMATS


@lru_cache(maxsize=65536)
def in_flight(rank: int, pp: int, m: int, schedule: str, v: int) -> float:
    return in_flight_microbatches(rank, pp, min(m, 4 * pp * v), schedule, v)


def max_in_flight(ranks: list[int], pp: np.ndarray, m: np.ndarray, schedule: np.ndarray,
                  v: np.ndarray) -> np.ndarray:
    """Per row, the most micro-batches in flight over ``ranks`` (one pipeline size per call)."""
    from simulator.search.space import SCHEDULES

    mm = np.minimum(m, 4 * pp * v).astype(np.int64)
    key = ((pp.astype(np.int64) * 2 + schedule) * 4096 + v) * (1 << 24) + mm
    uniq, inv = np.unique(key, return_inverse=True)
    vals = np.array([max(in_flight(r, int(k >> 24) // 4096 // 2, int(k & ((1 << 24) - 1)),
                                   SCHEDULES[int(k >> 24) // 4096 % 2], int(k >> 24) % 4096)
                         for r in ranks) for k in uniq])
    return vals[inv.ravel()]


def layer_params(space, dims: dict) -> dict[bool, np.ndarray]:
    """Local parameters (dense + expert, before FSDP) of each layer kind, per row: the size of
    one FSDP-gathered layer."""
    from simulator.graph.layers import layer_params_local

    m = space.model
    kinds = {m.is_moe_layer(i) for i in range(m.n_layers)}
    d = DimsView(dims)
    return {k: np.add(*(np.asarray(x, dtype=float) for x in layer_params_local(m, d, k)))
            for k in kinds}


def memory_bytes(params: dict[bool, np.ndarray], dims: dict, space, remat: np.ndarray,
                 kinds: tuple[bool, ...], first: bool, last: bool, flight: np.ndarray) -> np.ndarray:
    """Per-device bytes of a rank holding layers ``kinds`` with ``flight`` micro-batches alive."""
    m, s, d = space.model, space.base, dims
    dense, expert = stage_params(m, DimsView(d), kinds, first, last)
    dense, expert = np.asarray(dense, dtype=float), np.asarray(expert, dtype=float)
    shards = optimizer_shards(s, d["dp"], d["e"], d["cp"])
    weights, grads, optimizer = param_state_bytes(dense, expert, s, *shards, d["gb"])
    score = dict(flash=s.flash_attention, s=space.seq_len, ab=d["ab"])
    acts_tok = np.array([sum(layer_activation_elems(m, k, r, **score) for k in kinds)
                         for r in REMATS])[remat]
    acts = activation_bytes(acts_tok, d["T"], d["t"], d["ab"], flight)
    worst_none = max(layer_activation_elems(m, k, "none", **score) for k in kinds)
    recompute = np.where(remat == REMATS.index("full"), worst_none, 0.0)
    biggest = np.max([params[k] for k in set(kinds)], axis=0)
    gathered = np.where(d["fs"] > 1, biggest, 0.0)
    transient = transient_bytes(m, d["T"], d["t"], d["ab"], last, recompute, gathered, d["wb"],
                                s.fused_loss)
    return weights + grads + optimizer + acts + transient
