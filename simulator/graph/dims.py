"""Per-device dimensions of one micro-batch, resolved from a job once."""

from __future__ import annotations

from dataclasses import dataclass

from simulator.cost.compute import DTYPE_BYTES


@dataclass(frozen=True, slots=True)
class Dims:
    """``b`` sequences of ``s`` tokens per batch shard; ``T = b * s / cp`` tokens per device.

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
        return self.b * self.s // self.cp

    @staticmethod
    def sharding_fields(s) -> dict:
        """The fields a ShardingSpec ``s`` sets alike for every mesh: dtypes and switches."""
        return dict(ab=4.0 if s.precision == "fp32" else 2.0, wb=DTYPE_BYTES[s.precision],
                    gb=DTYPE_BYTES[s.optimizer.grad_dtype], tp_overlap=s.tp_comm_overlap,
                    ep_overlap=s.ep_comm_overlap, host_s=s.moe_host_issue_s,
                    dedup=s.moe_dispatcher == "deepep", flash=s.flash_attention)

    @classmethod
    def from_job(cls, job) -> Dims:
        s = job.sharding
        return cls(b=s.micro_batch, s=job.seq_len, t=job.axis("model"), e=job.axis("expert"),
                   fs=job.axis("fsdp"), dp=job.axis("data"), cp=job.axis("seq"),
                   pp=job.axis("pipeline"), **cls.sharding_fields(s))
