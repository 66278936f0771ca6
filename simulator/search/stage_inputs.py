"""Per-configuration inputs of the stage composition: each layer kind's chains (forward,
backward, recompute under each remat policy), the embedding and LM-head chains, and the FSDP and
data-parallel traffic, all from the graph path's own templates and formulas on columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from simulator.cost.collectives import Collective
from simulator.cost.compute import ComputeModel
from simulator.graph.layers import (
    embedding_ops,
    embedding_params_local,
    head_ops,
    layer_params_local,
    layer_template,
)
from simulator.graph.step import backward_of, recompute_of
from simulator.graph.ops import Op
from simulator.search.chains import ChainTimes, VectorCost, outlasting, time_chain
from simulator.search.columns import dims_columns, structure_key
from simulator.search.placements import COLUMN
from simulator.search.space import REMATS

AG, RS, AR, PERM = (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE,
                    Collective.PERMUTE)


@dataclass
class KindTimes:
    """One layer kind (dense or MoE) per row: ``fwd`` chain, ``rec[remat]`` the recompute
    chain, ``bwd[remat]`` the backward chain as the graph schedules it right after that
    recompute (on the streams the recompute leaves busy), ``gather`` its FSDP weight
    all-gather, ``grad`` its gradient traffic on the grad stream (fsdp reduce-scatter + data
    reduction), ``grad_rs`` the fsdp part alone, ``params`` its local parameters before FSDP
    sharding (dense + expert)."""

    fwd: ChainTimes
    bwd: dict[str, ChainTimes]
    rec: dict[str, ChainTimes]
    gather: np.ndarray
    grad: np.ndarray
    grad_rs: np.ndarray
    params: np.ndarray


@dataclass
class StageInputs:
    """Everything stage composition needs, per row of a stage table."""

    kinds: dict[bool, KindTimes]
    embed_fwd: ChainTimes
    embed_bwd: ChainTimes
    head_fwd: ChainTimes
    head_bwd: ChainTimes
    table_gather: np.ndarray  # one [V/t, D] table over fsdp
    table_params: np.ndarray  # V * D / t
    send: np.ndarray  # one activation send between pipeline ranks
    cost: VectorCost
    dims: dict = field(default_factory=dict)  # numpy columns: b, t, e, fs, dp, cp, T
    carried: str | None = None  # the stream whose ops may outlast their chain (ChainTimes.lag)

    def coll(self, axis: str, kind: Collective, nbytes) -> np.ndarray:
        """``collective_time`` of ``nbytes`` over ``axis`` per row (0 for no bytes)."""
        a, b = self.cost.coef[:, COLUMN[(axis, kind)]].T
        nbytes = np.broadcast_to(np.asarray(nbytes, dtype=float), a.shape)
        return np.where(nbytes > 0, a * nbytes + b, 0.0)

    def grad_reduction(self, dense, expert, distributed: bool) -> tuple[np.ndarray, np.ndarray]:
        """(fsdp reduce-scatter, its total with the data-parallel reduction) of one gradient
        set, as ``StageGraphBuilder._reduce_grads``: RS over fsdp of ``(dense + expert) * gb``;
        then AR (RS with a distributed optimizer) of ``dense / fs * gb`` over data x expert
        (data if expert = 1) and of ``expert / fs * gb`` over data; groups of one are skipped."""
        d = self.dims
        gb = self.dims["gb"]
        rs = np.where(d["fs"] > 1, self.coll("fsdp", RS, (dense + expert) * gb), 0.0)
        kind = RS if distributed else AR
        de = np.where(d["e"] > 1, self.coll("data+expert", kind, dense / d["fs"] * gb),
                      self.coll("data", kind, dense / d["fs"] * gb))
        de = np.where(d["dp"] * d["e"] > 1, de, 0.0)
        ex = np.where(d["dp"] > 1, self.coll("data", kind, expert / d["fs"] * gb), 0.0)
        return rs, rs + de + ex


def _scatter(dst: dict, key, idx: np.ndarray, value: np.ndarray, n: int, fill: float = 0.0
             ) -> None:
    if key not in dst:
        dst[key] = np.full(n, fill)
    dst[key][idx] = value


class _Collector:
    """Gathers ChainTimes computed per structure group into full-length arrays."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.arrays: dict = {}

    def put(self, name: str, idx: np.ndarray, ct: ChainTimes, carried: str | None) -> None:
        """Keeps ``free`` of the ``carried`` stream only (the one :mod:`~.stage` follows)."""
        for f in ("end", "first", "busy"):
            _scatter(self.arrays, (name, f), idx, getattr(ct, f), self.n)
        for axis, v in ct.comm.items():
            _scatter(self.arrays, (name, "comm", axis), idx, v, self.n)
        if carried in ct.free:
            _scatter(self.arrays, (name, "free", carried), idx, ct.free[carried], self.n)
        if ct.lag is not None:  # rows timed without a lag keep -inf: they wait for no stream
            for f in ("end", "first"):
                _scatter(self.arrays, (name, "lag", f), idx, getattr(ct.lag, f), self.n, -np.inf)
            for k, v in ct.lag.free.items():
                _scatter(self.arrays, (name, "lag", "free", k), idx, v, self.n)

    def get(self, name: str) -> ChainTimes:
        a = self.arrays
        z = np.zeros(self.n)

        def part(*p):
            return {k[len(p) + 1]: v for k, v in a.items() if k[0] == name and k[1:-1] == p}

        lag = None
        if (name, "lag", "end") in a:
            lag = ChainTimes(a[(name, "lag", "end")], a[(name, "lag", "first")], z, {},
                             part("lag", "free"))
        return ChainTimes(a.get((name, "end"), z), a.get((name, "first"), z),
                          a.get((name, "busy"), z), part("comm"), part("free"), lag)


def stage_inputs(space, mesh: np.ndarray, micro_batch: np.ndarray, coef: np.ndarray) -> StageInputs:
    """StageInputs for rows given by their mesh ``(n, 6)``, micro-batch and placement coef."""
    from simulator.search.table import AXIS

    m = space.model
    n = len(mesh)
    cols = {a: mesh[:, i] for a, i in AXIS.items()}
    cm = ComputeModel.from_profile(space.hardware, space.base.precision)
    T = micro_batch * space.seq_len // cols["seq"]
    key = structure_key(m, cols["model"], cols["seq"], T, cols["expert"])
    kinds = [False, True] if m.is_moe else [False]
    kinds = [k for k in kinds if any(m.is_moe_layer(i) == k for i in range(m.n_layers))]
    out = _Collector(n)
    carried, after = set(), set()  # the carried stream; the remat policies whose recompute left it
    for code in np.unique(key):
        idx = np.nonzero(key == code)[0]
        d = dims_columns(space, {a: c[idx] for a, c in cols.items()}, micro_batch[idx])
        vc = VectorCost(cm, coef[idx])
        chains = _chains(m, d, kinds)
        lag_of = _carried_stream(chains)
        carried |= {lag_of} - {None}
        timed = {name: time_chain(ops, vc, lag_of=lag_of) for name, ops in chains.items()}
        for name in [f"fwd{moe}" for moe in kinds] + ["embed_fwd", "head_fwd", "head_bwd"]:
            lag = timed[name].lag
            if lag is not None and np.isfinite(np.concatenate([lag.end, lag.first])).any():
                raise ValueError(f"{name} waits for the {lag_of} stream its ops outlast; "
                                 "search.stage's closed form takes the forward as independent")
        for moe in kinds:
            # StageGraphBuilder.build: a layer's backward starts once its recompute ends, on the
            # streams the recompute leaves busy (EP comm overlap: its combine all-to-all)
            for remat in ("selective", "full"):
                busy = timed[f"rec{moe}{remat}"].carried()
                after |= {remat} if busy else set()
                timed[f"bwd{moe}{remat}"] = (time_chain(chains[f"bwd{moe}"], vc, busy, lag_of)
                                             if busy else timed[f"bwd{moe}"])
        for name, ct in timed.items():
            out.put(name, idx, ct, lag_of)
    if len(carried) > 1:
        raise ValueError(f"streams {sorted(carried)} outlast their chains; search.stage's closed "
                         "form carries one")
    si = _assemble(space, out, kinds, cols, micro_batch, T, VectorCost(cm, coef), after)
    si.carried = carried.pop() if carried else None
    return si


def _chains(m, d, kinds) -> dict[str, list[Op]]:
    """The op chains of the stage graph, by name: per layer kind ``fwd``, ``rec`` per remat
    policy and ``bwd``; the embedding's and the LM head's forward and backward."""
    out = {}
    for moe in kinds:
        fwd = out[f"fwd{moe}"] = layer_template(m, d, moe)
        out[f"bwd{moe}"] = backward_of(fwd)
        for remat in ("selective", "full"):
            out[f"rec{moe}{remat}"] = recompute_of(fwd, remat)
    out["embed_fwd"] = embedding_ops(m, d)
    out["embed_bwd"] = backward_of(out["embed_fwd"])
    head = head_ops(m, d, "x")
    head[0].deps = []
    out["head_fwd"], out["head_bwd"] = head, backward_of(head)
    return out


def _carried_stream(chains: dict[str, list[Op]]) -> str | None:
    """The stream whose ops may outlast their chain (:func:`outlasting`: the all-to-alls under
    EP comm overlap), or None. The closed form of :mod:`simulator.search.stage` carries it from
    each forward or recompute chain to the next; it raises where that would not be the graph's
    schedule: several such streams, or a backward chain that leaves one busy."""
    found = {name: outlasting(ops) for name, ops in chains.items()}
    streams = set().union(*found.values())
    if len(streams) > 1 or any(s for name, s in found.items() if "bwd" in name):
        raise ValueError(f"ops outlast their chains on streams {found}; search.stage's closed "
                         "form carries one stream out of forward and recompute chains only")
    return streams.pop() if streams else None


def _assemble(space, out: _Collector, kinds, cols, micro_batch, T, vc: VectorCost,
              after: set[str]) -> StageInputs:
    """Fill in the traffic outside the chains: table and layer gathers, gradient reductions,
    the pipeline send (``tokens * D / t * 2`` bytes, as predict sends it). A backward after a
    recompute (remat policies not in ``after``) that left no stream busy is the plain one."""
    m = space.model
    d = dims_columns(space, cols, micro_batch)
    dims = {"b": micro_batch, "t": cols["model"], "e": cols["expert"], "fs": cols["fsdp"],
            "dp": cols["data"], "cp": cols["seq"], "T": T, "ab": d.ab, "wb": d.wb, "gb": d.gb}
    table = np.asarray(embedding_params_local(m, d, True, False), dtype=float)
    si = StageInputs({}, out.get("embed_fwd"), out.get("embed_bwd"), out.get("head_fwd"),
                     out.get("head_bwd"), np.zeros(len(T)), table, np.zeros(len(T)), vc, dims)
    fs = cols["fsdp"]
    si.table_gather = np.where(fs > 1, si.coll("fsdp", AG, table * d.wb), 0.0)
    tokens = micro_batch * space.seq_len // cols["seq"]
    si.send = si.coll("pipeline", PERM, tokens * m.d_model / cols["model"] * 2)
    distributed = space.base.distributed_optimizer
    for moe in kinds:
        dense, expert = (np.asarray(x, dtype=float) for x in layer_params_local(m, d, moe))
        rs, grad = si.grad_reduction(dense, expert, distributed)
        plain = out.get(f"bwd{moe}")
        si.kinds[moe] = KindTimes(
            out.get(f"fwd{moe}"),
            {r: out.get(f"bwd{moe}{r}") if r in after else plain for r in REMATS},
            {"none": ChainTimes.zeros(len(T)), "selective": out.get(f"rec{moe}selective"),
             "full": out.get(f"rec{moe}full")},
            np.where(fs > 1, si.coll("fsdp", AG, (dense + expert) * d.wb), 0.0), grad, rs,
            dense + expert)
    return si


def take_inputs(si: StageInputs, idx) -> StageInputs:
    """The rows ``idx`` of a StageInputs (e.g. one stage row per configuration row)."""
    from simulator.search.chains import take_chain

    taken: dict[int, ChainTimes] = {}

    def take(ct: ChainTimes) -> ChainTimes:  # once per chain shared between remat policies
        if id(ct) not in taken:
            taken[id(ct)] = take_chain(ct, idx)
        return taken[id(ct)]

    kinds = {k: KindTimes(take(v.fwd), {r: take(c) for r, c in v.bwd.items()},
                          {r: take(c) for r, c in v.rec.items()}, v.gather[idx],
                          v.grad[idx], v.grad_rs[idx], v.params[idx]) for k, v in si.kinds.items()}
    dims = {k: (v[idx] if isinstance(v, np.ndarray) else v) for k, v in si.dims.items()}
    return StageInputs(kinds, take_chain(si.embed_fwd, idx), take_chain(si.embed_bwd, idx),
                       take_chain(si.head_fwd, idx), take_chain(si.head_bwd, idx),
                       si.table_gather[idx], si.table_params[idx], si.send[idx],
                       VectorCost(si.cost.cm, si.cost.coef[idx]), dims, si.carried)
