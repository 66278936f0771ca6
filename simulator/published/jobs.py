"""One published row -> a :class:`Case` (a meshcast Job and the measured step time) or a
:class:`Skip` with the reason.

Parallelism follows Megatron's conventions: ``tp -> model``, ``pp -> pipeline``,
``cp -> seq``, ``dp = n / (tp pp cp)`` when not published; EP is carved out of DP
(``data = dp / ep``, ``expert = ep``); an EP wider than DP also spans TP, modelled as experts over
``dp`` with expert tensor parallelism over ``model`` (the same expert weights and FLOPs per chip).
Megatron-FSDP puts ``dp`` on ``fsdp``. MaxText rows: ``dp`` slices over DCN, ``tp`` on
``model``, ``ep`` (MoE) on ``expert``, the rest of each slice on ``fsdp``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hardware_profiles.schema import HardwareProfile
from simulator.errors import MeshcastError
from simulator.published.measured import Measured, formula_for, measured_step_time
from simulator.published.model import model_of, pad_layers
from simulator.published.names import precision_of, profile_for, remat_of
from simulator.published.recipes import dispatcher_of
from simulator.published.rows import PublishedRow, RowError, read_rows
from simulator.specs.job import Job, make_job
from simulator.specs.sharding import make_sharding


@dataclass(frozen=True)
class Case:
    row: PublishedRow
    job: Job
    measured: Measured
    notes: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.row.id


@dataclass(frozen=True)
class Skip:
    id: str
    model: str
    hardware: str
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Mesh:
    mesh: dict[str, int]
    bindings: dict[str, list[str]] = field(default_factory=dict)
    slice_shape: list[int] | None = None
    notes: list[str] = field(default_factory=list)


def _megatron_mesh(row: PublishedRow, n: int, ep: int) -> _Mesh:
    tp, pp, cp = row.int("tp", default=1), row.int("pp", default=1), row.int("cp", default=1)
    dp = row.int("dp") or n // (tp * pp * cp)
    if tp * pp * cp * dp != n:
        raise RowError(f"line {row.line}: tp x pp x cp x dp = {tp}x{pp}x{cp}x{dp} = "
                       f"{tp * pp * cp * dp} but n_accel = {n}; fix dp or n_accel")
    out = _Mesh({"model": tp, "pipeline": pp, "seq": cp})
    if "fsdp" in row.text("fsdp_zero").lower() and "col=0" not in row.text("fsdp_zero").lower():
        out.mesh["fsdp"] = dp
        dp = 1
    if dp % ep == 0:
        out.mesh.update(data=dp // ep, expert=ep)
    elif ep == dp * tp:  # each GPU holds E/ep whole experts either way
        out.mesh.update(data=1, expert=dp)
        out.notes.append(f"EP={ep} spans TP: modelled as expert={dp} x model={tp}")
    else:
        raise RowError(f"line {row.line}: ep: {ep} neither divides dp={dp} nor equals "
                       f"dp x tp={dp * tp}; meshcast carves EP out of DP (or spans all of DP x TP)")
    return out


def _maxtext_mesh(row: PublishedRow, n: int, ep: int, profile: HardwareProfile) -> _Mesh:
    slices, tp = row.int("dp", default=1), row.int("tp", default=1)
    per_slice = n // slices
    if per_slice * slices != n or per_slice % tp:
        raise RowError(f"line {row.line}: dp: {slices} slices x tp {tp} does not divide "
                       f"n_accel={n}; dp is the DCN data-parallel degree")
    shapes = [s.shape for s in profile.slices if s.chips == per_slice]
    if not shapes:
        raise RowError(f"line {row.line}: n_accel/dp: {per_slice} chips per slice is no "
                       f"{profile.name} slice; add the slice shape to the profile")
    if (per_slice // tp) % ep:
        raise RowError(f"line {row.line}: ep: {ep} does not divide the {per_slice // tp} chips per "
                       "slice left after tp; MaxText shards experts within a slice")
    out = _Mesh({"model": tp, "expert": ep, "fsdp": per_slice // (tp * ep), "data": slices},
                slice_shape=shapes[0])
    if slices > 1:
        out.bindings["data"] = [lv.name for lv in profile.network if lv.kind != "torus"][:1]
    return out


def _sharding_fields(row: PublishedRow, mesh: _Mesh, family: str) -> dict:
    """ShardingSpec fields of the row; ``family`` is its source's (:func:`formula_for`)."""
    vpp = row.int("vpp", default=1)
    fields = dict(mesh=mesh.mesh, bindings=mesh.bindings, slice_shape=mesh.slice_shape,
                  micro_batch=row.int("micro_batch", default=1),
                  global_batch=row.int("global_batch_seqs", required=True),
                  seq_len=row.int("seq_len", required=True), remat=remat_of(row),
                  precision=precision_of(row))
    if vpp > 1:
        fields.update(pipeline_schedule="interleaved", virtual_stages=vpp)
    if family == "maxtext":
        # MaxText's TPU scripts run XLA with async collective fusion and
        # --xla_tpu_overlap_compute_collective_tc (LIBTPU_INIT_ARGS in configs/tpu/v5e/*.sh):
        # the tensor-parallel all-gathers / reduce-scatters run beside the matmuls.
        fields.update(tp_comm_overlap=True)
    elif family != "narayanan_eq3":
        # Megatron-Core era recipes (Megatron-LM README, NeMo, Megatron-Bridge): distributed
        # optimizer, TP and EP comm overlap on (the tables do not publish overlap settings; the
        # README's notes list DP/TP/PP overlap); Narayanan et al. 2021 predates all three.
        fields.update(distributed_optimizer=True, tp_comm_overlap=True, ep_comm_overlap=True)
    return fields


def row_to_case(row: PublishedRow, profiles: dict[str, HardwareProfile] | None = None,
                **execution) -> Case | Skip:
    """Map one row; ``execution`` adds ShardingSpec fields (modelling switches) to every job."""
    try:
        return _row_to_case(row, profiles, execution)
    except (RowError, MeshcastError) as e:
        return Skip(row.id, row.text("model"), row.text("hardware"), str(e))


def _row_to_case(row: PublishedRow, profiles, execution: dict) -> Case:
    profile = profile_for(row, profiles)
    n = row.int("n_accel", required=True)
    model = model_of(row)
    family = formula_for(row.text("source_id"))
    ep = row.int("ep", default=1) if model.is_moe else 1
    mesh = (_maxtext_mesh(row, n, ep, profile) if family == "maxtext"
            else _megatron_mesh(row, n, ep))
    fields = _sharding_fields(row, mesh, family)
    if model.is_moe:
        fields["moe_dispatcher"], note = dispatcher_of(row, profile.name)
        mesh.notes.extend([note] if note else [])
    fields.update(execution)
    measured = measured_step_time(row, model, family, n, fields["global_batch"], fields["seq_len"],
                                  profile.peak_flops("bf16"))
    stages = mesh.mesh.get("pipeline", 1) * fields.get("virtual_stages", 1)
    job_model, pad_note = pad_layers(model, stages)
    notes = mesh.notes + ([pad_note] if pad_note else [])
    job = make_job(job_model, make_sharding(**fields), profile, n)
    return Case(row, job, measured, tuple(notes))


def read_cases(path, profiles: dict[str, HardwareProfile] | None = None,
               **execution) -> tuple[list[Case], list[Skip]]:
    """Every row of the CSV at ``path`` mapped (:func:`row_to_case`): (cases, skipped rows)."""
    mapped = [row_to_case(r, profiles, **execution) for r in read_rows(path)]
    return [c for c in mapped if isinstance(c, Case)], [c for c in mapped if isinstance(c, Skip)]
