"""simulator.graph.periodic: the schedule with periodic layers skipped gives what the schedule of
every node gives (t_fwd, t_mb, the last compute op, makespan, the category that ends last and
both breakdown windows, float rounding only) on every zoo model under several shardings, with
and without a pipeline, and on a 100-layer MoE whose gradient stream falls ever further behind
the backward (ops moving at two rates; the optimizer's wait walks back into skipped layers)."""

from __future__ import annotations

import importlib
import math
from dataclasses import replace

import numpy as np
import pytest

from meshcast.errors import MeshcastError
from simulator.cost.compute import ComputeModel
from simulator.graph import periodic
from simulator.graph.cost import CostContext
from simulator.graph.periodic import full_summary, runs, schedule_stage
from simulator.graph.schedule import schedule_items
from simulator.predict import _stages, predict, stage_plan
from simulator.specs.model import ModelSpec, MoESpec
from simulator.specs.zoo import list_models
from tests.search_helpers import serial_profile

EXACT = 1e-12

SHARDINGS = [
    dict(mesh={"fsdp": 8, "data": -1}, remat="none"),
    dict(mesh={"data": -1, "model": 2, "fsdp": 2}, remat="full", distributed_optimizer=True),
    dict(mesh={"expert": 2, "fsdp": 4, "data": -1}, remat="selective"),
    dict(mesh={"pipeline": 4, "fsdp": 2, "data": -1}, remat="selective"),
    dict(mesh={"pipeline": 2, "model": 2, "data": -1}, remat="full",
         pipeline_schedule="interleaved", virtual_stages=2),
]

MOE_100 = ModelSpec(
    name="moe-100-layers", source="test: 100 layers, 64 experts top-2, a shared expert",
    n_layers=100, d_model=4096, n_heads=32, n_kv_heads=8, ffn_hidden=14336, vocab_size=32000,
    seq_len=4096, moe=MoESpec(n_experts=64, top_k=2, capacity_factor=2.0, expert_ffn_hidden=4096,
                              n_shared_experts=1))


def _plans(pred):
    job = pred.job
    ctx = CostContext(ComputeModel.from_profile(job.hardware, job.sharding.precision),
                      job.topology)
    return [stage_plan(job, ctx, layers, first, last) for layers, first, last in _stages(job)]


def _assert_same(got, ref, where) -> None:
    scale = max(abs(ref.makespan), 1e-30)
    for f in ("t_fwd", "t_mb", "last_compute", "makespan"):
        assert getattr(got, f) == pytest.approx(getattr(ref, f), rel=EXACT, abs=0), (where, f)
    assert got.final_category == ref.final_category, where
    for w in ("before", "after"):
        a, b = getattr(got, w), getattr(ref, w)
        for k in set(a) | set(b):
            assert a.get(k, 0.0) == pytest.approx(b.get(k, 0.0), rel=EXACT,
                                                  abs=EXACT * scale), (where, w, k)


def _compare(pred, where) -> int:
    """Skipping vs every node; and the summary's windows vs the scheduled graph's own
    (:meth:`Scheduled.window`, split by end time rather than by position)."""
    skipped = 0
    for r, plan in enumerate(_plans(pred)):
        got, ref = schedule_stage(plan), full_summary(plan)
        _assert_same(got, ref, (where, f"rank {r}"))
        sc = schedule_items(plan.unrolled())
        before, after = sc.window(-math.inf, ref.t_mb), sc.window(ref.t_mb, ref.last_compute)
        _assert_same(got, replace(ref, before=before, after=after), (where, f"rank {r}", "windows"))
        skipped += got.skipped
    return skipped


@pytest.mark.parametrize("model", [m.name for m in list_models()])
def test_skipping_periodic_layers_changes_nothing(model):
    tried = skipped = 0
    for kw in SHARDINGS:
        try:
            pred = predict(model=model, hardware="h100-sxm", chips=16, global_batch=64, **kw)
        except MeshcastError:  # e.g. experts or heads not divisible by the mesh
            continue
        tried += 1
        skipped += _compare(pred, (model, kw))
    assert tried >= 2  # the first two shardings fit every zoo model
    assert skipped > 0  # every zoo model has runs of identical layers long enough to skip


@pytest.mark.parametrize("hardware,model,kw", [
    ("h100-sxm+serial", "moe-6.4b", dict(mesh={"expert": 4, "fsdp": 2, "pipeline": 2},
                                         remat="selective")),
    ("tpu-v5p+serial", "llama3-8b", dict(mesh={"fsdp": 8, "pipeline": 2}, remat="none")),
    ("tpu-v5p", "moe-6.4b", dict(mesh={"expert": 4, "fsdp": 4}, remat="full",
                                 ep_comm_overlap=True, tp_comm_overlap=True)),
    ("h100-sxm", "mixtral-8x7b", dict(mesh={"expert": 4, "model": 2, "fsdp": 2}, remat="none",
                                      ep_comm_overlap=True, tp_comm_overlap=True)),
    ("h100-sxm", "qwen3-30b-a3b", dict(mesh={"expert": 16}, remat="selective",
                                       moe_dispatcher="deepep")),
])
def test_serial_collectives_and_comm_overlap(hardware, model, kw):
    """Collectives on the compute stream (a calibrated CPU host), TP and EP comm overlap,
    a deduplicating dispatcher: the same answer, layers still skipped."""
    hw = serial_profile(hardware[:-len("+serial")]) if hardware.endswith("+serial") else hardware
    pred = predict(model=model, hardware=hw, chips=16, global_batch=64, **kw)
    assert _compare(pred, (hardware, model)) > 0


def test_two_rates_and_a_wait_into_skipped_layers(monkeypatch):
    """The gradient reduce-scatter outlasts each layer's backward: the grad stream moves at
    about twice the compute stream's rate; the optimizer's wait is charged along that backlog,
    through layers that were never scheduled (made on demand)."""
    made = []
    start = periodic._Runner._start
    monkeypatch.setattr(periodic._Runner, "_start",
                        lambda self, key: made.append(key) or start(self, key))
    pred = predict(model=MOE_100, hardware="h100-sxm", chips=512, global_batch=1024,
                   mesh={"data": -1, "expert": 8, "model": 4, "fsdp": 4}, remat="full")
    (plan,) = _plans(pred)
    got, ref = schedule_stage(plan), full_summary(plan)
    _assert_same(got, ref, "moe-100")
    assert got.skipped >= 180  # of 200 layer repeats
    assert made  # the charged chain reached skipped nodes
    full = sum(ref.after.values())
    assert full > 0 and sum(got.after.values()) == pytest.approx(full, rel=EXACT)


def test_predict_schedules_every_node_only_when_asked(monkeypatch):
    """predict reads the skipping schedule; the schedule of every node (traces, plots,
    attribution) is built on first use and agrees with it."""
    P = importlib.import_module("simulator.predict")  # the package re-exports predict()
    calls = []
    full = P.schedule_items
    monkeypatch.setattr(P, "schedule_items", lambda items: calls.append(1) or full(items))
    pred = predict(model="mixtral-8x7b", hardware="h100-sxm", chips=64, global_batch=256,
                   mesh={"expert": 8, "fsdp": 8}, remat="selective")
    assert not calls
    crit = pred.critical
    ref = full_summary(crit.plan)
    assert crit.sched.makespan == pytest.approx(ref.makespan, rel=EXACT)
    assert calls == [1]
    assert crit.t_fwd == pytest.approx(ref.t_fwd, rel=EXACT)
    assert crit.tail == pytest.approx(ref.makespan - ref.t_mb, rel=EXACT)


def _expand(rs):
    return [k for pat, n in rs for _ in range(n) for k in pat]


def test_runs_compresses_alternating_kinds():
    a, b, c = ("fwd", False), ("fwd", True), ("head",)
    assert runs([a, b] * 16) == [((a, b), 16)]
    assert runs([a] * 5) == [((a,), 5)]
    assert runs([c, a, b, a, b, a, b, c]) == [((c,), 1), ((a, b), 3), ((c,), 1)]
    assert runs([a, a, b, a, a, b, a, a, b]) == [((a, a, b), 3)]
    assert runs([]) == []
    # 32 layers of a first-dense-then-alternating model: a run per regime
    seq = [a] * 3 + [a, b] * 14 + [c]
    assert _expand(runs(seq)) == seq and len(runs(seq)) <= 4


def test_runs_always_expands_back_to_its_sequence():
    rng = np.random.default_rng(3)
    for _ in range(200):
        seq = list(rng.integers(0, 3, size=rng.integers(0, 30)))
        assert _expand(runs(seq)) == seq


def test_runs_find_the_longest_repeated_patterns():
    assert runs(list("aaaa")) == [(("a",), 4)]
    assert runs(list("xababab" + "y")) == [(("x",), 1), (("a", "b"), 3), (("y",), 1)]
    assert runs(list("abc")) == [(("a",), 1), (("b",), 1), (("c",), 1)]
