"""Ops are data: one record per compute op or collective, and the streams they run on (their
costs: :mod:`simulator.graph.cost`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from simulator.cost.collectives import Collective


class OpKind(str, Enum):
    MATMUL = "matmul"
    ATTENTION = "attention"
    ELEMENTWISE = "elementwise"
    COLLECTIVE = "collective"
    HOST = "host"  # the host issuing eager ops (runs beside the device; see moe_mlp)


#: Streams: one compute stream, and one per kind of communication so they overlap each other.
COMPUTE = "compute"
#: The host thread that issues kernels, where its issue rate can bind (OpKind.HOST ops).
HOST = "host"
#: Every stream a plan uses: compute, tensor / context / expert parallel collectives, FSDP
#: gathers, gradient reductions, and the host.
STREAMS = (COMPUTE, "tp", "cp", "ep", "fsdp", "grad", HOST)


@dataclass(slots=True)
class Op:
    """One node of the step graph before it is placed in a layer.

    ``deps`` name ops of the same template; ``unit_flops`` is one GEMM's size for efficiency.
    For collectives ``nbytes`` follows :mod:`simulator.cost.collectives` conventions and ``axis`` is a
    mesh axis or ``a+b`` for a group over several axes.
    """

    name: str
    kind: OpKind
    stream: str = COMPUTE
    flops: float = 0.0
    nbytes: float = 0.0
    unit_flops: float = 0.0
    collective: Collective | None = None
    axis: str | None = None
    deps: list[str] = field(default_factory=list)
    phase: str = "fwd"
    duration: float = 0.0
    shape: tuple[float, float, float] | None = None  # GEMM (m, k, n), for calibration sweeps
    gather: bool = False  # an indexed read / scatter-add (costed on the gather curve)
    bwd_nbytes: float = 0.0  # bytes only the backward adds (e.g. a dense gradient table)
    host_s: float = 0.0  # OpKind.HOST: seconds the host spends issuing the ops it stands for
    dedup: tuple | None = None  # all-to-all: routing of a deduplicated dispatch (dedup_routing)
    bwd_scale: float = 0.0  # backward / forward FLOPs and bytes when not its kind's (0: BWD_SCALE)
    seq: float | None = None  # OpKind.ATTENTION: key/value length the kernel sees (None: not known)
    head_dim: float | None = None  # OpKind.ATTENTION: head dim (None: not known)
    only: object = None  # on columns: rows where the op exists (None: all; plan._where)

    @property
    def category(self) -> str:
        """Breakdown bucket: ``comm.<kind>.<axis>``, ``host``, ``recompute``, ``optimizer`` or
        ``compute``."""
        if self.kind is OpKind.COLLECTIVE:
            return f"comm.{self.collective.value}.{self.axis}"
        if self.kind is OpKind.HOST:
            return "host"
        if self.phase in ("recompute", "optimizer"):
            return self.phase
        return "compute"
