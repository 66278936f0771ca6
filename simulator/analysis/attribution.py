"""Where a forecast step's time goes, by op and by part of the model (attention, FFN, router, ...).

``predict`` reports the step by *category* (compute, recompute, exposed comm per kind and axis).
This module re-reads the same scheduled graph and charges each second to the *op* that spent it:
a compute op its busy time, a wait of the compute stream to the collectives the schedule charged
it to (:attr:`simulator.graph.schedule.Scheduled.waits`). With ``m`` micro-batches and the critical pipeline
rank's timing (:mod:`simulator.predict`):

    step = m * sum(per_mb[op]) + sum(tail[op]) [+ link floor excess * m] [+ pipeline bubble]

so the per-op seconds sum to the step time exactly, and summed by category they give
``StepPrediction.breakdown_s`` (checked on every call). Ops are then grouped into ``PARTS``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from simulator.cost.collectives import Collective
from meshcast.errors import MeshcastError
from simulator.graph.ops import COMPUTE, Op
from simulator.graph.plan import MICROBATCH
from simulator.predict import link_floor
from simulator.graph.schedule import wait_category

#: The parts a step is split into, in report order.
PARTS = ("attention", "ffn", "router", "dispatch_combine", "all_to_all", "tp_comm", "cp_comm",
         "weight_sync", "embedding_head", "optimizer", "pipeline_bubble", "other")

#: Compute ops by their template name (phase prefixes ``bwd.``/``re.`` stripped).
_COMPUTE_PART = {
    **dict.fromkeys(("attn_norm", "qkv", "attn", "attn_softmax", "attn_out", "attn_res"),
                    "attention"),
    **dict.fromkeys(("mlp_norm", "mlp_in", "mlp_act", "mlp_out", "mlp_res", "moe_norm", "moe_res",
                     "expert_in", "expert_act", "expert_out", "shared_in", "shared_act",
                     "shared_out"), "ffn"),
    **dict.fromkeys(("router", "router_topk"), "router"),
    **dict.fromkeys(("dispatch", "combine", "moe_host"), "dispatch_combine"),
    **dict.fromkeys(("embed", "final_norm", "lm_head", "loss"), "embedding_head"),
    "optimizer": "optimizer",
}


def op_tag(op: Op) -> str:
    """An op's name without layer and phase prefixes: ``L3.bwd.fsdp_ag`` -> ``fsdp_ag``."""
    return op.name.rsplit(".", 1)[-1]


def comm_part(kind: str, axis: str) -> str:
    """Part of a collective: all-to-alls (expert dispatch/combine) -> ``all_to_all``; over
    ``model`` -> ``tp_comm``; over ``seq`` -> ``cp_comm``; the rest (FSDP gathers, gradient
    reduce-scatter / all-reduce, the distributed optimizer's gather) -> ``weight_sync``."""
    if kind == Collective.ALL_TO_ALL.value:
        return "all_to_all"
    return {"model": "tp_comm", "seq": "cp_comm"}.get(axis, "weight_sync")


def part_of(op: Op) -> str:
    if op.collective is not None:
        return comm_part(op.collective.value, op.axis or "")
    return _COMPUTE_PART.get(op_tag(op), "other")


@dataclass(frozen=True)
class Attribution:
    """Seconds of one step per op tag (``by_tag``) and per part (``by_part``, every PARTS key);
    each sums to ``step_time_s``."""

    step_time_s: float
    by_tag: dict[str, float]
    by_part: dict[str, float]


def _stage_seconds(timing) -> tuple[dict, dict]:
    """(per micro-batch, tail) seconds per (node, category) of the critical rank's stage."""
    sc = timing.sched
    ops = sc.ops
    ends = [sc.end[n] for n, op in ops.items() if op.stream == COMPUTE]
    t_mb = max((sc.end[n] for n, op in ops.items() if op.stream == COMPUTE
                and op.phase in MICROBATCH), default=0.0)
    last_compute = max(ends, default=0.0)
    per_mb: dict[tuple, float] = defaultdict(float)
    tail: dict[tuple, float] = defaultdict(float)
    for name, pieces in sc.waits.items():
        end = sc.end[name]
        bucket = per_mb if end <= t_mb else tail if end <= last_compute else None
        if bucket is None:
            continue
        op = ops[name]
        bucket[(name, op.category)] += op.duration
        for who, seconds in pieces:
            bucket[(who or name, wait_category(ops, who))] += seconds
    if sc.makespan > last_compute:
        final = max(ops, key=lambda n: sc.end[n])
        tail[(final, ops[final].category)] += sc.makespan - last_compute
    floor, cat = link_floor((op, 1) for op in ops.values())
    if floor > t_mb:
        per_mb[("link_floor", cat)] += floor - t_mb
    return per_mb, tail


def attribute(pred) -> Attribution:
    """Split ``pred``'s step time by op and by part; raises if it disagrees with the breakdown."""
    timing = pred.critical
    ops = timing.ops
    per_mb, tail = _stage_seconds(timing)
    by_cat: dict[str, float] = defaultdict(float)
    by_tag: dict[str, float] = defaultdict(float)
    by_part = dict.fromkeys(PARTS, 0.0)
    for bucket, times in ((per_mb, pred.microbatches), (tail, 1)):
        for (name, cat), seconds in bucket.items():
            s = seconds * times
            by_cat[cat] += s
            if name == "link_floor":
                _, kind, axis = cat.split(".", 2)
                tag, part = f"link_floor.{axis}", comm_part(kind, axis)
            else:
                op = ops[name]
                tag, part = op_tag(op), part_of(op)
            by_tag[tag] += s
            by_part[part] += s
    bubble = pred.breakdown_s.get("pipeline_bubble", 0.0)
    if bubble:
        by_cat["pipeline_bubble"] += bubble
        by_tag["pipeline_bubble"] += bubble
        by_part["pipeline_bubble"] += bubble
    _check(pred, by_cat)
    return Attribution(pred.step_time_s, dict(by_tag), by_part)


def _check(pred, by_cat: dict[str, float]) -> None:
    scale = max(pred.step_time_s, 1e-30)
    for cat in set(by_cat) | set(pred.breakdown_s):
        if abs(by_cat.get(cat, 0.0) - pred.breakdown_s.get(cat, 0.0)) > 1e-9 * scale:
            raise MeshcastError(f"attribution: {cat} is {by_cat.get(cat, 0.0):.6g} s by op but "
                                f"{pred.breakdown_s.get(cat, 0.0):.6g} s in the forecast's "
                                "breakdown; the schedule's rules changed without this module")
