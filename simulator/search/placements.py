"""Bindings of mesh axes to network levels worth trying, and what each costs per byte.

For a mesh, each order of its non-trivial axes fills the levels innermost first
(:func:`simulator.cost.topology.place_axes`, the same greedy rule ``--bind``/``axis_order`` use): the
first axis in the order gets the fastest links. Orders that give the same placement are one
candidate. Every collective formula in :mod:`simulator.cost.collectives` is affine in the message
size for a fixed placement (ring, hierarchical, direct all-to-all and permute are all
``latency + bytes x coefficient``), so a placement is summarised per (axis, collective kind) by
``time(S) = alpha * S + beta`` for ``S > 0``, read off ``collective_time`` itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import numpy as np

from simulator.cost.collectives import Collective, collective_time
from meshcast.errors import MeshcastError
from simulator.specs.sharding import AXES, DEFAULT_AXIS_ORDER
from simulator.cost.topology import AxisPart, Level, Topology, place_axes
from simulator.search.codes import unique_rows

#: (axis group, collective) pairs the step graph issues; the columns of :func:`coefficients`.
COLLECTIVES: tuple[tuple[str, Collective], ...] = (
    ("model", Collective.ALL_GATHER), ("model", Collective.REDUCE_SCATTER),
    ("seq", Collective.ALL_GATHER), ("seq", Collective.REDUCE_SCATTER),
    ("expert", Collective.ALL_TO_ALL),
    ("fsdp", Collective.ALL_GATHER), ("fsdp", Collective.REDUCE_SCATTER),
    ("data", Collective.ALL_REDUCE), ("data", Collective.REDUCE_SCATTER),
    ("data", Collective.ALL_GATHER),
    ("data+expert", Collective.ALL_REDUCE), ("data+expert", Collective.REDUCE_SCATTER),
    ("data+expert", Collective.ALL_GATHER),
    ("data+seq", Collective.ALL_REDUCE), ("data+seq", Collective.REDUCE_SCATTER),
    ("data+seq", Collective.ALL_GATHER),
    ("data+expert+seq", Collective.ALL_REDUCE), ("data+expert+seq", Collective.REDUCE_SCATTER),
    ("data+expert+seq", Collective.ALL_GATHER),
    ("pipeline", Collective.PERMUTE),
)
#: Axes whose order on the fast levels is searched; ``data`` and ``pipeline`` (one gradient
#: reduction per step, point-to-point activations) always take what is left, outermost.
INNER_AXES = ("model", "seq", "expert", "fsdp")
OUTER_AXES = ("data", "pipeline")
COLUMN = {key: i for i, key in enumerate(COLLECTIVES)}
#: The column after COLLECTIVES: the expert all-to-all as a deduplicated dispatch (DeepEP), for
#: the (experts, top-k) given to :func:`coefficients`; zero when none is given.
DEDUP_COLUMN = len(COLLECTIVES)
_PROBE_BYTES = 2.0**30


@dataclass(frozen=True)
class Placement:
    """One binding: ``order`` (all six axes, as ShardingSpec.axis_order) reproduces ``parts``;
    ``key`` is the same per axis (AXES order) as ``((level index, factor), ...)`` or None."""

    order: tuple[str, ...]
    parts: tuple[tuple[str, tuple[AxisPart, ...]], ...]
    levels: tuple[Level, ...]
    key: tuple = ()
    affine_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @cached_property
    def topology(self) -> Topology:
        return Topology(self.levels, dict(self.parts))

    @property
    def label(self) -> str:
        """``model->nvlink:2, data->ib:4`` (as ``predict`` prints the placement)."""
        return ", ".join(f"{a}->" + "+".join(f"{p.level.name}:{p.factor}" for p in parts)
                         for a, parts in self.parts) or "single device"

    def factors(self) -> tuple[int, ...]:
        """Per axis (AXES order), its factor on each level (1 where it has none), flat:
        axis ``a``'s factor on level ``l`` at ``a * len(levels) + l``."""
        return _factors(self.key, len(self.levels))


@lru_cache(maxsize=1 << 16)
def _factors(key: tuple, n_levels: int) -> tuple[int, ...]:
    """:meth:`Placement.factors` of a placement key (memoised: searches of one job meet the
    same keys again)."""
    out = [1] * (len(AXES) * n_levels)
    for a, comp in enumerate(key):
        for level, f in comp or ():
            out[a * n_levels + level] = f
    return tuple(out)


def coefficients(placements: list[Placement], pids: np.ndarray,
                 dedup: tuple[int, ...] | None = None) -> np.ndarray:
    """``(len(pids), len(COLLECTIVES) + 1, 2)``: ``[alpha, beta]`` of each placement's
    collectives (``time = alpha * bytes + beta``), the last column the deduplicated expert
    dispatch for the routing ``dedup`` (:func:`~simulator.cost.formulas.dedup_routing`). A group
    ``a+b`` multiplies its axes' factors level by level, as ``CostContext.parts`` merges them;
    each distinct group placement is read off ``collective_time`` once."""
    out = np.zeros((len(pids), len(COLLECTIVES) + 1, 2))
    if len(pids) == 0:
        return out
    first = placements[int(pids[0])]
    levels, cache = first.levels, first.affine_cache
    F = np.array([placements[p].factors() for p in pids.tolist()], dtype=np.int64)
    F = F.reshape(len(pids), len(AXES), len(levels))
    columns = list(COLLECTIVES) + ([("expert", Collective.ALL_TO_ALL)] if dedup else [])
    for col, (group, kind) in enumerate(columns):
        how = dedup if col == DEDUP_COLUMN else None
        merged = np.prod(F[:, [_AXIS_INDEX[a] for a in group.split("+")], :], axis=1)
        uniq, inv = unique_rows(merged)
        vals = []
        for u in uniq:
            compact = tuple((lv, int(f)) for lv, f in enumerate(u) if f > 1)
            if (kind, compact, how) not in cache:
                parts = tuple(AxisPart(levels[lv], f) for lv, f in compact)
                cache[(kind, compact, how)] = affine(kind, parts, how)
            vals.append(cache[(kind, compact, how)])
        out[:, col] = np.array(vals)[inv]
    return out


def affine(kind: Collective, parts: tuple[AxisPart, ...],
           dedup: tuple[int, ...] | None = None) -> tuple[float, float]:
    """``(alpha, beta)`` with ``collective_time(kind, parts, S) = alpha * S + beta`` for S > 0,
    read off two sizes (exact up to rounding: every formula is affine in S)."""
    if not parts:
        return 0.0, 0.0
    t1 = collective_time(kind, parts, _PROBE_BYTES, dedup)
    t2 = collective_time(kind, parts, 2 * _PROBE_BYTES, dedup)
    alpha = (t2 - t1) / _PROBE_BYTES
    return alpha, t1 - alpha * _PROBE_BYTES


_AXIS_INDEX = {a: i for i, a in enumerate(AXES)}


@lru_cache(maxsize=256)
def _orders(inner: tuple[str, ...], outer: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Every order of the inner axes followed by every order of the outer ones."""
    return tuple(i + o for i in itertools.permutations(inner) for o in itertools.permutations(outer))


class PlacementFinder:
    """Distinct placements per mesh on one job's levels (memoised by the size sequence)."""

    def __init__(self, levels: list[Level]) -> None:
        self.levels = tuple(levels)
        self._greedy: dict[tuple[int, ...], tuple | None] = {}
        self.registry: list[Placement] = []
        self._ids: dict[tuple, int] = {}
        self._affine: dict = {}

    def _place(self, sizes: tuple[int, ...]):
        """place_axes on anonymous axes of these sizes, in this order: per axis its parts and a
        compact ``((level index, factor), ...)`` form; None if they do not fit."""
        if sizes not in self._greedy:
            names = [f"a{i}" for i in range(len(sizes))]
            index = {lv.name: i for i, lv in enumerate(self.levels)}
            try:
                got = place_axes(list(self.levels), dict(zip(names, sizes)), names, {})
                parts = tuple(tuple(got[n]) for n in names)
                compact = tuple(tuple((index[p.level.name], p.factor) for p in ps) for ps in parts)
                self._greedy[sizes] = parts, compact
            except MeshcastError:
                self._greedy[sizes] = None
        return self._greedy[sizes]

    def for_mesh(self, mesh: dict[str, int]) -> list[int]:
        """Ids (into ``registry``) of the distinct placements of ``mesh``; [] if none fits."""
        inner = [a for a in INNER_AXES if mesh.get(a, 1) > 1]
        outer = [a for a in OUTER_AXES if mesh.get(a, 1) > 1]
        found: list[int] = []
        for order in _orders(tuple(inner), tuple(outer)):
            got = self._place(tuple(mesh[a] for a in order))
            if got is None:
                continue
            where = [None] * len(AXES)
            for a, c in zip(order, got[1]):
                where[_AXIS_INDEX[a]] = c
            key = tuple(where)
            pid = self._ids.get(key)
            if pid is None:
                full = tuple(order) + tuple(a for a in DEFAULT_AXIS_ORDER if a not in order)
                by_axis = dict(zip(order, got[0]))
                parts = tuple((a, by_axis[a]) for a in AXES if a in by_axis)
                pid = self._ids[key] = len(self.registry)
                self.registry.append(Placement(full, parts, self.levels, key, self._affine))
            if pid not in found:
                found.append(pid)
        return found
