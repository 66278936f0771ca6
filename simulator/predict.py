"""predict(): from a job to a StepPrediction (step time, breakdown, MFU, memory, trace data).

Step composition per pipeline rank ``r`` (``m`` micro-batches):
``t_mb[r]`` = scheduled forward+backward of one micro-batch (compute plus exposed comm);
``tail[r]`` = what follows the last micro-batch (exposed gradient sync, optimizer, weight gather).
No pipeline: ``step = m * t_mb + tail``. With a pipeline the micro-batch tasks run through the
schedule simulation (:mod:`simulator.graph.pipeline`) and ``step = max_r(finish[r] + tail[r])``; the
bubble is the rest of the step on the rank that sets it, so the breakdown sums to the step time.
"""

from __future__ import annotations

import gc
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import networkx as nx

from simulator.cost.collectives import Collective
from simulator.cost.formulas import mfu, param_gather_hidden, pipeline_send_bytes, stage_layers
from simulator.cost.compute import ComputeModel
from simulator.cost.flops import model_flops_per_step
from simulator.graph.cost import CostContext, cost_blocks
from simulator.graph.dims import Dims
from simulator.graph.ops import Op, OpKind
from simulator.graph.plan import Planner, StagePlan, is_weight_gather, link_axis, plan_stage
from simulator.graph.memory import MemoryEstimate, estimate_memory
from simulator.graph.pipeline import PipelineResult, simulate_pipeline
from simulator.graph.periodic import schedule_stage
from simulator.graph.schedule import Scheduled, schedule_items
from simulator.specs.job import Job, make_job
from simulator.specs.sharding import make_sharding


@dataclass
class StageTiming:
    """One pipeline rank's scheduled micro-batch (``plan`` costed). Its times come from the
    schedule with periodic layers skipped (:func:`simulator.graph.periodic.schedule_stage`);
    ``sched``, the schedule of every node, and ``graph``, the step graph, are built when first
    asked for."""

    plan: StagePlan
    t_fwd: float
    t_mb: float
    tail: float
    per_mb: dict[str, float]
    tail_parts: dict[str, float]

    @cached_property
    def sched(self) -> Scheduled:
        return schedule_items(self.plan.unrolled())

    @property
    def ops(self) -> dict:
        """Every node's op, by node name, in program order."""
        return self.sched.ops

    @cached_property
    def graph(self) -> nx.DiGraph:
        return self.plan.graph()


@dataclass
class StepPrediction:
    job: Job
    step_time_s: float
    tokens_per_s: float
    mfu: float
    model_flops_per_step: float
    breakdown_s: dict[str, float]
    memory: MemoryEstimate
    microbatches: int
    pipeline: PipelineResult | None
    critical: StageTiming  # the busiest pipeline rank's stage: the breakdown is its time
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The forecast as plain data. ``fits`` (top level) says whether the job fits in device
        memory at all and ``fit_reason`` why: a step time and MFU of a job that does not fit
        describe a run that cannot happen."""
        j = self.job
        mem = self.memory
        gib = 2**30
        if mem.fits:
            reason = (f"{mem.per_device_bytes / gib:.1f} of {mem.capacity_bytes / gib:.1f} GiB "
                      "HBM per device")
        else:
            reason = (f"needs {mem.per_device_bytes / gib:.1f} GiB per device but the chip has "
                      f"{mem.capacity_bytes / gib:.1f} GiB HBM: this step cannot run as given "
                      "(try remat=full, more fsdp/model/pipeline, or a smaller micro-batch)")
        return {
            "model": j.model.name,
            "hardware": j.hardware.name,
            "chips": j.chips,
            "fits": mem.fits,
            "fit_reason": reason,
            "mesh": {a: v for a, v in j.mesh.items() if v != 1} or {"data": 1},
            "placement": {a: "+".join(f"{p.level.name}:{p.factor}" for p in parts)
                          for a, parts in j.topology.placement.items()},
            "global_batch_seqs": j.global_batch,
            "seq_len": j.seq_len,
            "micro_batch": j.sharding.micro_batch,
            "microbatches": self.microbatches,
            "precision": j.sharding.precision,
            "remat": j.sharding.remat,
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_per_chip": self.tokens_per_s / j.chips,
            "mfu": self.mfu,
            "mfu_formula": "6*N_matmul_active + 6*L*s*heads*head_dim per token (PaLM, causal "
                           "attention halved) / (step_time * chips * dense bf16 peak)",
            "model_flops_per_step": self.model_flops_per_step,
            "breakdown_s": dict(self.breakdown_s),
            "memory": self.memory.as_dict(),
            "warnings": list(self.warnings),
        }


def _stages(job: Job) -> list[tuple[list[int], bool, bool]]:
    """(layers, has embedding, has head) per pipeline rank (:func:`stage_layers`)."""
    ranks = stage_layers(job.model.n_layers, job.axis("pipeline"), job.sharding.virtual_stages)
    return [(layers, r == 0, r == len(ranks) - 1) for r, layers in enumerate(ranks)]


def stage_plan(job: Job, ctx: CostContext, layers: list[int], first: bool, last: bool,
               planner: Planner | None = None, costed: set | None = None) -> StagePlan:
    """The plan of one rank's micro-batch, costed on ``ctx``. The ranks of one job may share a
    ``planner`` (each block built once) and ``costed`` (ids of blocks already costed)."""
    planner = planner or Planner(job.model, job.sharding, Dims.from_job(job))
    plan = plan_stage(job.model, job.sharding, planner.d, layers, first, last, planner)
    costed = set() if costed is None else costed
    fresh = [b for b in plan.blocks() if id(b) not in costed]
    cost_blocks(fresh, ctx, job.hardware.chip.collectives_use_compute)
    costed.update(id(b) for b in fresh)
    return plan


def _time_stage(job: Job, ctx: CostContext, layers: list[int], first: bool, last: bool,
                planner: Planner | None = None, costed: set | None = None) -> StageTiming:
    plan = stage_plan(job, ctx, layers, first, last, planner, costed)
    sc = schedule_stage(plan)
    t_fwd, t_mb = sc.t_fwd, sc.t_mb
    per_mb, tail_parts = sc.before, sc.after
    if sc.makespan > sc.last_compute:  # e.g. the distributed optimizer's weight all-gather
        tail_parts[sc.final_category] += sc.makespan - sc.last_compute
    tail = sc.makespan - t_mb
    counts = plan.op_counts()
    if job.sharding.overlap_param_gather:  # the weight gather under the next step's forward
        gather = sum(op.duration for op, _ in counts if is_weight_gather(op))
        hidden = float(param_gather_hidden(gather, t_fwd, len(layers),
                                           sc.makespan - sc.last_compute))
        if hidden > 0:
            tail -= hidden
            tail_parts[sc.final_category] -= hidden
    floor, cat = link_floor(counts)
    if floor > t_mb:
        per_mb[cat] += floor - t_mb
        t_mb = floor
    return StageTiming(plan, t_fwd, t_mb, tail, per_mb, tail_parts)


def link_floor(ops) -> tuple[float, str]:
    """The largest per-axis sum of a micro-batch's collectives (:func:`link_axis`) among
    ``ops`` -- (op, times it occurs) pairs -- and the category that dominates it."""
    per_axis: dict[str, float] = defaultdict(float)
    per_cat: dict[str, float] = defaultdict(float)
    for op, n in ops:
        if link_axis(op) is not None:
            per_axis[op.axis] += n * op.duration
            per_cat[op.category] += n * op.duration
    if not per_axis:
        return 0.0, "compute"
    axis = max(per_axis, key=per_axis.__getitem__)
    cat = max((c for c in per_cat if c.endswith("." + axis)), key=per_cat.__getitem__)
    return per_axis[axis], cat


def outside_calibrated_range(job: Job, op_counts) -> list[str]:
    """Say so when the sizes of a stage's ops (``op_counts``: (op, nodes that run it) pairs,
    :meth:`StagePlan.op_counts`) leave the range a calibrated curve was fitted on (matmul:
    one GEMM's FLOPs; attention: FLOPs; memory-bound ops and gathers: bytes): the efficiency is
    extrapolated."""

    eff = job.hardware.efficiency
    checks = [("matmul", eff.matmul, lambda o: o.kind is OpKind.MATMUL,
               lambda o: o.unit_flops or o.flops, "FLOPs"),
              ("attention", eff.attention, lambda o: o.kind is OpKind.ATTENTION,
               lambda o: o.flops, "FLOPs"),
              ("memory", eff.memory, lambda o: o.kind is OpKind.ELEMENTWISE and not o.gather,
               lambda o: o.nbytes, "bytes"),
              ("gather", eff.gather, lambda o: o.kind is OpKind.ELEMENTWISE and o.gather,
               lambda o: o.nbytes, "bytes")]
    out = []
    for name, curve, chosen, size, unit in checks:
        if curve is None or curve.calibrated_range is None:
            continue
        lo, hi = curve.calibrated_range
        sizes = [(size(op), n) for op, n in op_counts if chosen(op)]
        outside = [(x, n) for x, n in sizes if x > 0 and not lo <= x <= hi]
        if outside:
            xs = [x for x, _ in outside]
            out.append(f"{sum(n for _, n in outside)} of {sum(n for _, n in sizes)} {name} ops "
                       f"fall outside the calibrated range {lo:.3g}..{hi:.3g} {unit} (smallest "
                       f"{min(xs):.3g}, largest {max(xs):.3g}): their efficiency is extrapolated")
    return out


@contextmanager
def _gc_paused():
    """Building a graph allocates many small dicts but no cycles: the cyclic collector's
    passes only add jitter (measured: median 51 ms -> 29 ms for a 100-layer MoE)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def predict_job(job: Job) -> StepPrediction:
    """Forecast one step of ``job``."""
    with _gc_paused():
        return _predict_job(job)


def _predict_job(job: Job) -> StepPrediction:
    ctx = CostContext(ComputeModel.from_profile(job.hardware, job.sharding.precision), job.topology)
    stages = _stages(job)
    cache: dict[tuple, StageTiming] = {}
    planner, costed = Planner(job.model, job.sharding, Dims.from_job(job)), set()
    timings = []
    for layers, first, last in stages:
        key = (tuple(job.model.is_moe_layer(i) for i in layers), first, last)
        if key not in cache:
            cache[key] = _time_stage(job, ctx, layers, first, last, planner, costed)
        timings.append(cache[key])
    m = job.microbatches
    breakdown: dict[str, float] = defaultdict(float)
    pipe = None
    if len(timings) == 1:
        crit = timings[0]
        step = m * crit.t_mb + crit.tail
    else:
        send = ctx.collective(Op("send", OpKind.COLLECTIVE, collective=Collective.PERMUTE,
                                 axis="pipeline", nbytes=pipeline_send_bytes(
                                     job.sharding.micro_batch, job.seq_len, job.axis("seq"),
                                     job.model.d_model, job.axis("model"))))
        tf = [s.t_fwd for s in timings]
        tb = [s.t_mb - s.t_fwd for s in timings]
        pipe = simulate_pipeline(tf, tb, send, m, job.sharding.pipeline_schedule,
                                 job.sharding.virtual_stages)
        ends = [pipe.finish_s[r] + timings[r].tail for r in range(len(timings))]
        # The breakdown is the busiest rank's (the pipeline's bottleneck): its work, and its idle
        # time as the bubble. The last rank to finish may be a lighter one (the first, with the
        # embedding, ends with the last backward) whose idle time includes waiting on the others.
        r = max(range(len(timings)), key=lambda i: m * timings[i].t_mb + timings[i].tail)
        crit, step = timings[r], max(ends)
        breakdown["pipeline_bubble"] = step - (m * crit.t_mb + crit.tail)
    for k, v in crit.per_mb.items():
        breakdown[k] += m * v
    for k, v in crit.tail_parts.items():
        breakdown[k] += v
    flops = model_flops_per_step(job.model, job.seq_len, job.tokens_per_step)
    peak = job.hardware.peak_flops("bf16")
    mem = estimate_memory(job, stages)
    warnings = outside_calibrated_range(job, crit.plan.op_counts())
    if not mem.fits:
        warnings.append(
            f"does not fit: {mem.per_device_bytes / 2**30:.1f} GiB per device > "
            f"{mem.capacity_bytes / 2**30:.1f} GiB HBM (try remat=full, more fsdp/model/pipeline, "
            "or a smaller micro-batch)")
    moe = job.model.moe
    if moe is not None and not moe.dropless and moe.capacity_factor < moe.top_k:
        # the factor includes top-k (capacity per expert = factor x group tokens / experts): the
        # experts have `factor` slots per token for top_k choices, so some are always dropped
        cf, k = moe.capacity_factor, moe.top_k
        warnings.append(
            f"capacity_factor {cf:g} < top_k {k}: the factor includes top-k (capacity per expert "
            f"= capacity_factor x group tokens / experts), so even with balanced routing at "
            f"least {100 * (1 - cf / k):.3g}% of token-expert assignments are dropped ({cf:g} "
            f"expert slots per token for {k} choices); for a factor f per choice, set "
            f"capacity_factor = f x top_k (here {cf * k:g} for f = {cf:g})")
    return StepPrediction(job, step, job.tokens_per_step / step, mfu(flops, step, job.chips, peak),
                          flops, dict(sorted(breakdown.items(), key=lambda kv: -kv[1])), mem, m,
                          pipe, crit, warnings)


def predict(job: Job | None = None, /, *, model=None, hardware=None, chips: int | None = None,
            **sharding) -> StepPrediction:
    """Forecast a step: ``predict(job)``, or ``predict(model="llama3-8b", hardware="h100-sxm",
    chips=8, mesh={"data": -1}, global_batch=64, ...)`` with names or specs and ShardingSpec
    fields as keywords."""
    if job is None:
        from hardware_profiles import load_profile
        from meshcast.errors import MeshcastError
        from simulator.specs.zoo import load_model

        if model is None or hardware is None or chips is None:
            raise MeshcastError("predict: give a Job, or model=, hardware= and chips=")
        mspec = load_model(model) if isinstance(model, (str, Path)) else model
        hw = load_profile(hardware) if isinstance(hardware, (str, Path)) else hardware
        job = make_job(mspec, make_sharding(**sharding), hw, chips)
    return predict_job(job)
