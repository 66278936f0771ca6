"""The collectives XLA compiled: parse post-optimisation HLO text into per-device records.

One :class:`HloCollective` per collective instruction (an async ``-start``/``-done`` pair counts
once, at its start; a tuple-shaped all-reduce of ``n`` buffers is one instruction carrying
``n`` :class:`Buffer`, each attributed to the jax code that produced it). Bytes follow
:mod:`simulator.cost.collectives` conventions, per device, from the operand shapes (the HLO is
SPMD-partitioned, so every shape is already per device):

=================  ==========================================================
kind               bytes
=================  ==========================================================
all-gather         sum(operand bytes) x group size   (the gathered output S)
reduce-scatter     sum(operand bytes)                (the input S)
all-reduce         sum(operand bytes)                (the buffer S)
all-to-all         sum(operand bytes)                (the buffer B, sent plus kept)
collective-permute sum(operand bytes)                (what each device sends)
=================  ==========================================================

Replica groups come in three spellings, all turned into lists of device positions (partition
ids, i.e. positions in the mesh's row-major device array):

- explicit ``{{0,1},{2,3}}`` (``{}``: all devices in one group);
- iota ``[G,S]<=[d0,d1,..]T(p0,p1,..)``: ``arange(prod d).reshape(d).transpose(p).reshape(G,S)``;
- mesh axes ``mesh['a'=2,'b'=4], device_ids=([4,2]T(1,0)) {'b'}``: the device array (iota, or
  ``arange.reshape(r).transpose(p)``) reshaped to the axis sizes, grouped over the listed axes
  (a sub-axis ``'a':(pre)size`` splits axis ``a`` into ``[pre, size, rest]``).

A group pattern maps back to the mesh axes it spans (:func:`axes_of_groups`); a pattern that is
not exactly "all devices that differ only along these axes" maps to ``None``. Collectives in
called computations are counted as often as their caller runs them (a ``while`` body: its
``known_trip_count``; the reference model unrolls its layers, so its step has no loops).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from simulator.cost.collectives import Collective

#: HLO opcode -> simulator collective kind.
OPCODES = {"all-gather": Collective.ALL_GATHER, "reduce-scatter": Collective.REDUCE_SCATTER,
           "all-reduce": Collective.ALL_REDUCE, "all-to-all": Collective.ALL_TO_ALL,
           "collective-permute": Collective.PERMUTE}
#: Bytes per element of HLO primitive types (sub-byte types as fractions).
DTYPE_BYTES = {"pred": 1, "s2": 0.25, "u2": 0.25, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1,
               "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8,
               "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0}
_FP8 = re.compile(r"f8e\w+|f4e\w+")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=]+)\s*=\s*(?P<shape>.+?)\s+"
                    r"(?P<op>[a-z][a-z0-9\-]*)\((?P<rest>.*)$")
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?(?P<name>[^\s(]+)\s*\(.*\{\s*$")
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_CALLS = re.compile(r"\b(?:calls|body|condition|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"(\d+)"')


class HloParseError(ValueError):
    """The HLO text has a collective this module cannot account for."""


@dataclass(frozen=True)
class MeshLayout:
    """Mesh axis names and sizes, outermost first; device position ``p`` has coordinates
    ``unravel_index(p, sizes)`` (as ``jax.sharding.Mesh.devices`` is laid out)."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]

    @classmethod
    def of(cls, mesh) -> MeshLayout:
        """From a ``jax.sharding.Mesh``."""
        return cls(tuple(mesh.axis_names), tuple(mesh.devices.shape))

    @property
    def n_devices(self) -> int:
        return math.prod(self.sizes)


@dataclass(frozen=True)
class Buffer:
    """One operand of a collective (XLA combines several into one tuple-shaped instruction),
    attributed to the jax code that produced it: for a tuple, the metadata of the operand's
    producer (through metadata-less bitcasts and copies); else the collective's own."""

    shape: str  # "f32[2,64,512]"
    nbytes: float  # in the collective's convention (all-gather: x group size)
    op_name: str = ""
    stack: tuple[str, ...] = ()  # function:line, innermost first
    weight: bool = False  # shaped like an entry parameter: a weight or a weight gradient

    @property
    def phase(self) -> str:
        """``bwd`` when XLA's op_name says ``transpose(jvp(...))``, else ``fwd``."""
        return "bwd" if "transpose(" in self.op_name else "fwd"

    @property
    def source(self) -> str:
        """The innermost ``function:line``, or ''."""
        return self.stack[0] if self.stack else ""


@dataclass(frozen=True)
class HloCollective:
    """One collective instruction: ``count`` executions per step of ``nbytes`` per device."""

    kind: Collective
    axes: tuple[str, ...] | None  # mesh axes the groups span; None: not a whole set of axes
    group_size: int
    nbytes: float
    count: int
    name: str
    buffers: tuple[Buffer, ...] = ()
    op_name: str = ""
    stack: tuple[str, ...] = ()  # function:line of the jax code that produced it, innermost first
    groups: tuple[tuple[int, ...], ...] = field(default=(), repr=False)

    @property
    def source(self) -> str:
        """The innermost ``function:line``, or ''."""
        return self.stack[0] if self.stack else ""

    @property
    def phase(self) -> str:
        return "bwd" if "transpose(" in self.op_name else "fwd"

    @property
    def axis(self) -> str:
        """Axes as the simulator names a group over several axes: ``data+expert``; ``?`` if None."""
        return "+".join(self.axes) if self.axes is not None else "?"


# --- shapes ------------------------------------------------------------------------------
def shape_bytes(shape: str) -> float:
    """Bytes of an HLO shape string, tuples summed: ``(f32[2,3]{1,0}, s32[])`` -> 28."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape):
        size = DTYPE_BYTES.get(dtype, 1 if _FP8.fullmatch(dtype) else None)
        if size is None:
            raise HloParseError(f"unknown HLO element type {dtype!r} in {shape!r}")
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


# --- replica groups ----------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _braced(text: str, start: int) -> str:
    """The ``{...}`` starting at ``text[start]``, nested braces included."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    raise HloParseError(f"unbalanced braces in {text[start:start + 80]!r}")


def _iota(dims: list[int], perm: list[int] | None) -> np.ndarray:
    a = np.arange(math.prod(dims)).reshape(dims)
    return a.transpose(perm) if perm else a


_IOTA = re.compile(r"\[(\d+),(\d+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?")
_MESH = re.compile(r"mesh\[([^\]]*)\](?:,\s*device_ids=\(\[([\d,]+)\](?:T\(([\d,]+)\))?\))?"
                   r"\s*\{([^}]*)\}")
_AXIS_REF = re.compile(r"'([^']+)'(?::\((\d+)\)(\d+))?")


def parse_replica_groups(attrs: str, n_devices: int) -> list[list[int]]:
    """Device groups of a collective from its attribute text (see the module docstring)."""
    at = attrs.find("replica_groups=")
    if at < 0:
        return [list(range(n_devices))]
    text = attrs[at + len("replica_groups="):]
    if text.startswith("{"):
        body = _braced(text, 0)[1:-1].strip()
        groups = [_ints(g) for g in re.findall(r"\{([\d,\s]*)\}", body)]
        return groups or [list(range(n_devices))]
    if text.startswith("mesh["):
        return _mesh_groups(text)
    m = _IOTA.match(text)
    if not m:
        raise HloParseError(f"unrecognised replica_groups {text[:80]!r}")
    g, s = int(m.group(1)), int(m.group(2))
    perm = _ints(m.group(4)) if m.group(4) else None
    return _iota(_ints(m.group(3)), perm).reshape(g, s).tolist()


def _mesh_groups(text: str) -> list[list[int]]:
    """``mesh['a'=2,'b'=4](, device_ids=([r]T(p)))? {'b', 'a':(1)2}`` -> device groups.

    Each grouped axis (or sub-axis ``(pre)size`` of a mesh axis of size ``N``, split as
    ``[pre, size, N / (pre * size)]``) is moved to the end; rows of the result are the groups.
    """
    m = _MESH.match(text)
    if not m:
        raise HloParseError(f"unrecognised mesh replica_groups {text[:120]!r}")
    names, sizes = [], []
    for part in m.group(1).split(","):
        name, _, size = part.strip().rpartition("=")
        names.append(name.strip().strip("'"))
        sizes.append(int(size))
    n = math.prod(sizes)
    devices = (_iota(_ints(m.group(2)), _ints(m.group(3)) if m.group(3) else None)
               if m.group(2) else np.arange(n)).reshape(-1)
    refs: dict[int, list[tuple[int, int]]] = {}
    for name, pre, size in _AXIS_REF.findall(m.group(4)):
        i = names.index(name)
        refs.setdefault(i, []).append((int(pre), int(size)) if pre else (1, sizes[i]))
    dims, grouped = [], []
    for i, full in enumerate(sizes):
        done = 1
        for pre, size in sorted(refs.get(i, [])):
            if pre != done:
                dims.append(pre // done)
                done = pre
            grouped.append(len(dims))
            dims.append(size)
            done *= size
        if done != full or i not in refs:
            dims.append(full // done)
    keep = [d for d in range(len(dims)) if d not in grouped]
    per = math.prod(dims[d] for d in grouped)
    return devices.reshape(dims).transpose(keep + grouped).reshape(-1, per).tolist()


def axes_of_groups(groups: list[list[int]], layout: MeshLayout) -> tuple[str, ...] | None:
    """The mesh axes (size > 1, in layout order) whose devices form exactly these groups.

    Groups are the classes of "same coordinate on every other axis"; ``()`` for singleton groups.
    """
    want = sorted(tuple(sorted(g)) for g in groups)
    coords = np.array(np.unravel_index(np.arange(layout.n_devices), layout.sizes)).T
    live = [i for i, s in enumerate(layout.sizes) if s > 1]
    for k in range(len(live) + 1):
        for axes in combinations(live, k):
            rest = [i for i in range(len(layout.sizes)) if i not in axes]
            classes: dict[tuple, list[int]] = {}
            for p, c in enumerate(coords):
                classes.setdefault(tuple(c[rest]), []).append(p)
            if sorted(tuple(v) for v in classes.values()) == want:
                return tuple(layout.names[i] for i in axes)
    return None


def _permute_groups(attrs: str, n_devices: int) -> list[list[int]]:
    """Connected classes of a collective-permute's ``source_target_pairs`` (self-sends dropped)."""
    m = re.search(r"source_target_pairs=", attrs)
    if not m:
        raise HloParseError(f"collective-permute without source_target_pairs: {attrs[:80]!r}")
    pairs = [tuple(_ints(p)) for p in re.findall(r"\{(\d+,\d+)\}", _braced(attrs, m.end()))]
    parent = list(range(n_devices))

    def root(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        parent[root(a)] = root(b)
    classes: dict[int, list[int]] = {}
    for p in range(n_devices):
        classes.setdefault(root(p), []).append(p)
    return list(classes.values())


def _permute_axes(groups: list[list[int]], layout: MeshLayout) -> tuple[str, ...] | None:
    """Axes along which a permute's members differ (a permute need not fill whole axis groups)."""
    coords = np.array(np.unravel_index(np.arange(layout.n_devices), layout.sizes)).T
    varying = {i for g in groups for i in range(len(layout.sizes)) if len({coords[p][i] for p in g}) > 1}
    return tuple(layout.names[i] for i in sorted(varying))


# --- module structure --------------------------------------------------------------------
@dataclass
class _Instr:
    name: str
    shape: str
    op: str
    operands: list[str]
    attrs: str


def _split_call(rest: str) -> tuple[str, str]:
    """``a, b), attr=...`` -> (operand text, attribute text), parentheses balanced."""
    depth = 1
    for i, ch in enumerate(rest):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return rest[:i], rest[i + 1:]
    return rest, ""


def _operand_names(text: str) -> list[str]:
    names = re.findall(r"%([^\s,)]+)", text)
    if names or not text.strip():
        return names
    return [part.split()[-1] for part in text.split(",") if part.strip()]  # names without '%'


def parse_module(text: str) -> tuple[dict[str, list[_Instr]], str]:
    """(computation name -> its instructions, entry computation name)."""
    comps: dict[str, list[_Instr]] = {}
    entry, current = "", None
    for line in text.splitlines():
        if current is None:
            h = _HEADER.match(line)
            if h:
                current = h.group("name")
                comps[current] = []
                if line.startswith("ENTRY"):
                    entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        m = _INSTR.match(line)
        if m:
            operands, attrs = _split_call(m.group("rest"))
            comps[current].append(_Instr(m.group("name"), m.group("shape"), m.group("op"),
                                         _operand_names(operands), attrs))
    if not entry:
        raise HloParseError("no ENTRY computation in the HLO text")
    return comps, entry


def executions(comps: dict[str, list[_Instr]], entry: str) -> dict[str, int]:
    """How often each computation runs per call of ``entry`` (while bodies x known trip count)."""
    runs = {entry: 1}
    order = [entry]
    while order:
        comp = order.pop()
        for ins in comps.get(comp, []):
            if ins.op.endswith("-done") or ins.op.endswith("-update"):
                continue  # the async start already names (and runs) the wrapped computation
            callees = _CALLS.findall(ins.attrs)
            for b in _BRANCHES.findall(ins.attrs):
                callees += [c.strip().lstrip("%") for c in b.split(",") if c.strip()]
            times = 1
            if ins.op == "while":
                trip = _TRIP.search(ins.attrs)
                times = int(trip.group(1)) if trip else -1
            for callee in callees:
                if callee not in comps:
                    continue
                if times < 0:
                    if _has_collective(comps, callee):
                        raise HloParseError(f"while loop {ins.name} runs collectives but has no "
                                            "known_trip_count; cannot count them per step")
                    continue
                runs[callee] = runs.get(callee, 0) + runs[comp] * times
                order.append(callee)
    return runs


def _has_collective(comps: dict[str, list[_Instr]], comp: str, seen: set | None = None) -> bool:
    seen = seen if seen is not None else set()
    if comp in seen:
        return False
    seen.add(comp)
    for ins in comps.get(comp, []):
        if _collective_kind(ins.op) is not None:
            return True
        if any(_has_collective(comps, c, seen) for c in _CALLS.findall(ins.attrs)):
            return True
    return False


def _collective_kind(op: str) -> Collective | None:
    if op.endswith("-done") or op.endswith("-update"):
        return None
    return OPCODES.get(op.removesuffix("-start"))


# --- source attribution ------------------------------------------------------------------
def _tables(text: str) -> dict[str, dict[int, str]]:
    """The FileNames / FunctionNames / FileLocations / StackFrames tables that head HLO text."""
    out: dict[str, dict[int, str]] = {}
    current = None
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = out.setdefault(line, {})
        elif current is not None and re.match(r"^\d+ ", line):
            k, _, v = line.partition(" ")
            current[int(k)] = v
        elif line.startswith(("HloModule", "%", "ENTRY")):
            current = None
    return out


def _stack_of(frame: int, tables: dict[str, dict[int, str]]) -> tuple[str, ...]:
    """``function:line`` of a stack frame and its callers, innermost first; () without tables.

    The text prints ``parent_frame_id`` one above the parent's id (0: no parent)."""
    out: list[str] = []
    seen = set()
    while frame > 0 and frame not in seen:
        seen.add(frame)
        sf = tables.get("StackFrames", {}).get(frame, "")
        loc = re.search(r"file_location_id=(\d+)", sf)
        if not loc:
            break
        fl = tables.get("FileLocations", {}).get(int(loc.group(1)), "")
        fn = re.search(r"function_name_id=(\d+)", fl)
        line = re.search(r"\bline=(\d+)", fl)
        name = tables.get("FunctionNames", {}).get(int(fn.group(1)), "?").strip('"') if fn else "?"
        out.append(f"{name}:{line.group(1) if line else '?'}")
        parent = re.search(r"parent_frame_id=(\d+)", sf)
        frame = int(parent.group(1)) - 1 if parent else 0
    return tuple(out)


# --- the collectives ---------------------------------------------------------------------
def _signature(shape: str) -> tuple[str, tuple[int, ...]] | None:
    arrays = _ARRAY.findall(shape)
    if len(arrays) != 1:
        return None
    dtype, dims = arrays[0]
    return dtype, tuple(int(d) for d in dims.split(",") if d)


def _is_weight(shape: str, params: set, group: int) -> bool:
    """Shaped like an entry parameter, in any dimension order, or with one dimension ``group``
    times larger (a gradient all-reduced over the group before its slice is kept)."""
    sig = _signature(shape)
    if sig is None or not sig[1]:
        return False
    dtype, dims = sig
    candidates = [dims] + [dims[:i] + (d // group,) + dims[i + 1:]
                           for i, d in enumerate(dims) if group > 1 and d % group == 0]
    return any((dtype, tuple(sorted(c))) in params for c in candidates)


def _metadata(attrs: str, tables) -> tuple[str, tuple[str, ...]]:
    op_name = re.search(r'op_name="([^"]*)"', attrs)
    frame = re.search(r"stack_frame_id=(\d+)", attrs)
    return (op_name.group(1) if op_name else "",
            _stack_of(int(frame.group(1)), tables) if frame else ())


def _producer_attrs(name: str, by_name: dict[str, _Instr]) -> str | None:
    """Attributes of the nearest producer of ``name`` that carries metadata (parameters and
    metadata-less bitcasts/copies are looked through along their first operand)."""
    ins = by_name.get(name)
    for _ in range(16):
        if ins is None or ins.op == "parameter":
            return None
        if "op_name=" in ins.attrs:
            return ins.attrs
        ins = by_name.get(ins.operands[0]) if ins.operands else None
    return None


def parse_collectives(text: str, layout: MeshLayout) -> list[HloCollective]:
    """Every collective of the module in ``text``, counted per execution of its entry."""
    comps, entry = parse_module(text)
    runs = executions(comps, entry)
    tables = _tables(text)
    params = {(sig[0], tuple(sorted(sig[1])))
              for i in comps[entry] if i.op == "parameter" and (sig := _signature(i.shape))}
    out = []
    for comp, instrs in comps.items():
        shapes = {i.name: i.shape for i in instrs}
        by_name = {i.name: i for i in instrs}
        for ins in instrs:
            kind = _collective_kind(ins.op)
            if kind is None or runs.get(comp, 0) == 0:
                continue
            missing = [o for o in ins.operands if o not in shapes]
            if missing:
                raise HloParseError(f"{ins.name}: operand shapes unknown for {missing}")
            operand_bytes = sum(shape_bytes(shapes[o]) for o in ins.operands)
            if kind is Collective.PERMUTE:
                groups = _permute_groups(ins.attrs, layout.n_devices)
                axes = _permute_axes(groups, layout)
            else:
                groups = parse_replica_groups(ins.attrs, layout.n_devices)
                axes = axes_of_groups(groups, layout)
            size = max(len(g) for g in groups)
            scale = size if kind is Collective.ALL_GATHER else 1
            op_name, stack = _metadata(ins.attrs, tables)
            buffers = []
            for o in ins.operands:
                attrs = _producer_attrs(o, by_name) if len(ins.operands) > 1 else None
                b_name, b_stack = _metadata(attrs, tables) if attrs else (op_name, stack)
                shape = "".join(f"{t}[{d}]" for t, d in _ARRAY.findall(shapes[o]))
                buffers.append(Buffer(shape, shape_bytes(shapes[o]) * scale, b_name, b_stack,
                                      _is_weight(shapes[o], params, size)))
            out.append(HloCollective(
                kind=kind, axes=axes, group_size=size, nbytes=operand_bytes * scale,
                count=runs[comp], name=ins.name, buffers=tuple(buffers), op_name=op_name,
                stack=stack, groups=tuple(tuple(g) for g in groups)))
    return out


def compiled_collectives(jitted, args: tuple, mesh) -> list[HloCollective]:
    """Lower and compile ``jitted(*args)`` and parse the collectives of the optimised HLO."""
    text = jitted.lower(*args).compile().as_text()
    return parse_collectives(text, MeshLayout.of(mesh))


__all__ = ["Buffer", "HloCollective", "HloParseError", "MeshLayout", "axes_of_groups", "compiled_collectives",
           "parse_collectives", "parse_replica_groups", "shape_bytes"]
