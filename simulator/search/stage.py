"""One pipeline rank's micro-batch in closed form: the stage graph's overlap rules, solved.

Symbols per layer ``j`` of the rank (kind ``k_j``): forward chain ``F``, end of its first compute
op ``n``; recompute ``R``; backward ``B``, end of its first compute op ``nb``; FSDP weight
gather ``g``; gradient traffic ``w`` on the grad stream. Vocabulary-table gather ``gt``;
embedding chains ``E_f, E_b``; LM-head chains ``H_f`` (first compute op ends at ``n_h``), ``H_b``.
In :class:`simulator.graph.step.StageGraphBuilder` a layer's gather is issued once the previous
layer's first compute op ends and the fsdp stream runs in order, so with ``x_j`` the start of
layer ``j``'s forward (the gather always ends by then):

    x_0 = [first: gt + max(E_f, g_0)] | g_0           x_{j+1} = x_j + max(F_j, n_j + g_{j+1})
    head (last rank):  h0 = x_{J-1} + max(F_{J-1}, n_{J-1} + gt),  t_fwd = h0 + H_f,
                       h2 = h0 + max(H_f, n_h + gt) + H_b
    backward:  y_{J-1} = max(h2 | x_{J-1} + F_{J-1}, fsdp stream free + g_{J-1}),
               y_{j-1} = y_j + R_j + max(B_j, nb_j + g_{j-1}),   z_j = y_j + R_j + B_j
    t_mb_raw = z_0 [+ E_b on the first rank]

Gradient items are issued at ``z_j`` (then the embedding tables' at ``t_mb_raw``) onto one
in-order stream: it ends at ``W = max_k(issue_k + sum_{l >= k} w_l)``. The optimizer starts at
``max(t_mb_raw, W)``; ``tail = max(W - t_mb_raw, 0) + optimizer + weight all-gather``. Collectives
over one axis share its links: ``t_mb = max(t_mb_raw, max_axis sum of its collectives)``
(:func:`simulator.predict.link_floor`). Without FSDP every ``g`` is 0 and the same formulas hold.

Streams run in order across chains. Under EP comm overlap nothing waits for a forward or
recompute chain's all-to-alls, so they may still run when the next chain starts (the carried
stream, ``StageInputs.carried``): the backward ``B, nb`` of a layer is timed on what its own
recompute leaves busy (:class:`~simulator.search.stage_inputs.KindTimes`), and the forward's
all-to-alls queue up, ``q_j = max(q_{j-1} + lag_j, x_j + free_j)``, into the rank's first
backward layer, whose ``R, B, nb`` are then those after that backlog ``max(q - y_{J-1}, 0)``
(``ChainTimes.after``); every later backward starts with the stream free (each backward chain
waits for its own all-to-alls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.cost.collectives import Collective
from simulator.graph.layers import embedding_params_local
from simulator.search.chains import ChainTimes
from simulator.search.columns import DimsView
from simulator.search.stage_inputs import StageInputs

AXES_FLOOR = ("model", "seq", "expert")


@dataclass
class StageTime:
    """Per row: ``t_fwd`` (forward part of a micro-batch), ``t_mb``, ``tail``, ``busy``
    (compute-stream seconds per micro-batch) and ``opt`` (optimizer update)."""

    t_fwd: np.ndarray
    t_mb: np.ndarray
    tail: np.ndarray
    busy: np.ndarray
    opt: np.ndarray


def _pick(remat: np.ndarray, recs: dict[str, ChainTimes], field: str) -> np.ndarray:
    if len({id(c) for c in recs.values()}) == 1:  # one chain for every policy
        return getattr(recs["none"], field)
    return np.choose(remat, [getattr(recs[r], field) for r in ("none", "selective", "full")])


def _pick_comm(remat: np.ndarray, recs: dict[str, ChainTimes], axis: str) -> np.ndarray:
    return np.choose(remat, [recs[r].comm.get(axis, 0.0) * np.ones(len(remat))
                             for r in ("none", "selective", "full")])


@dataclass
class _Layers:
    """Per layer kind, per row: F, n, R (under each row's remat), B, nb, g, w."""

    F: dict
    n: dict
    R: dict
    B: dict
    nb: dict
    g: dict
    w: dict

    @classmethod
    def of(cls, si: StageInputs, remat: np.ndarray, kinds) -> _Layers:
        K = {k: si.kinds[k] for k in set(kinds)}
        return cls({k: v.fwd.end for k, v in K.items()}, {k: v.fwd.first for k, v in K.items()},
                   {k: _pick(remat, v.rec, "end") for k, v in K.items()},
                   {k: _pick(remat, v.bwd, "end") for k, v in K.items()},
                   {k: _pick(remat, v.bwd, "first") for k, v in K.items()},
                   {k: v.gather for k, v in K.items()}, {k: v.grad for k, v in K.items()})


def _forward(L: _Layers, si: StageInputs, kinds, first: bool, last: bool):
    """(t_fwd, end of the forward and head, when the fsdp stream frees, when the carried stream
    frees) -- see the module docstring; one kind of layer is an arithmetic series, mixed kinds
    are walked."""
    F, n, g, gt = L.F, L.n, L.g, si.table_gather
    x = gt + np.maximum(si.embed_fwd.end, g[kinds[0]]) if first else g[kinds[0]]
    gamma = (gt if first else 0.0) + g[kinds[0]]  # when the fsdp stream has gathered the last layer
    q = _queue(si, si.embed_fwd, gt, 0.0) if first else 0.0
    if len(set(kinds)) == 1:
        k, J = kinds[0], len(kinds)
        step = np.maximum(F[k], n[k] + g[k])
        if J > 1:
            gamma = x + (J - 2) * step + n[k] + g[k]
        q = _queue(si, si.kinds[k].fwd, x, q, J, step)
        x = x + (J - 1) * step
    else:
        for a, b in zip(kinds, kinds[1:]):
            gamma = x + n[a] + g[b]
            q = _queue(si, si.kinds[a].fwd, x, q)
            x = x + np.maximum(F[a], n[a] + g[b])
        q = _queue(si, si.kinds[kinds[-1]].fwd, x, q)
    kl = kinds[-1]
    if not last:
        return x + F[kl], x + F[kl], gamma, q
    h0 = x + np.maximum(F[kl], n[kl] + gt)
    head = si.head_fwd
    h1 = h0 + np.maximum(head.end, head.first + gt)
    q = _queue(si, si.head_bwd, h1, _queue(si, head, h0, q))
    return h0 + head.end, h1 + si.head_bwd.end, h0 + head.first + gt, q


def _queue(si: StageInputs, ct: ChainTimes, x, q, J: int = 1, step=0.0):
    """When the carried stream (``si.carried``) is free after ``J`` chains ``ct`` started at
    ``x, x + step, ...``, if it was free at ``q``: the stream runs their ops in order and
    nothing else waits for it (``q_j = max(q_{j-1} + lag, x_j + free)`` with ``ct.free``,
    ``ct.lag.free`` of the stream; linear in ``j``, so its maximum is at an end)."""
    s = si.carried
    if s is None:
        return q
    free = ct.free.get(s, -np.inf)
    lag = ct.lag.free.get(s, 0.0) if ct.lag is not None else 0.0
    return np.maximum(np.maximum(q + J * lag, x + free + (J - 1) * lag),
                      x + (J - 1) * step + free)


def _top(si: StageInputs, remat, k: bool, backlog):
    """(R, B, nb) of the rank's last layer, the first backward, whose recompute starts with the
    carried stream still busy ``backlog``: the forward's combine all-to-alls outlast their
    chains under EP comm overlap, and the backward's own queue behind them."""
    kt, s = si.kinds[k], si.carried
    out = []
    for r in ("none", "selective", "full"):
        rec = kt.rec[r].after(backlog)
        bwd = kt.bwd[r].after(rec.free.get(s, backlog) - rec.end)
        out.append((rec.end, bwd.end, bwd.first))
    return tuple(np.choose(remat, [o[i] for o in out]) for i in range(3))


def _backward(L: _Layers, y: np.ndarray, kinds, top):
    """(end of the last backward z_0, when the grad stream has taken every layer's gradients);
    ``top``: (R, B, nb) of the first backward layer (None: its kind's)."""
    R, B, nb, g, w = L.R, L.B, L.nb, L.g, L.w
    k = kinds[-1]
    Rt, Bt, nbt = top if top is not None else (R[k], B[k], nb[k])
    z0 = y + Rt + Bt
    grads = z0 + w[k]
    rest = kinds[:-1]
    if not rest:
        return z0, grads
    y = y + Rt + np.maximum(Bt, nbt + g[rest[-1]])
    J = len(rest)
    if len(set(rest)) == 1:
        k = rest[0]
        pb = R[k] + np.maximum(B[k], nb[k] + g[k])
        z_top = y + R[k] + B[k]
        z0 = z_top + (J - 1) * pb
        return z0, np.maximum(np.maximum(grads, z_top) + J * w[k], z0 + w[k])
    for j in range(J - 1, -1, -1):
        k = rest[j]
        z0 = y + R[k] + B[k]
        grads = np.maximum(grads, z0) + w[k]
        if j:
            y = y + R[k] + np.maximum(B[k], nb[k] + g[rest[j - 1]])
    return z0, grads


def compose(si: StageInputs, remat: np.ndarray, kinds: tuple[bool, ...], first: bool, last: bool,
            space) -> StageTime:
    """StageTime of a rank holding layers of ``kinds`` (in order), for rows of ``si``."""
    L = _Layers.of(si, remat, kinds)
    t_fwd, prev, fs_free, q = _forward(L, si, kinds, first, last)
    y = np.maximum(prev, fs_free + L.g[kinds[-1]])
    top = _top(si, remat, kinds[-1], np.maximum(q - y, 0.0)) if si.carried else None
    z0, grads = _backward(L, y, kinds, top)
    t_raw = z0 + si.embed_bwd.end if first else z0
    n_embed = 0.0
    if first or last:
        n_embed = np.asarray(embedding_params_local(space.model, DimsView(si.dims), first, last),
                             dtype=float)
        grads = np.maximum(grads, t_raw) + si.grad_reduction(
            n_embed, 0.0, space.base.distributed_optimizer)[1]
    opt, ag = optimizer_time(si, space, kinds, n_embed)
    t_mb = np.maximum(t_raw, link_floor(si, remat, kinds, first, last, n_embed))
    tail = np.maximum(grads - t_raw, 0.0) + opt + ag
    return StageTime(t_fwd, t_mb, tail, _busy(si, remat, kinds, first, last), opt)


def stage_params(si: StageInputs, kinds: tuple[bool, ...], n_embed) -> np.ndarray:
    """``stage_params_local``: the rank's layers' local parameters plus its tables, over fs."""
    total = sum(kinds.count(k) * si.kinds[k].params for k in set(kinds))
    return (total + n_embed) / si.dims["fs"]


def optimizer_time(si: StageInputs, space, kinds, n_embed) -> tuple[np.ndarray, np.ndarray]:
    """Adam update over the rank's (ZeRO-1: data-sharded) parameters, memory bound, and the
    distributed optimizer's weight all-gather (``StageGraphBuilder._optimizer``)."""
    s = space.base
    nst = stage_params(si, kinds, n_embed)
    shard = si.dims["dp"] if s.distributed_optimizer else np.ones_like(nst)
    state = 4 if s.optimizer.state_dtype == "fp32" else 2
    per_param = (8 if s.optimizer.master_weights else 0) + si.dims["gb"] + 4 * state + 2
    opt = si.cost.memory_time(nst / shard * per_param) + si.cost.cm.launch_s
    ag = np.where(shard > 1, si.coll("data", Collective.ALL_GATHER, nst * si.dims["wb"]), 0.0)
    return opt, ag


def link_floor(si: StageInputs, remat, kinds, first, last, n_embed) -> np.ndarray:
    """Largest per-axis sum of the collectives of one micro-batch (forward, backward, recompute;
    for fsdp also the weight and table gathers and the gradient reduce-scatters)."""
    chains = [si.embed_fwd, si.embed_bwd] if first else []
    chains += [si.head_fwd, si.head_bwd] if last else []
    floor = np.zeros(len(remat))
    for axis in AXES_FLOOR:
        tot = sum(c.comm.get(axis, 0.0) for c in chains) + np.zeros(len(remat))
        for k in set(kinds):
            kt = si.kinds[k]
            per = kt.fwd.comm.get(axis, 0.0) + kt.bwd["none"].comm.get(axis, 0.0) + _pick_comm(
                remat, kt.rec, axis)  # a backward's ops take as long after any recompute
            tot = tot + kinds.count(k) * per
        floor = np.maximum(floor, tot)
    fsdp = sum(kinds.count(k) * (2 * si.kinds[k].gather + si.kinds[k].grad_rs) for k in set(kinds))
    fsdp = fsdp + si.table_gather * ((1 if first else 0) + (2 if last else 0))
    if first or last:
        fsdp = fsdp + si.grad_reduction(n_embed, 0.0, False)[0]
    return np.maximum(floor, fsdp)


def _busy(si: StageInputs, remat, kinds, first, last) -> np.ndarray:
    busy = sum(kinds.count(k) * (si.kinds[k].fwd.busy + si.kinds[k].bwd["none"].busy
                                 + _pick(remat, si.kinds[k].rec, "busy")) for k in set(kinds))
    if first:
        busy = busy + si.embed_fwd.busy + si.embed_bwd.busy
    if last:
        busy = busy + si.head_fwd.busy + si.head_bwd.busy
    return busy
