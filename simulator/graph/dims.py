"""Per-device dimensions of one micro-batch, resolved from a job once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from simulator.cost.compute import DTYPE_BYTES
from simulator.cost.formulas import tokens_per_device


@dataclass(frozen=True, slots=True)
class Dims:
    """``b`` sequences of ``s`` tokens per batch shard; ``T = b * s / cp`` tokens per device.

    The one statement of the per-device sizes both paths use: the graph path builds it from a
    job (:meth:`from_job`, numbers), the search from numpy columns of candidate meshes
    (:meth:`from_mesh` with arrays); every formula on it broadcasts.

    Mesh sizes: ``t`` model, ``e`` expert, ``fs`` fsdp, ``dp`` data, ``cp`` seq, ``pp`` pipeline.
    ``ab`` activation bytes (bf16), ``wb`` bytes of a weight as fed to the GEMM (fp8: 1),
    ``gb`` gradient reduction bytes. ``tp_overlap``: tensor-parallel collectives run beside the
    GEMMs they feed (Megatron's TP comm overlap); ``ep_overlap``: expert all-to-alls run under
    another micro-batch's compute. ``host_s``: host seconds to issue one op of a dropless MoE
    layer's data-dependent part when it runs eagerly (0: launches never bind). ``dedup``: the
    expert all-to-alls are the deduplicated dispatch of DeepEP/HybridEP
    (:func:`simulator.cost.collectives.dedup_shares`). ``flash``: fused attention (no score matrix
    in HBM; :func:`simulator.graph.layers.attention_block`).
    """

    b: int
    s: int
    t: int
    e: int
    fs: int
    dp: int
    cp: int
    pp: int
    ab: float
    wb: float
    gb: float
    tp_overlap: bool = False
    ep_overlap: bool = False
    host_s: float = 0.0
    dedup: bool = False
    flash: bool = True

    @property
    def T(self) -> int:  # noqa: N802 - scaling-book symbol
        return tokens_per_device(self.b, self.s, self.cp)

    @staticmethod
    def sharding_fields(s) -> dict:
        """The fields a ShardingSpec ``s`` sets alike for every mesh: dtypes and switches.

        Bytes per element: activations ``ab`` = 4 under fp32, else 2 (bf16 activations at every
        other precision); weights as fed to the GEMM ``wb`` =
        ``DTYPE_BYTES[precision]``; gradient reduction ``gb`` = ``DTYPE_BYTES[grad_dtype]``."""
        return dict(ab=4.0 if s.precision == "fp32" else 2.0, wb=DTYPE_BYTES[s.precision],
                    gb=DTYPE_BYTES[s.optimizer.grad_dtype], tp_overlap=s.tp_comm_overlap,
                    ep_overlap=s.ep_comm_overlap, host_s=s.moe_host_issue_s,
                    dedup=s.moe_dispatcher == "deepep", flash=s.flash_attention)

    @classmethod
    def from_mesh(cls, s, seq_len, mesh: Mapping, micro_batch) -> Dims:
        """Dims of sharding ``s`` at mesh sizes ``mesh`` (axis name -> size) and ``micro_batch``
        sequences of ``seq_len`` tokens; sizes are numbers, or numpy columns (one entry per
        configuration) for the search."""
        return cls(b=micro_batch, s=seq_len, t=mesh["model"], e=mesh["expert"], fs=mesh["fsdp"],
                   dp=mesh["data"], cp=mesh["seq"], pp=mesh["pipeline"],
                   **cls.sharding_fields(s))

    @classmethod
    def from_job(cls, job) -> Dims:
        return cls.from_mesh(job.sharding, job.seq_len, job.mesh, job.sharding.micro_batch)
