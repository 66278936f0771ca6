"""Topology: the network levels a job occupies, mesh axes placed on them, and the device graph.

Devices are numbered in mixed radix over the levels, innermost first: device ``i`` has level
coordinates ``c_l = (i // prod(size_<l)) % size_l``, where ``size_l`` is what the job uses of one
group of level ``l`` (e.g. 64 GPUs of a 72-GPU NVLink rack, see :func:`job_levels`). Each mesh
axis occupies a factor of one or more levels (:class:`AxisPlacement`); a collective over that axis
runs hierarchically over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

import networkx as nx

from hardware_profiles.schema import HardwareProfile
from meshcast.errors import MeshcastError


@dataclass(frozen=True, slots=True)
class Level:
    """One network level as this job uses it: ``size`` devices along it."""

    name: str
    kind: str  # switch | torus | fat_tree
    size: int
    bandwidth_bytes_per_s: float  # per device (torus: per link), per direction
    latency_s: float
    efficiency: float
    wraparound: bool
    #: ((kind, efficiency, latency_s), ...): per-collective-kind values replacing the two above
    per_kind: tuple[tuple[str, float, float], ...] = ()

    @property
    def effective_bandwidth(self) -> float:
        return self.bandwidth_bytes_per_s * self.efficiency

    def for_kind(self, kind: str) -> Level:
        """This level as collective ``kind`` sees it (its calibrated efficiency and latency)."""
        for k, eff, lat in self.per_kind:
            if k == kind:
                return replace(self, efficiency=eff, latency_s=lat, per_kind=())
        return self


@dataclass(frozen=True, slots=True)
class AxisPart:
    """A mesh axis' share of one level: ``factor`` devices along it; ``full`` if the whole level."""

    level: Level
    factor: int

    @property
    def wraps(self) -> bool:
        """A ring over this part closes only if it spans the whole torus dimension and it wraps."""
        return self.level.kind != "torus" or (self.level.wraparound and self.factor == self.level.size)


def job_levels(profile: HardwareProfile, chips: int, slice_shape: list[int] | None = None) -> list[Level]:
    """The levels a job of ``chips`` devices occupies, innermost first, with their sizes.

    A level's ``size`` here is what *this job* uses of one group of it (GPUs per rack, say), so
    every collective and every search placement sees the job's real NVLink domains.

    GPU systems fill the innermost level (the NVLink domain) first (:func:`_gpu_shares`). TPU
    systems pick a slice shape with ``chips`` chips (or ``slice_shape``); more chips than the
    largest slice use several slices joined by the outer (DCN) level.
    """
    if chips < 1:
        raise MeshcastError(f"chips: {chips} must be a positive integer")
    if profile.slices:
        return _torus_levels(profile, chips, slice_shape)
    if slice_shape is not None:
        raise MeshcastError(
            f"slice_shape: {slice_shape} given but {profile.name} has no torus slices; "
            "drop --slice (it applies to TPU profiles)"
        )
    shares = _gpu_shares(profile, chips)
    if isinstance(shares, str):
        raise MeshcastError(f"chips: {chips} {shares}{_nearest_note(profile, chips)}")
    return [_level(lv, size, lv.wraparound) for lv, size in zip(profile.network, shares)]


def _gpu_shares(profile: HardwareProfile, chips: int) -> list[int] | str:
    """How many members of one group of each level a job of ``chips`` uses (innermost first),
    or a sentence saying why it cannot be placed.

    The job takes whole placement units (``placement_unit``: a 4-GPU compute tray of a GB200
    NVL72 rack; absent, a whole group, e.g. an 8-GPU server) and puts the *same* number of them
    in every group it uses, in as few groups as possible: the largest multiple ``g`` of the unit
    that divides the job and fits a group, over ``members / g`` groups. On NVL72 (trays of 4,
    racks of 72): 64 GPUs in one rack, 128 in two racks of 64, 144 in two full racks, 256 in
    four racks of 64.

    This is what Slurm's topology/block plugin (23.11+, one block per NVL72 rack) does with
    ``--segment`` set to the largest tray count that divides the job and fits a rack: a job of at
    most 18 trays stays in one block, and each segment of a larger job stays inside one rack.
    NVIDIA's GB200 NVL72 scheduling guidance (NVIDIA technical blog, "Slurm topology-aware job
    scheduling" on GB200 NVL72) recommends segments of 16 trays (64 GPUs per rack) for large
    training jobs, which is what this gives for 128 and 256 GPUs (and it leaves two trays of each
    rack free, so a rack with a failed tray still holds a segment). Equal shares keep each mesh
    axis' groups one size; an unbalanced 72 + 56 split could not hold a uniform mesh. (The same
    guidance lets smaller jobs use segments of 4 trays to cut fragmentation, spreading e.g. 64
    GPUs over racks; this forecasts the compact placement.) A job smaller than one unit uses
    part of it, like 4 GPUs of an 8-GPU server.
    """
    shares: list[int] = []
    remaining, inner = chips, 1  # members left at this level; devices per member
    for i, lv in enumerate(profile.network):
        if i == len(profile.network) - 1:
            if remaining > lv.size:
                top = math.prod(x.size for x in profile.network)
                if chips > top:
                    return f"exceeds the largest {profile.name} system ({top} chips)"
                return (f"needs {remaining} {lv.name} members of {inner} devices (equal whole-unit "
                        f"shares of each group) but the largest {profile.name} system has {lv.size}")
            shares.append(remaining)
            break
        unit = int(lv.placement_unit.value) if lv.placement_unit is not None else lv.size
        if remaining % unit and remaining > unit:
            u = unit * inner
            where = ("" if unit == lv.size else
                     f" (each {lv.name} group of {lv.size * inner} is handed out {u} at a time)")
            what = "groups" if unit == lv.size else "placement units"
            return (f"does not fill whole {lv.name} {what} of {u} on {profile.name}{where}; use a "
                    f"multiple of {u} (or fewer than {u})")
        if remaining <= lv.size:
            size = remaining
        else:
            size = max(g for g in range(unit, lv.size + 1, unit) if remaining % g == 0)
        shares.append(size)
        remaining //= size
        inner *= size
    return shares


def _nearest_note(profile: HardwareProfile, chips: int) -> str:
    """``; nearest valid: 68 or 72`` (the closest chip counts that place, below and above)."""
    top = math.prod(x.size for x in profile.network)
    below = next((n for n in range(min(chips, top + 1) - 1, 0, -1)
                  if not isinstance(_gpu_shares(profile, n), str)), None)
    above = next((n for n in range(chips + 1, min(2 * chips, top) + 1)
                  if not isinstance(_gpu_shares(profile, n), str)), None)
    valid = [str(n) for n in (below, above) if n is not None]
    return f"; nearest valid: {' or '.join(valid)}" if valid else ""


def _level(lv, size: int, wrap: bool) -> Level:
    per_kind = tuple((k, o.efficiency.value, o.latency_s.value) for k, o in lv.collectives.items())
    return Level(lv.name, lv.kind, size, lv.link_bandwidth_bytes_per_s.value, lv.latency_s.value,
                 lv.efficiency.value, wrap, per_kind)


def _torus_levels(profile: HardwareProfile, chips: int, slice_shape: list[int] | None) -> list[Level]:
    torus = [lv for lv in profile.network if lv.kind == "torus"]
    outer = [lv for lv in profile.network if lv.kind != "torus"]
    if slice_shape is not None:
        match = [s for s in profile.slices if s.shape == list(slice_shape)]
        if not match:
            raise MeshcastError(
                f"slice_shape: {slice_shape} is not a {profile.name} slice; valid: "
                f"{', '.join('x'.join(map(str, s.shape)) for s in profile.slices)}"
            )
        sl = match[0]
    else:
        exact = [s for s in profile.slices if s.chips == chips]
        dividing = [s for s in profile.slices if chips % s.chips == 0]
        if exact:
            sl = exact[0]
        elif dividing and outer:
            sl = max(dividing, key=lambda s: s.chips)
        else:
            raise MeshcastError(
                f"chips: {chips} is no {profile.name} slice size nor a multiple of one; valid slice "
                f"sizes: {sorted({s.chips for s in profile.slices})}"
            )
    if chips % sl.chips:
        raise MeshcastError(f"chips: {chips} is not a multiple of the slice {sl.shape} ({sl.chips} chips)")
    n_slices = chips // sl.chips
    levels = [_level(lv, d, w) for lv, d, w in zip(torus, sl.shape, sl.wraparound)]
    if n_slices > 1 and not outer:
        raise MeshcastError(f"chips: {chips} needs {n_slices} slices but {profile.name} has no DCN level")
    if outer:
        if n_slices > outer[0].size:
            raise MeshcastError(f"chips: {n_slices} slices exceed {outer[0].name} size {outer[0].size}")
        levels.append(_level(outer[0], n_slices, False))
    return levels


def place_axes(
    levels: list[Level], mesh: dict[str, int], order: list[str], bindings: dict[str, list[str]]
) -> dict[str, list[AxisPart]]:
    """Give each mesh axis (size > 1) its factors of the levels.

    Bound axes take their named levels first (in the order named); the others fill what is left,
    innermost level first, in ``order``. An axis whose size does not divide what is left on a level
    spills to the next level (a hierarchical group).
    """
    free = {lv.name: lv.size for lv in levels}
    by_name = {lv.name: lv for lv in levels}
    placed: dict[str, list[AxisPart]] = {}
    for axis, names in bindings.items():
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise MeshcastError(
                f"bindings.{axis}: unknown level {unknown[0]!r}; this job's levels are "
                f"{', '.join(by_name)}"
            )
        if mesh.get(axis, 1) > 1:
            placed[axis] = _take(axis, mesh[axis], [by_name[n] for n in names], free, bound=True)
    for axis in order:
        if axis not in placed and mesh.get(axis, 1) > 1:
            placed[axis] = _take(axis, mesh[axis], levels, free, bound=False)
    return placed


def _take(axis: str, size: int, candidates: list[Level], free: dict[str, int], bound: bool) -> list[AxisPart]:
    parts: list[AxisPart] = []
    need = size
    for lv in candidates:
        if need == 1:
            break
        f = math.gcd(need, free[lv.name])
        if f > 1:
            parts.append(AxisPart(lv, f))
            free[lv.name] //= f
            need //= f
    if need != 1:
        where = "its bound levels " + "+".join(c.name for c in candidates) if bound else "the levels"
        raise MeshcastError(
            f"mesh.{axis}={size} does not fit on {where} (free sizes: "
            f"{', '.join(f'{k}={v}' for k, v in free.items())}); change the mesh or the bindings"
        )
    return parts


@dataclass(frozen=True)
class Topology:
    """Levels + axis placement for one job; the device graph is built on demand."""

    levels: tuple[Level, ...]
    placement: dict[str, tuple[AxisPart, ...]]

    @property
    def n_devices(self) -> int:
        return math.prod(lv.size for lv in self.levels)

    def axis_size(self, axis: str) -> int:
        return math.prod(p.factor for p in self.placement.get(axis, ()))

    def _coords(self, device: int) -> dict[str, int]:
        """Mesh coordinate of ``device`` per axis (axes on a level split it fastest-first)."""
        level_coord = {}
        stride = 1
        for lv in self.levels:
            level_coord[lv.name] = (device // stride) % lv.size
            stride *= lv.size
        used = {lv.name: 1 for lv in self.levels}
        coords: dict[str, int] = {}
        for axis, parts in self.placement.items():  # the order place_axes filled the levels
            c, mult = 0, 1
            for p in parts:
                sub = (level_coord[p.level.name] // used[p.level.name]) % p.factor
                used[p.level.name] *= p.factor
                c += sub * mult
                mult *= p.factor
            coords[axis] = c
        return coords

    def axis_groups(self, axis: str) -> list[list[int]]:
        """The device groups a collective over ``axis`` runs in (each sorted by axis coordinate)."""
        groups: dict[tuple, list[tuple[int, int]]] = {}
        for d in range(self.n_devices):
            c = self._coords(d)
            key = tuple(sorted((a, v) for a, v in c.items() if a != axis))
            groups.setdefault(key, []).append((c.get(axis, 0), d))
        return [[d for _, d in sorted(g)] for g in groups.values()]

    @cached_property
    def graph(self) -> nx.Graph:
        """Devices and switches as nodes; one edge per physical link, tagged with its level.

        switch / fat_tree levels: every device of a group links to that group's switch node.
        torus levels: neighbours along the dimension are linked, plus the wraparound link.
        """
        g = nx.Graph()
        g.add_nodes_from(range(self.n_devices), kind="device")
        stride = 1
        for lv in self.levels:
            for d in range(self.n_devices):
                c = (d // stride) % lv.size
                base = d - c * stride
                if lv.kind == "torus":
                    if c + 1 < lv.size:
                        g.add_edge(d, d + stride, level=lv.name)
                    elif lv.wraparound and lv.size > 2:
                        g.add_edge(d, base, level=lv.name)
                elif lv.size > 1:
                    g.add_edge(d, ("switch", lv.name, base), level=lv.name)
            stride *= lv.size
        return g

    def links_used(self, axis: str) -> set[str]:
        """Levels whose links a ring over ``axis`` crosses (via shortest paths in the graph)."""
        used: set[str] = set()
        for group in self.axis_groups(axis)[:4]:
            for a, b in zip(group, group[1:] + group[:1]):
                if a == b:
                    continue
                path = nx.shortest_path(self.graph, a, b)
                used.update(self.graph.edges[u, v]["level"] for u, v in zip(path, path[1:]))
        return used


def build_topology(profile: HardwareProfile, chips: int, mesh: dict[str, int], order: list[str],
                   bindings: dict[str, list[str]], slice_shape: list[int] | None = None) -> Topology:
    levels = job_levels(profile, chips, slice_shape)
    placement = place_axes(levels, mesh, order, bindings)
    return Topology(tuple(levels), {a: tuple(p) for a, p in placement.items()})
