"""Reference model shapes for calibration, and a job's shapes without hardware (:class:`ShapeJob`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulator.specs.model import ModelSpec, MoESpec
from simulator.specs.sharding import BATCH_AXES, ShardingSpec

_SRC = "calibration reference model (meshcast), sized for a CPU host"


def reference_model(kind: str = "dense", seq_len: int | None = None) -> ModelSpec:
    """A small decoder: 4 layers, d_model 512, 8 heads, SwiGLU 1408, vocab 4096, seq 512; the
    embedding table is also the LM head (as in calibration.measure.models); the MoE variant puts 8
    experts (top-2, capacity factor 2) in every other layer. ``seq_len`` overrides 512."""
    moe = MoESpec(n_experts=8, top_k=2, capacity_factor=2.0, expert_ffn_hidden=1408,
                  layer_interval=2, group_size_tokens=512) if kind == "moe" else None
    return ModelSpec(name=f"reference-{kind}", source=_SRC, n_layers=4, d_model=512, n_heads=8,
                     ffn_hidden=1408, vocab_size=4096, seq_len=seq_len or 512, moe=moe,
                     tied_embeddings=True)


@dataclass(frozen=True)
class ShapeJob:
    """A job without hardware: the model, the sharding and the device count fix every op's
    shape, which the plan (:func:`simulator.graph.plan.plan_stage`) lays out; nothing is costed.
    Calibration asks it for the GEMM shapes to sweep, the in-context cases' ops and the
    collectives a reference step issues."""

    model: ModelSpec
    sharding: ShardingSpec
    chips: int

    def __post_init__(self) -> None:
        """The shape rules of :class:`simulator.specs.job.Job` (its ``*_ok`` predicates)."""
        from meshcast.errors import MeshcastError
        from simulator.specs import job as j

        m, mesh = self.model, self.mesh
        t, e, pp, cp = mesh["model"], mesh["expert"], mesh["pipeline"], mesh["seq"]
        for ok, what in ((j.heads_split_ok(m, t), f"mesh.model={t} must divide the heads"),
                         (j.expert_axis_ok(m, e), f"mesh.expert={e} on a dense model"),
                         (j.experts_split_ok(m, e), f"mesh.expert={e} must divide the experts"),
                         (j.layers_split_ok(m.n_layers, pp, self.sharding.virtual_stages),
                          f"mesh.pipeline={pp} must divide the layers"),
                         (j.seq_split_ok(self.seq_len, cp), f"mesh.seq={cp} must divide seq_len")):
            if not ok:
                raise MeshcastError(f"{what} of {m.name}")

    @property
    def mesh(self) -> dict[str, int]:
        """Every axis's size, ``-1`` resolved (:func:`simulator.specs.job.resolve_mesh`)."""
        from meshcast.errors import MeshcastError
        from simulator.specs.job import resolve_mesh

        try:
            return resolve_mesh(self.sharding.mesh, self.chips)
        except ValueError as e:
            raise MeshcastError(str(e)) from None

    @property
    def seq_len(self) -> int:
        return self.sharding.seq_len or self.model.seq_len

    @property
    def microbatches(self) -> int:
        """Micro-batches per step, as :attr:`simulator.specs.job.Job.microbatches` counts them."""
        s, mesh = self.sharding, self.mesh
        shards = math.prod(mesh[a] for a in BATCH_AXES)
        if s.global_batch is not None:
            gb = s.global_batch
        elif s.global_batch_tokens is not None:
            gb = s.global_batch_tokens // self.seq_len
        else:
            gb = s.micro_batch * shards
        return gb // (s.micro_batch * shards)

    def dims(self):
        """Per-device sizes (:meth:`simulator.graph.dims.Dims.from_mesh`)."""
        from simulator.graph.dims import Dims

        return Dims.from_mesh(self.sharding, self.seq_len, self.mesh, self.sharding.micro_batch)

    def plan(self, layers: list[int], first: bool = True, last: bool = True):
        """The uncosted plan of one micro-batch through ``layers`` (one rank holding the
        embedding if ``first``, the head if ``last``)."""
        from simulator.graph.plan import plan_stage

        return plan_stage(self.model, self.sharding, self.dims(), layers, first, last)
