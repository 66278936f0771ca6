"""Enumerate every configuration of a SearchSpace and drop the invalid ones, counting why.

Rows are built mesh by mesh: every ordered factorisation of the chips over the searched axes,
then the mesh rules below (the first rule a mesh breaks is the one counted), then per valid mesh
its distinct placements x micro-batches (divisors of the per-shard batch) x remat policies x
pipeline schedules (1F1B; interleaved with ``v > 1`` virtual stages dividing the layers per
rank). Invalid counts are of mesh factorisations for the mesh rules and of rows for the row
rules. The rules are Job's own predicates (``simulator.specs.job.*_ok``), applied to whole
columns.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from meshcast.errors import NoFeasibleConfig
from simulator.search.placements import PlacementFinder
from simulator.search.space import REMATS, SCHEDULES, SearchSpace
from simulator.search.table import AXIS, Candidates
from simulator.specs.job import (
    batch_split_ok,
    expert_axis_ok,
    experts_split_ok,
    heads_split_ok,
    interleaved_ok,
    layers_split_ok,
    seq_split_ok,
)
from simulator.specs.sharding import AXES

#: Why a candidate was dropped: key -> what the rule says.
REASONS = {
    "heads % model": "model must divide n_heads and n_kv_heads",
    "expert on dense": "a dense model takes expert = 1",
    "experts % expert": "expert must divide n_experts",
    "layers % pipeline": "pipeline must divide n_layers",
    "seq_len % seq": "seq must divide seq_len",
    "batch % shards": "data x fsdp x expert must divide the global batch",
    "no placement": "the mesh does not fit the network levels in any axis order",
    "micro-batch % batch": "a micro-batch size tried does not divide the per-shard batch",
    "interleaved % pipeline": "the interleaved schedule needs micro-batches % pipeline == 0",
}


@lru_cache(maxsize=256)
def divisors(n: int) -> tuple[int, ...]:
    return tuple(k for k in range(1, n + 1) if n % k == 0)


def factorizations(n: int, k: int) -> np.ndarray:
    """Every ordered ``k``-tuple of positive integers whose product is ``n``, as ``(rows, k)``."""
    if k == 0:
        return np.ones((1 if n == 1 else 0, 0), dtype=np.int64)
    rows = [(d, *rest) for d in divisors(n) for rest in factorizations(n // d, k - 1)]
    return np.array(rows, dtype=np.int64).reshape(-1, k)


def meshes(space: SearchSpace) -> np.ndarray:
    """All factorisations of the chips over ``space.axes`` (other axes 1), ``(rows, 6)``."""
    cols = [AXIS[a] for a in AXES if a in space.axes]
    f = factorizations(space.chips, len(cols))
    out = np.ones((len(f), len(AXES)), dtype=np.int64)
    out[:, cols] = f
    return out


def mesh_rules(space: SearchSpace, mesh: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(reason, broken mask) per rule, in the order they are checked."""
    m = space.model
    t, e, pp, cp = (mesh[:, AXIS[a]] for a in ("model", "expert", "pipeline", "seq"))
    shards = mesh[:, AXIS["data"]] * mesh[:, AXIS["fsdp"]] * e
    rules = [
        ("heads % model", heads_split_ok(m, t)),
        ("expert on dense", expert_axis_ok(m, e)),
        ("experts % expert", experts_split_ok(m, e)),
        ("layers % pipeline", layers_split_ok(m.n_layers, pp)),
        ("seq_len % seq", seq_split_ok(space.seq_len, cp)),
        ("batch % shards", batch_split_ok(space.global_batch, 1, shards)),
    ]
    return [(reason, ~np.broadcast_to(ok, len(mesh))) for reason, ok in rules]


def valid_meshes(space: SearchSpace, invalid: dict[str, int]) -> np.ndarray:
    """The meshes that pass every mesh rule; ``invalid`` counts the first rule each breaks."""
    mesh = meshes(space)
    alive = np.ones(len(mesh), bool)
    for reason, broken in mesh_rules(space, mesh):
        hit = alive & broken
        invalid[reason] = invalid.get(reason, 0) + int(hit.sum())
        alive &= ~broken
    return mesh[alive]


def _schedules(space: SearchSpace, pp: int) -> list[tuple[int, int]]:
    """(schedule index, virtual stages) options for a pipeline of ``pp`` ranks."""
    if pp == 1:
        return [(0, 1)]
    out = [(0, 1)] if "1f1b" in space.schedules else []
    if "interleaved" in space.schedules:
        per_rank = space.model.n_layers // pp
        out += [(1, v) for v in range(2, per_rank + 1)
                if layers_split_ok(space.model.n_layers, pp, v)]
    return out


def _micro_batches(space: SearchSpace, shards: int) -> tuple[list[int], int]:
    """(micro-batch sizes that divide the per-shard batch, how many tried sizes did not)."""
    if space.micro_batches is None:
        return list(divisors(space.global_batch // shards)), 0
    ok = [b for b in space.micro_batches if batch_split_ok(space.global_batch, b, shards)]
    return ok, len(space.micro_batches) - len(ok)


def enumerate_candidates(space: SearchSpace) -> Candidates:
    """Every valid configuration of ``space`` as a Candidates table, with invalid counts."""
    invalid = {k: 0 for k in REASONS}
    finder = PlacementFinder(space.levels)
    blocks = []
    for mesh in valid_meshes(space, invalid):
        sizes = dict(zip(AXES, (int(x) for x in mesh)))
        pids = finder.for_mesh(sizes)
        if not pids:
            invalid["no placement"] += 1
            continue
        shards = sizes["data"] * sizes["fsdp"] * sizes["expert"]
        mbs, bad_mb = _micro_batches(space, shards)
        invalid["micro-batch % batch"] += bad_mb * len(pids) * len(space.remats)
        blocks.append((mesh, pids, mbs, _schedules(space, sizes["pipeline"])))
    cands = _expand(space, blocks, finder, invalid) if blocks else None
    if cands is None or len(cands) == 0:
        raise _nothing_valid(space, invalid)
    return cands


def _expand(space: SearchSpace, blocks, finder: PlacementFinder, invalid: dict[str, int]) -> Candidates:
    """Cross each mesh with its placements, micro-batches, remats and schedules: row ``j`` of
    mesh ``i`` is ``((placement * M_i + micro-batch) * R + remat) * S_i + schedule``."""
    remats = np.array([REMATS.index(r) for r in space.remats], dtype=np.int8)
    R = len(remats)
    P = np.array([len(b[1]) for b in blocks], dtype=np.int64)
    M = np.array([len(b[2]) for b in blocks], dtype=np.int64)
    S = np.array([len(b[3]) for b in blocks], dtype=np.int64)
    rows = P * M * R * S
    mesh_of = np.repeat(np.arange(len(blocks)), rows)
    j = np.arange(int(rows.sum())) - np.repeat(np.cumsum(rows) - rows, rows)
    s = j % S[mesh_of]
    j //= S[mesh_of]
    r = j % R
    j //= R
    mb = j % M[mesh_of]
    p = j // M[mesh_of]

    def flat(k: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        lens = np.array([len(b[k]) for b in blocks], dtype=np.int64)
        vals = [x for b in blocks for x in b[k]]
        return np.array(vals, dtype=dtype).reshape(len(vals), -1), np.cumsum(lens) - lens

    pids, p0 = flat(1, np.int32)
    mbs, m0 = flat(2, np.int64)
    scheds, s0 = flat(3, np.int64)
    meshes = np.array([b[0] for b in blocks], dtype=np.int64).reshape(-1, len(AXES))
    sv = scheds[s0[mesh_of] + s]
    cands = Candidates(space, meshes[mesh_of], pids[p0[mesh_of] + p, 0], mbs[m0[mesh_of] + mb, 0],
                       remats[r], sv[:, 0].astype(np.int8), sv[:, 1], finder.registry, invalid)
    bad = ~interleaved_ok(cands.microbatches, cands.axis("pipeline"),
                          cands.schedule == SCHEDULES.index("interleaved"))
    invalid["interleaved % pipeline"] += int(bad.sum())
    return cands.take(~bad)


def _nothing_valid(space: SearchSpace, invalid: dict[str, int]) -> NoFeasibleConfig:
    top = sorted(((n, k) for k, n in invalid.items() if n), reverse=True)[:3]
    why = "; ".join(f"{REASONS[k]} ({n})" for n, k in top) or "no mesh to try"
    return NoFeasibleConfig(
        f"chips: no valid configuration of {space.model.name} on {space.chips} "
        f"{space.hardware.name} chips with global batch {space.global_batch}: {why}; "
        "try another chip count or global batch", f"no valid mesh: {why}")
