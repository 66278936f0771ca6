"""SearchSpace: the fixed part of a search (model, hardware, chips, batch) and what may vary.

A search holds the job's model, hardware profile, chip count, global batch and sequence length
fixed, and varies the mesh, the binding of mesh axes to network levels, the micro-batch, the
remat policy and the pipeline schedule. Execution choices that are not searched (precision,
optimizer dtypes, distributed optimizer, TPU slice) come from ``base``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hardware_profiles.schema import HardwareProfile
from meshcast.errors import MeshcastError
from simulator.specs.model import ModelSpec
from simulator.specs.sharding import AXES, REMAT_POLICIES, ShardingSpec, make_sharding
from simulator.cost.topology import Level, job_levels

REMATS: tuple[str, ...] = REMAT_POLICIES  # row codes index this
SCHEDULES: tuple[str, ...] = ("1f1b", "interleaved")
#: What ``rank`` orders by: smaller first, except ``mfu`` (larger first).
OBJECTIVES: tuple[str, ...] = ("step_time", "time_to_train", "cost", "mfu")
#: Default step size when no batch is given, for every command (predict, rank, plan, compare,
#: through :func:`job_batch`): 2^22 (about 4M) tokens, the order of the batches Llama 3 (4M-16M)
#: and Du et al. 2024 train with.
DEFAULT_BATCH_TOKENS = 2**22


@dataclass(frozen=True)
class SearchSpace:
    """What is held fixed and what may vary in one search.

    ``axes``: the mesh axes allowed to be larger than 1; ``remats`` and ``schedules`` the
    policies tried; ``micro_batches`` the micro-batch sizes tried (None: every divisor of the
    per-shard batch).
    """

    model: ModelSpec
    hardware: HardwareProfile
    chips: int
    global_batch: int
    seq_len: int
    axes: tuple[str, ...] = AXES
    remats: tuple[str, ...] = REMATS
    schedules: tuple[str, ...] = SCHEDULES
    micro_batches: tuple[int, ...] | None = None
    base: ShardingSpec = field(default_factory=ShardingSpec)

    @property
    def levels(self) -> list[Level]:
        return job_levels(self.hardware, self.chips, self.base.slice_shape)

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len


def _resolve(model, hardware) -> tuple[ModelSpec, HardwareProfile]:
    from hardware_profiles import load_profile
    from simulator.specs.zoo import load_model

    m = load_model(model) if isinstance(model, (str, Path)) else model
    hw = load_profile(hardware) if isinstance(hardware, (str, Path)) else hardware
    return m, hw


def resolve_global_batch(seq: int, global_batch: int | None, tokens: int | None) -> int:
    """Sequences per step from ``--global-batch`` or ``--global-batch-tokens`` (about 4M tokens
    when neither is given)."""
    if global_batch is not None and tokens is not None:
        raise MeshcastError(f"global-batch: give --global-batch ({global_batch}) or "
                            f"--global-batch-tokens ({tokens}), not both")
    if global_batch is not None:
        if global_batch < 1:
            raise MeshcastError(f"global-batch: {global_batch} must be a positive number of sequences")
        return global_batch
    if tokens is not None:
        if tokens < seq or tokens % seq:
            raise MeshcastError(f"global-batch-tokens: {tokens} is not a positive multiple of "
                                f"seq_len={seq}; use e.g. {max(1, tokens // seq) * seq}")
        return tokens // seq
    return max(1, DEFAULT_BATCH_TOKENS // seq)


def job_batch(model: ModelSpec, *, global_batch: int | None = None,
              global_batch_tokens: int | None = None,
              seq_len: int | None = None) -> tuple[int, int]:
    """``(global batch in sequences, sequence length)`` of a job: the one default of every
    command (``predict``, ``rank``, ``plan``, ``compare``), so the same job gets the same batch
    in each. ``seq_len`` defaults to the model's; the batch to ``--global-batch``, else
    ``--global-batch-tokens / seq_len``, else ``DEFAULT_BATCH_TOKENS // seq_len`` sequences."""
    seq = seq_len or model.seq_len
    if seq < 1:
        raise MeshcastError(f"seq-len: {seq} must be positive")
    return resolve_global_batch(seq, global_batch, global_batch_tokens), seq


def make_space(model, hardware, chips: int, *, global_batch: int | None = None,
               global_batch_tokens: int | None = None, seq_len: int | None = None,
               axes=AXES, remats=REMATS, schedules=SCHEDULES, micro_batches=None,
               **base_fields) -> SearchSpace:
    """A SearchSpace from names or specs; every bad input raises MeshcastError naming it.

    The global batch and sequence length default as :func:`job_batch` says (about 4M tokens
    of the model's sequence length). ``base_fields`` are ShardingSpec fields that are not
    searched (precision, optimizer, distributed_optimizer, slice_shape).
    """
    m, hw = _resolve(model, hardware)
    if not isinstance(chips, int) or chips < 1:
        raise MeshcastError(f"chips: {chips!r} must be a positive integer")
    gb, seq = job_batch(m, global_batch=global_batch, global_batch_tokens=global_batch_tokens,
                        seq_len=seq_len)
    searched = {"mesh", "bindings", "axis_order", "micro_batch", "remat", "pipeline_schedule",
                "virtual_stages", "global_batch", "global_batch_tokens", "seq_len"}
    fixed = sorted(set(base_fields) & searched)
    if fixed:
        raise MeshcastError(f"{fixed[0]}: is searched over; drop it from the fixed settings")
    _check_choices("axes", axes, AXES)
    _check_choices("remats", remats, REMATS)
    _check_choices("schedules", schedules, SCHEDULES)
    if micro_batches is not None and (not micro_batches or min(micro_batches) < 1):
        raise MeshcastError(f"micro-batches: {micro_batches} must be positive sizes")
    space = SearchSpace(m, hw, chips, gb, seq, tuple(axes), tuple(remats), tuple(schedules),
                        tuple(micro_batches) if micro_batches else None, make_sharding(**base_fields))
    _ = space.levels  # chips that do not fit the hardware fail here, naming chips
    hw.peak_flops(space.base.precision)  # a precision the chip has no peak for, likewise
    return space


def _check_choices(name: str, given, valid: tuple[str, ...]) -> None:
    bad = [x for x in given if x not in valid]
    if bad or not given:
        raise MeshcastError(f"{name}: {bad[0] if bad else 'nothing'!r} is not one of "
                            f"{', '.join(valid)}")
