"""Job: model + sharding + hardware profile + chip count, checked as a whole.

Every cross-field rule lives here and fails with the field, the value and what would be valid.
Each rule is one predicate over numbers or numpy columns (``*_ok`` below): :class:`Job` raises
on a number that breaks it, and the search (:mod:`simulator.search.enumerate`) masks the rows of
a candidate table with the same function.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hardware_profiles.schema import HardwareProfile
from meshcast.errors import from_validation_error
from simulator.specs.model import ModelSpec
from simulator.specs.sharding import AXES, BATCH_AXES, ShardingSpec
from simulator.cost.topology import Topology, build_topology


def heads_split_ok(m: ModelSpec, t):
    """``model`` divides ``n_heads`` and ``n_kv_heads`` (each model rank holds whole heads)."""
    return np.logical_and(m.n_heads % t == 0, m.kv_heads % t == 0)


def expert_axis_ok(m: ModelSpec, e):
    """A dense model takes ``expert = 1``."""
    return np.logical_or(m.moe is not None, e == 1)


def experts_split_ok(m: ModelSpec, e):
    """``expert`` divides ``n_experts`` (1 for a dense model)."""
    return (m.moe.n_experts if m.moe is not None else 1) % e == 0


def layers_split_ok(n_layers: int, pp, v=1):
    """``pipeline x virtual_stages`` divides ``n_layers`` (equal chunks per virtual stage)."""
    return n_layers % (pp * v) == 0


def seq_split_ok(seq_len, cp):
    """``seq`` divides ``seq_len``."""
    return seq_len % cp == 0


def batch_split_ok(global_batch, micro_batch, shards):
    """``micro_batch x shards`` divides ``global_batch`` (sequences), ``shards`` the batch
    shards ``data x fsdp x expert``: every step is whole micro-batches on every shard."""
    return global_batch % (micro_batch * shards) == 0


def global_batch_of(sharding, seq_len: int, shards: int) -> int:
    """Sequences per step: the sharding's ``global_batch``, else ``global_batch_tokens /
    seq_len``, else one micro-batch on every batch shard (``micro_batch x shards``)."""
    if sharding.global_batch is not None:
        return sharding.global_batch
    if sharding.global_batch_tokens is not None:
        return sharding.global_batch_tokens // seq_len
    return sharding.micro_batch * shards


def microbatches_per_step(global_batch, micro_batch, shards):
    """Micro-batches each pipeline runs per step: ``global_batch / (micro_batch x shards)``
    (sequences; ``shards`` = data x fsdp x expert), whole when :func:`batch_split_ok`."""
    return global_batch // (micro_batch * shards)


def interleaved_ok(microbatches, pp, interleaved):
    """The interleaved schedule needs micro-batches per step to be a multiple of ``pipeline``
    (Megatron's interleaved 1F1B; :func:`simulator.graph.pipeline.interleaved_order`)."""
    return np.logical_or(np.logical_not(interleaved), microbatches % pp == 0)


def resolve_mesh(mesh: dict[str, int], chips: int) -> dict[str, int]:
    """Fill ``-1`` with the rest of the chips and check the product equals ``chips``."""
    sizes = {a: mesh.get(a, 1) for a in AXES}
    known = math.prod(v for v in sizes.values() if v != -1)
    shown = " x ".join(f"{a}={v}" for a, v in sizes.items() if v != 1) or "all axes 1"
    if -1 in sizes.values():
        if chips % known:
            raise ValueError(
                f"mesh: {shown} cannot be completed to chips={chips}: the fixed axes multiply to "
                f"{known}, which does not divide {chips}; use sizes whose product divides {chips}"
            )
        free = next(a for a, v in sizes.items() if v == -1)
        sizes[free] = chips // known
    elif known != chips:
        raise ValueError(
            f"mesh: {shown} = {known} devices but chips={chips}; make the product {chips} "
            "or set one axis to -1"
        )
    return sizes


class Job(BaseModel):
    """One training job. Derived values (resolved mesh, topology, batch) are computed once."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    model: ModelSpec
    sharding: ShardingSpec
    hardware: HardwareProfile
    chips: int = Field(ge=1)

    @cached_property
    def mesh(self) -> dict[str, int]:
        return resolve_mesh(self.sharding.mesh, self.chips)

    def axis(self, name: str) -> int:
        return self.mesh[name]

    @cached_property
    def topology(self) -> Topology:
        s = self.sharding
        return build_topology(self.hardware, self.chips, self.mesh, s.axis_order, s.bindings,
                              s.slice_shape)

    @property
    def seq_len(self) -> int:
        return self.sharding.seq_len or self.model.seq_len

    @property
    def batch_shards(self) -> int:
        return math.prod(self.mesh[a] for a in BATCH_AXES)

    @property
    def global_batch(self) -> int:
        """Sequences per step (:func:`global_batch_of`)."""
        return global_batch_of(self.sharding, self.seq_len, self.batch_shards)

    @property
    def microbatches(self) -> int:
        """Micro-batches per step per pipeline (:func:`microbatches_per_step`)."""
        return microbatches_per_step(self.global_batch, self.sharding.micro_batch,
                                     self.batch_shards)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @model_validator(mode="after")
    def _check(self) -> Job:
        m, s = self.model, self.sharding
        mesh = resolve_mesh(s.mesh, self.chips)
        t, e, pp, cp = mesh["model"], mesh["expert"], mesh["pipeline"], mesh["seq"]
        if not heads_split_ok(m, t):
            raise ValueError(
                f"mesh.model={t}: must divide n_heads={m.n_heads} and n_kv_heads={m.kv_heads} "
                f"of {m.name}; valid model sizes: {_divisors(math.gcd(m.n_heads, m.kv_heads))}"
            )
        if not expert_axis_ok(m, e):
            raise ValueError(f"mesh.expert={e}: {m.name} is dense; use expert=1 (put chips on data)")
        if not experts_split_ok(m, e):
            raise ValueError(
                f"mesh.expert={e}: must divide n_experts={m.moe.n_experts} of {m.name}; "
                f"valid expert sizes: {_divisors(m.moe.n_experts)}"
            )
        if not layers_split_ok(m.n_layers, pp, s.virtual_stages):
            raise ValueError(
                f"mesh.pipeline={pp} (x virtual_stages={s.virtual_stages}): must divide "
                f"n_layers={m.n_layers}; valid: {_divisors(m.n_layers)}"
            )
        seq = s.seq_len or m.seq_len
        if not seq_split_ok(seq, cp):
            raise ValueError(f"mesh.seq={cp}: must divide seq_len={seq}")
        self._check_batch(mesh, seq)
        return self

    def _check_batch(self, mesh: dict[str, int], seq: int) -> None:
        s = self.sharding
        shards = math.prod(mesh[a] for a in BATCH_AXES)
        unit = s.micro_batch * shards
        if s.global_batch_tokens is not None and s.global_batch_tokens % seq:
            raise ValueError(
                f"global_batch_tokens={s.global_batch_tokens}: not a multiple of seq_len={seq}"
            )
        gb = global_batch_of(s, seq, shards)
        if not batch_split_ok(gb, s.micro_batch, shards):
            raise ValueError(
                f"global_batch={gb} sequences: not divisible by micro_batch={s.micro_batch} x "
                f"data x fsdp x expert={shards} = {unit}; use a multiple of {unit}"
            )
        pp = mesh["pipeline"]
        m = microbatches_per_step(gb, s.micro_batch, shards)
        if not interleaved_ok(m, pp, s.pipeline_schedule == "interleaved"):
            raise ValueError(
                f"global_batch={gb}: the interleaved schedule needs micro-batches ({m}) "
                f"to be a multiple of pipeline={pp}"
            )


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def make_job(model: ModelSpec, sharding: ShardingSpec, hardware: HardwareProfile, chips: int) -> Job:
    """Build and check a Job; any problem raises MeshcastError (never a traceback in the CLI)."""
    try:
        job = Job(model=model, sharding=sharding, hardware=hardware, chips=chips)
    except ValidationError as e:
        raise from_validation_error(e, "job") from None
    _ = job.topology  # placement errors (mesh vs network levels) surface here, as MeshcastError
    return job
