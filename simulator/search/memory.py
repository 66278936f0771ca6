"""Memory per device for columns of configurations: :mod:`simulator.memory`'s estimate, rank by
rank, in the same order of terms (so ``fits`` is the graph path's ``fits``).

``weights = 2 n``, ``gradients = gb n``, ``optimizer = n (4 + 2 state) / zero`` with ``n`` the
rank's local parameters after FSDP; ``activations = (sum_layers elems) T / t * ab * in-flight``;
``transient`` = one layer's un-rematerialised activations under full remat, fp32 logits and
their gradient on the last rank (``2 T V / t * 4``), two gathered layers under FSDP. The rank
with the largest total sets the estimate.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from simulator.memory import in_flight_microbatches, layer_activation_elems
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
    """Local parameters (dense + expert, before FSDP) of each layer kind, per row."""
    from simulator.graph.layers import layer_params_local

    m = space.model
    kinds = {m.is_moe_layer(i) for i in range(m.n_layers)}
    d = DimsView(dims)
    return {k: np.add(*(np.asarray(x, dtype=float) for x in layer_params_local(m, d, k)))
            for k in kinds}


def memory_bytes(params: dict[bool, np.ndarray], dims: dict, space, remat: np.ndarray,
                 kinds: tuple[bool, ...], first: bool, last: bool, flight: np.ndarray) -> np.ndarray:
    """Per-device bytes of a rank holding layers ``kinds`` with ``flight`` micro-batches alive."""
    from simulator.graph.layers import embedding_params_local

    m, s, d = space.model, space.base, dims
    n_embed = np.asarray(embedding_params_local(m, DimsView(d), first, last), dtype=float)
    n = (sum(kinds.count(k) * params[k] for k in set(kinds)) + n_embed) / d["fs"]
    zero = d["dp"] if s.distributed_optimizer else 1
    state = 4 if s.optimizer.state_dtype == "fp32" else 2
    weights = n * 2.0
    grads = n * d["gb"]
    optimizer = n * ((4 if s.optimizer.master_weights else 0) + 2 * state) / zero
    score = dict(flash=s.flash_attention, s=space.seq_len, ab=d["ab"])
    acts_tok = np.array([sum(layer_activation_elems(m, k, r, **score) for k in kinds)
                         for r in REMATS])[remat]
    acts = acts_tok * d["T"] / d["t"] * d["ab"] * flight
    worst_none = max(layer_activation_elems(m, k, "none", **score) for k in kinds)
    transient = np.where(remat == REMATS.index("full"), worst_none * d["T"] / d["t"] * d["ab"], 0.0)
    if last:
        transient = transient + 2 * d["T"] * m.vocab_size / d["t"] * 4
    biggest = np.max([params[k] for k in set(kinds)], axis=0)
    transient = transient + np.where(d["fs"] > 1, 2 * biggest * d["wb"], 0.0)
    return weights + grads + optimizer + acts + transient
