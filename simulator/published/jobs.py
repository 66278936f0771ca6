"""One published row -> a :class:`Case` (a meshcast Job and the measured step time) or a
:class:`Skip` with the reason.

Each source is read by its own rules (:mod:`simulator.published.sources`): the FLOP formula of
its TFLOP/s, how its layout maps to the mesh, its communication overlap, optimizer sharding,
gradient dtype, attention kernel, loss (fp32 or fused in place on the bf16 logits) and default
recompute (a recipe keeping bf16 optimizer moments:
:mod:`simulator.published.optimizer_recipes`). A source without rules is read by the generic
default its notes name (:data:`simulator.published.sources.GENERIC`); a row whose parallel layout
was not published is skipped with the reason.

Megatron layouts (``mesh="megatron"``): ``tp -> model``, ``pp -> pipeline``, ``cp -> seq``,
``dp = n / (tp pp cp)`` when not published; EP is carved out of DP (``data = dp / ep``,
``expert = ep``); an EP wider than DP also spans TP, modelled as experts over ``dp`` with expert
tensor parallelism over ``model`` (the same expert weights and FLOPs per chip). Megatron-FSDP
puts ``dp`` on ``fsdp``; ``micro_batch`` is sequences per data-parallel rank per micro-step, as
meshcast's. MaxText (``maxtext``): ``dp`` slices over DCN, ``tp`` on ``model``, ``ep`` (MoE) on
``expert``, the rest of each slice on ``fsdp``; its ``micro_batch`` cell is
``per_device_batch_size``, sequences per JAX device (:func:`_maxtext_batch`). AXLearn
(``axlearn``): the published data / fsdp / expert / model axes as they are.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

from hardware_profiles.schema import HardwareProfile
from meshcast.errors import MeshcastError
from simulator.published.measured import Measured, measured_step_time
from simulator.published.model import model_of, pad_layers
from simulator.published.names import hardware_note, precision_of, profile_for, remat_of
from simulator.published.optimizer_recipes import optimizer_of
from simulator.published.recipes import dispatcher_of
from simulator.published.rows import PublishedRow, RowError, read_rows
from simulator.published.sources import SourceRules, rules_of
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

    @property
    def replicas(self) -> int:
        """Data-parallel replicas, the ranks the batch splits over: ``data x fsdp x expert``."""
        return self.mesh["data"] * self.mesh["fsdp"] * self.mesh["expert"]


def _check_layout(row: PublishedRow) -> None:
    """A row must publish its layout: some of tp / pp / dp, or an fsdp / mesh description."""
    if all(row.is_blank(c) for c in ("tp", "pp", "dp", "fsdp_zero")):
        raise RowError(f"line {row.line}: tp, pp, dp, fsdp_zero: parallel layout not published "
                       "(all empty); meshcast does not guess one: give the layout from the source")


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
        out.bindings["data"] = _dcn(profile)
    return out


def _dcn(profile: HardwareProfile) -> list[str]:
    """The network level joining TPU slices (the first that is not a torus dimension)."""
    return [lv.name for lv in profile.network if lv.kind != "torus"][:1]


def _axlearn_mesh(row: PublishedRow, n: int, ep: int, profile: HardwareProfile) -> _Mesh:
    """AXLearn's named axes as published: ``tp -> model``, ``ep -> expert``, ``dp -> data``,
    ``cp -> seq``, ``pp -> pipeline``, ``fsdp`` from the ``fsdp_zero`` cell (``fsdp 16``), else
    the rest of the chips. On a TPU profile the job is one slice, or ``data`` spans slices over
    DCN (HybridMeshShape's dcn data axis)."""
    mesh = {"model": row.int("tp", default=1), "expert": ep, "data": row.int("dp", default=1),
            "seq": row.int("cp", default=1), "pipeline": row.int("pp", default=1)}
    rest = n // math.prod(mesh.values())
    given = re.search(r"fsdp\D{0,3}(\d+)", row.text("fsdp_zero").lower())
    mesh["fsdp"] = int(given.group(1)) if given else rest
    if math.prod(mesh.values()) != n:
        raise RowError(f"line {row.line}: tp x ep x dp x cp x pp x fsdp = "
                       f"{' x '.join(str(v) for v in mesh.values())} != n_accel = {n}; fix the "
                       "layout cells")
    out = _Mesh(mesh)
    if profile.slices:
        one = [s.shape for s in profile.slices if s.chips == n]
        per = [s.shape for s in profile.slices if s.chips * mesh["data"] == n]
        if one:
            out.slice_shape = one[0]
        elif per and mesh["data"] > 1:
            out.slice_shape, out.bindings["data"] = per[0], _dcn(profile)
        else:
            raise RowError(f"line {row.line}: n_accel: {n} chips are neither one {profile.name} "
                           f"slice nor dp={mesh['data']} slices; add the slice shape to the "
                           "profile")
    return out


def _maxtext_batch(row: PublishedRow, mesh: _Mesh, n: int, profile: HardwareProfile,
                   global_batch: int) -> tuple[int, list[str]]:
    """meshcast's micro-batch (sequences per data-parallel replica per micro-step) of a MaxText
    row. MaxText's ``per_device_batch_size`` (the ``micro_batch`` cell) counts sequences per JAX
    device per micro-step (a TensorCore on chips exposing two, ``Chip.devices_per_chip``), and
    ``global batch = per_device x devices x gradient_accumulation_steps``; the batch is split
    over the data / fsdp / expert axes only, so a replica (a tensor-parallel group) holds
    ``per_device x devices_per_chip x (chips per replica)`` sequences, ``x model`` with a
    tensor-parallel axis. Fractional ``per_device_batch_size`` (below 1) is allowed."""
    per_device = row.num("micro_batch")
    replicas = mesh.replicas
    devices = n * profile.chip.devices_per_chip
    notes = []
    if per_device is None:  # one micro-step: MaxText's default gradient_accumulation_steps = 1
        per_device = global_batch / devices
        notes.append("micro_batch (per_device_batch_size) not published: one micro-step")
    step = per_device * devices
    accum = global_batch / step
    if step != int(step) or accum != int(accum) or accum < 1:
        raise RowError(f"line {row.line}: global_batch_seqs: {global_batch} is not "
                       f"per_device_batch_size {per_device:g} x {devices} devices "
                       f"({step:g}) times a whole number of gradient-accumulation steps; fix "
                       "micro_batch or global_batch_seqs")
    micro = int(step) // replicas
    if micro * replicas != int(step):
        raise RowError(f"line {row.line}: micro_batch: {step:g} sequences per micro-step do not "
                       f"split over {replicas} data-parallel replicas")
    return micro, notes


def _axlearn_batch(row: PublishedRow, mesh: _Mesh, global_batch: int) -> int:
    """AXLearn sets the global batch (``train_batch_size``) and runs it in one micro-step unless
    the row's ``grad_accum`` cell gives gradient accumulation: each data-parallel replica holds
    ``global / (replicas x accumulation)`` sequences per micro-step."""
    replicas = mesh.replicas
    accum = row.int("grad_accum", default=1)
    micro = global_batch // (replicas * accum)
    if micro < 1 or micro * replicas * accum != global_batch:
        raise RowError(f"line {row.line}: global_batch_seqs: {global_batch} does not split over "
                       f"{replicas} data-parallel replicas x {accum} accumulation steps")
    return micro


def _sharding_fields(row: PublishedRow, mesh: _Mesh, rules: SourceRules) -> tuple[dict, list[str]]:
    """ShardingSpec fields of the row by its source's ``rules`` (all but the micro-batch), and
    the notes they make."""
    vpp = row.int("vpp", default=1)
    remat, notes = remat_of(row), []
    if remat is None:
        remat = rules.recompute
        notes.append(f"recompute: {row.text('source_id')} default {remat}")
    optimizer, note = optimizer_of(row, rules)
    notes += [note] if note else []
    fields = dict(mesh=mesh.mesh, bindings=mesh.bindings, slice_shape=mesh.slice_shape,
                  global_batch=row.int("global_batch_seqs", required=True),
                  seq_len=row.int("seq_len", required=True), remat=remat,
                  precision=precision_of(row), optimizer=optimizer, **rules.switches())
    if vpp > 1:
        fields.update(pipeline_schedule="interleaved", virtual_stages=vpp)
    return fields, notes


def row_to_case(row: PublishedRow, profiles: dict[str, HardwareProfile] | None = None,
                **execution) -> Case | Skip:
    """Map one row; ``execution`` adds ShardingSpec fields (modelling switches) to every job."""
    try:
        return _row_to_case(row, profiles, execution)
    except (RowError, MeshcastError) as e:
        return Skip(row.id, row.text("model"), row.text("hardware"), str(e))


def _row_to_case(row: PublishedRow, profiles, execution: dict) -> Case:
    rules, source_note = rules_of(row)
    _check_layout(row)
    profile = profile_for(row, profiles)
    n = row.int("n_accel", required=True)
    model = model_of(row)
    ep = row.int("ep", default=1) if model.is_moe else 1
    if rules.mesh == "maxtext":
        mesh = _maxtext_mesh(row, n, ep, profile)
    elif rules.mesh == "axlearn":
        mesh = _axlearn_mesh(row, n, ep, profile)
    else:
        mesh = _megatron_mesh(row, n, ep)
    fields, notes = _sharding_fields(row, mesh, rules)
    gb = fields["global_batch"]
    if rules.mesh == "maxtext":
        fields["micro_batch"], more = _maxtext_batch(row, mesh, n, profile, gb)
        notes += more
    elif rules.mesh == "axlearn":
        fields["micro_batch"] = _axlearn_batch(row, mesh, gb)
    else:  # Megatron's micro_batch_size is meshcast's: sequences per data-parallel rank
        fields["micro_batch"] = row.int("micro_batch", default=1)
        if row.is_blank("micro_batch"):
            notes.append("micro_batch not published: 1")
    if model.is_moe:
        fields["moe_dispatcher"], note = dispatcher_of(row, profile.name)
        notes += [note] if note else []
    fields.update(execution)
    measured = measured_step_time(row, model, rules.flops, n, fields["global_batch"],
                                  fields["seq_len"], profile.peak_flops("bf16"))
    stages = mesh.mesh.get("pipeline", 1) * fields.get("virtual_stages", 1)
    job_model, pad_note = pad_layers(model, stages)
    notes = [x for x in (source_note, *mesh.notes, *notes, pad_note) if x]
    if hw := hardware_note(row, profile):
        notes.append(hw)
    job = make_job(job_model, make_sharding(**fields), profile, n)
    return Case(row, job, measured, tuple(notes))


def read_cases(path, profiles: dict[str, HardwareProfile] | None = None,
               **execution) -> tuple[list[Case], list[Skip]]:
    """Every row of the CSV at ``path`` mapped (:func:`row_to_case`): (cases, skipped rows)."""
    mapped = [row_to_case(r, profiles, **execution) for r in read_rows(path)]
    return [c for c in mapped if isinstance(c, Case)], [c for c in mapped if isinstance(c, Skip)]
