"""What to measure: benchmark cases as data (kind, sizes), planned from a mesh and a job.

Matmul shapes come from the simulator's own plan of a reference job (so calibration
covers the GEMMs a forecast will ask about), plus a square sweep. Each matmul case times the
training triple of ``[m, k] x [k, n]`` -- the forward GEMM and both backward GEMMs (data and
weight gradients, with whatever layout changes the backend makes for them) -- so it counts
``6 m k n`` FLOPs, as a train step runs it. Attention cases time the reference model's own
attention core forward and backward, counted in the simulator's units (causal half:
``2 b s^2 h hd`` forward, times 3.5 for forward plus a 2.5x backward). Elementwise cases stream
``x * a + b`` (the host's memory bandwidth); what a step's elementwise ops achieve is measured in
context, by timing the reference layer and head whole (``block`` and ``head`` cases,
:mod:`calibration.context`). Gather cases time the embedding lookup and its scatter-add
gradient. Message sizes stay below 32 MiB per device: larger CPU buffers are re-mapped and
page-faulted on every call.
"""

from __future__ import annotations

from dataclasses import dataclass

from calibration.context import CONTEXT_KINDS, context_ops, context_sizes, elementwise_bytes
from calibration.dtypes import itemsize
from simulator.cost.collectives import Collective
from simulator.graph.ops import OpKind
from simulator.graph.step import BWD_SCALE

MAX_MESSAGE_BYTES = 16 * 2**20
COLLECTIVES = [c.value for c in Collective]


def fwd_bwd(kind: OpKind) -> float:
    """Forward plus backward over forward, as the step graph charges ``kind`` (matmul 3,
    attention 3.5, elementwise 3)."""
    return 1.0 + BWD_SCALE[kind]


@dataclass(frozen=True)
class BenchCase:
    """One benchmark case. Sizes are per device; ``nbytes`` follows simulator.cost.collectives."""

    kind: str  # launch | matmul | attention | elementwise | gather | collective | block | head
    op: str = ""
    axis: str = ""
    group_size: int = 1
    dtype: str = "float32"
    m: int = 0
    k: int = 0
    n: int = 0
    hd: int = 0  # attention: head dim (m sequences, k sequence length, n heads per device)
    nbytes: float = 0.0
    #: collectives: the network level(s) a group crosses ("host", "cross_host", or
    #: "host+cross_host" for an axis spanning both, run hierarchically; "" not recorded) and the
    #: hosts one group spans (:func:`calibration.measure.mesh.axis_levels`)
    levels: str = ""
    hosts: int = 1

    def row_fields(self) -> dict:
        """The case's columns of a raw row (:data:`calibration.raw.COLUMNS`, less the run's
        metadata, the repetition and its seconds)."""
        return {"case_id": self.case_id, "kind": self.kind, "op": self.op, "axis": self.axis,
                "group_size": self.group_size, "dtype": self.dtype, "m": self.m, "k": self.k,
                "n": self.n, "hd": self.hd, "nbytes": self.nbytes, "flops": self.flops,
                "levels": self.levels, "hosts": self.hosts}

    @property
    def flops(self) -> float:
        if self.kind in CONTEXT_KINDS:  # the plan's GEMM and attention FLOPs of the case
            return sum(op.flops for op in context_ops(self.kind, self.m, self.k, self.dtype)
                       if op.kind is not OpKind.ELEMENTWISE)
        if self.kind == "attention":
            return fwd_bwd(OpKind.ATTENTION) * 2.0 * self.m * self.k ** 2 * self.n * self.hd
        return fwd_bwd(OpKind.MATMUL) * 2.0 * self.m * self.k * self.n

    @property
    def case_id(self) -> str:
        if self.kind == "matmul":
            return f"matmul:{self.m}x{self.k}x{self.n}:{self.dtype}"
        if self.kind == "attention":
            return f"attention:{self.m}x{self.k}x{self.n}x{self.hd}:{self.dtype}"
        if self.kind in CONTEXT_KINDS:
            return f"{self.kind}:{self.m}x{self.k}:{self.dtype}"
        if self.kind == "gather":
            return f"gather:{self.m}x{self.k}x{self.n}:{self.dtype}"
        if self.kind == "collective":
            return f"collective:{self.op}:{self.axis}:{int(self.nbytes)}:{self.dtype}"
        if self.kind == "elementwise":
            return f"elementwise:{int(self.nbytes)}:{self.dtype}"
        return f"{self.kind}:{self.dtype}"


def graph_matmul_shapes(job, max_flops: float) -> list[tuple[int, int, int]]:
    """Distinct (m, k, n) of the matmuls in the plan of ``job`` (a
    :class:`calibration.reference.ShapeJob`: shapes, no hardware), scaled down (m first) until
    each fits ``max_flops`` so a CPU sweep stays short."""
    layers = list(range(min(job.model.n_layers, 2)))
    shapes = set()
    for _, op, _ in job.plan(layers).unrolled():
        if op.shape is None or op.phase != "fwd":
            continue
        m, k, n = (max(1, int(x)) for x in op.shape)
        while 2.0 * m * k * n > max_flops and m > 16:
            m //= 2
        shapes.add((m, k, n))
    return sorted(shapes)


def plan_cases(mesh_sizes: dict[str, int], job, quick: bool, dtype: str = "float32",
               devices=None) -> list[BenchCase]:
    """Every case for one run: launch baseline, matmuls, attention, elementwise, gathers, the
    in-context layer and head, collectives per axis (:func:`collective_groups`).

    ``devices``: the real mesh's device array (``jax.sharding.Mesh.devices``, axes in the order
    of ``mesh_sizes``); with it each collective records the level(s) its groups cross and the
    hosts they span, and a run over several hosts also measures an axis spanning both levels."""
    cases = [BenchCase("launch", dtype=dtype)]
    max_flops = 1e9 if quick else 1e10
    squares = [128, 256, 512] if quick else [128, 256, 512, 1024, 2048]
    shapes = {(s, s, s) for s in squares} | set(graph_matmul_shapes(job, max_flops))
    cases += [BenchCase("matmul", dtype=dtype, m=m, k=k, n=n) for m, k, n in sorted(shapes)]
    cases += attention_cases(job, quick, dtype)
    sizes = [2**p for p in (range(12, 25, 2) if quick else range(10, 25, 1))]
    cases += [BenchCase("elementwise", dtype=dtype, nbytes=b) for b in sizes]
    cases += gather_cases(job, quick, dtype)
    cases += [BenchCase(kind, dtype=dtype, m=b, k=s,
                        nbytes=elementwise_bytes(kind, b, s, dtype))
              for kind in CONTEXT_KINDS for b, s in context_sizes(quick)]
    for axes, size, levels, hosts in collective_groups(mesh_sizes, devices):
        for op in COLLECTIVES:
            for b in sizes:
                nb = max(b - b % (size * 4 * size), size * 4 * size)  # divisible into shards
                if nb <= MAX_MESSAGE_BYTES:
                    cases.append(BenchCase("collective", op=op, axis="+".join(axes),
                                           group_size=size, dtype=dtype, nbytes=nb,
                                           levels=levels, hosts=hosts))
    return list({c.case_id: c for c in cases}.values())


def collective_groups(mesh_sizes: dict[str, int], devices=None
                      ) -> list[tuple[tuple[str, ...], int, str, int]]:
    """(mesh axes, group size, levels, hosts per group) of each collective group to measure:
    every axis of size > 1; and, when the mesh has an axis across hosts and one within a host,
    the two together (outermost first, ``data+model``), a group spanning both levels, which the
    fit does not fit but predicts from the two levels (the hierarchical form, held out whole).
    Without ``devices`` the levels are not known: ``""``, one host."""
    from calibration.levels import ACROSS_HOSTS, WITHIN_HOST, axis_levels

    names = list(mesh_sizes)
    out = []
    for axis, size in mesh_sizes.items():
        if size > 1:
            levels, hosts = axis_levels(devices, names, (axis,)) if devices is not None else ("", 1)
            out.append(((axis,), size, levels, hosts))
    across = [g for g in out if g[2] == ACROSS_HOSTS]
    within = [g for g in out if g[2] == WITHIN_HOST]
    if across and within:
        a, w = across[-1][0][0], within[-1][0][0]  # innermost of each
        axes = tuple(sorted((a, w), key=names.index))
        levels, hosts = axis_levels(devices, names, axes)
        out.append((axes, mesh_sizes[a] * mesh_sizes[w], levels, hosts))
    return out


def attention_cases(job, quick: bool, dtype: str = "float32") -> list[BenchCase]:
    """The job's heads per device and head dim over a sweep of sequences and lengths."""
    m, t = job.model, job.mesh.get("model", 1)
    heads = max(1, m.n_heads // t)
    lengths = [64, 128, 256, 512] if quick else [64, 128, 256, 512, 1024, 2048]
    out = []
    for s in lengths:
        for b in ([1, 2] if quick else [1, 2, 4]):
            c = BenchCase("attention", dtype=dtype, m=b, k=s, n=heads, hd=m.hd)
            if c.flops <= (4e9 if quick else 4e10):
                out.append(c)
    return out


def gather_cases(job, quick: bool, dtype: str = "float32") -> list[BenchCase]:
    """The embedding lookup and its scatter-add gradient: ``m`` tokens from a ``[n, k]`` table
    (the job's vocabulary rows per model rank), counted as the simulator's ``embed`` op forward
    plus its backward (2x, plus the dense gradient table): ``3 x 2 m k + n k`` elements
    (simulator.graph.layers.embedding_ops)."""
    m = job.model
    rows = max(1, m.vocab_size // job.mesh.get("model", 1))
    tokens = [64, 256, 1024, 2048, 4096] if quick else [32, 64, 128, 256, 512, 1024, 2048, 4096,
                                                         8192]
    return [BenchCase("gather", dtype=dtype, m=t, k=m.d_model, n=rows,
                 nbytes=(fwd_bwd(OpKind.ELEMENTWISE) * 2.0 * t + rows) * m.d_model
                 * itemsize(dtype))
            for t in tokens]
