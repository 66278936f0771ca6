"""Enumeration (issue 4): counts of valid configurations worked out by hand, the reasons
invalid ones are dropped, and the distinct placements of a mesh on two network levels."""

from __future__ import annotations

import numpy as np
import pytest

from meshcast.errors import MeshcastError
from simulator.search import enumerate_candidates, make_space
from simulator.search.enumerate import factorizations
from simulator.search.placements import PlacementFinder
from simulator.specs.model import ModelSpec, MoESpec
from simulator.cost.topology import job_levels

DENSE = ModelSpec(name="tiny", source="test", n_layers=4, d_model=256, n_heads=2, n_kv_heads=2,
                  ffn_hidden=512, vocab_size=512, seq_len=128)
MOE = DENSE.model_copy(update={"name": "tiny-moe", "moe": MoESpec(n_experts=4, top_k=2,
                                                                  expert_ffn_hidden=256)})


def test_factorizations_are_every_ordered_tuple():
    # 8 = 2^3 over 3 axes: place three 2s in 3 boxes, C(3 + 2, 2) = 10 ordered tuples
    f = factorizations(8, 3)
    assert len(f) == 10 and len({tuple(r) for r in f}) == 10
    assert (np.prod(f, axis=1) == 8).all()
    assert len(factorizations(12, 2)) == 6  # (1,12) (2,6) (3,4) (4,3) (6,2) (12,1)


def test_dense_counts_by_hand(gpu_profile):
    """4 chips over (data, model, pipeline), 4 layers, 2 heads, global batch 4, all remats,
    both schedules. On this profile 4 chips are one nvlink level of 4 (and ib of 1).

    Meshes (data, model, pipeline) with product 4: (4,1,1) (1,4,1) (1,1,4) (2,2,1) (2,1,2)
    (1,2,2). model=4 does not divide 2 heads: 1 invalid. Each valid mesh has one placement
    (every axis fits on nvlink, in any order). Micro-batches divide the per-shard batch 4/data;
    schedules: pipeline=2 gives 1f1b and interleaved v=2 (2 layers per rank), pipeline=4 only
    1f1b (1 layer per rank). Rows = micro-batches x 3 remats x schedules:
      (4,1,1): 1 x 3 x 1 = 3      (1,1,4): 3 x 3 x 1 = 9      (2,2,1): 2 x 3 x 1 = 6
      (2,1,2): 2 x 3 x 2 = 12     (1,2,2): 3 x 3 x 2 = 18     total 48
    Interleaved needs micro-batches (4 / (mb x data)) % pipeline == 0: (2,1,2) mb=2 gives 1,
    (1,2,2) mb=4 gives 1: 2 x 3 remats = 6 rows dropped. Valid: 42."""
    space = make_space(DENSE, gpu_profile, 4, global_batch=4, axes=("data", "model", "pipeline"))
    c = enumerate_candidates(space)
    assert len(c) == 42
    assert {k: v for k, v in c.invalid.items() if v} == {"heads % model": 1,
                                                         "interleaved % pipeline": 6}
    assert len({tuple(r) for r in c.mesh}) == 5
    assert len(c.placements) == 5
    assert sorted(set(c.virtual.tolist())) == [1, 2]


def test_moe_counts_by_hand(gpu_profile):
    """8 chips over (data, expert, fsdp), 4 experts, global batch 8, remat full, 1F1B only.
    Ordered triples with product 8: 10; expert=8 does not divide 4 experts: 1 invalid (data=1,
    fsdp=1). All 9 others shard the batch 8 ways: per-shard batch 1, one micro-batch size, one
    placement (all on the 8-wide nvlink level). Valid: 9."""
    space = make_space(MOE, gpu_profile, 8, global_batch=8, axes=("data", "expert", "fsdp"),
                       remats=("full",), schedules=("1f1b",))
    c = enumerate_candidates(space)
    assert len(c) == 9
    assert {k: v for k, v in c.invalid.items() if v} == {"experts % expert": 1}


def test_expert_axis_on_a_dense_model_is_invalid(gpu_profile):
    """(data, expert) over 4 chips: (4,1) valid; (2,2) and (1,4) put experts on a dense model."""
    space = make_space(DENSE, gpu_profile, 4, global_batch=4, axes=("data", "expert"),
                       remats=("full",))
    c = enumerate_candidates(space)
    assert len(c) == 1 and c.invalid["expert on dense"] == 2


def test_batch_rule_and_micro_batch_sizes(gpu_profile):
    """Global batch 2 on 4 chips over (data, model): data=4 cannot split 2 sequences; data=2
    gives micro-batch 1 (per shard 1); data=1 (model=4 breaks the heads rule first).
    Asked micro-batches (1, 3): 3 divides no per-shard batch here."""
    space = make_space(DENSE, gpu_profile, 4, global_batch=2, axes=("data", "model"),
                       remats=("none",), micro_batches=(1, 3))
    c = enumerate_candidates(space)
    assert c.invalid["batch % shards"] == 1 and c.invalid["heads % model"] == 1
    assert len(c) == 1 and c.micro_batch.tolist() == [1]
    assert c.invalid["micro-batch % batch"] == 1


def test_two_placements_when_axes_compete_for_nvlink(gpu_profile):
    """16 chips = nvlink 8 x ib 2. model=4, fsdp=4: model first takes nvlink:4 and fsdp gets
    nvlink:2 + ib:2, or fsdp first and model spans ib: 2 distinct placements. model=2, fsdp=4,
    data=2: both inner orders fill nvlink alike (2 x 4), data on ib: 1 placement."""
    finder = PlacementFinder(job_levels(gpu_profile, 16))
    two = [finder.registry[i].label for i in finder.for_mesh({"model": 4, "fsdp": 4})]
    assert sorted(two) == ["fsdp->nvlink:2+ib:2, model->nvlink:4",
                           "fsdp->nvlink:4, model->nvlink:2+ib:2"]
    assert len(finder.for_mesh({"model": 2, "fsdp": 4, "data": 2})) == 1


def test_a_row_is_a_valid_job(gpu_profile):
    """Every row round-trips into a ShardingSpec that make_job accepts, same placement."""
    from simulator.specs.job import make_job

    space = make_space(MOE, gpu_profile, 16, global_batch=16)
    c = enumerate_candidates(space)
    for i in np.random.default_rng(0).choice(len(c), 20, replace=False):
        job = make_job(space.model, c.sharding(i), space.hardware, 16)
        placed = {a: tuple(p) for a, p in job.topology.placement.items()}
        assert placed == dict(c.placements[c.placement[i]].parts)


def test_nothing_valid_names_the_rule(gpu_profile):
    with pytest.raises(MeshcastError, match="chips: no valid configuration.*divide the global"):
        enumerate_candidates(make_space(DENSE, gpu_profile, 8, global_batch=3,
                                        axes=("data", "fsdp")))


@pytest.mark.parametrize("model", [DENSE, MOE.model_copy(update={"n_layers": 6})])
def test_mesh_rules_accept_exactly_the_meshes_a_job_accepts(model, gpu_profile):
    """Enumerate's masks are Job's own predicates: over every factorisation of 24 chips (and a
    global batch of 12, seq_len 96) a mesh passes the mesh rules iff a Job with one sequence
    per micro-batch on it validates."""
    from pydantic import ValidationError

    from simulator.search.enumerate import mesh_rules, meshes
    from simulator.specs.job import Job
    from simulator.specs.sharding import AXES, make_sharding

    space = make_space(model, gpu_profile, 24, global_batch=12, seq_len=96)
    mesh = meshes(space)
    alive = ~np.any([broken for _, broken in mesh_rules(space, mesh)], axis=0)
    assert alive.any() and (~alive).any()
    for row, ok in zip(mesh, alive):
        sizes = {a: int(x) for a, x in zip(AXES, row) if x != 1} or {"data": 1}
        s = make_sharding(mesh=sizes, global_batch=12, seq_len=96)
        try:
            Job(model=model, sharding=s, hardware=gpu_profile, chips=24)
            accepted = True
        except ValidationError:
            accepted = False
        assert accepted == bool(ok), sizes


def test_rules_on_columns_equal_each_number():
    from simulator.specs import job as rules

    t, e, pp = np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4]), np.array([1, 2, 3, 4])
    checks = [
        (lambda x, i: rules.heads_split_ok(MOE, x[i]), t),
        (lambda x, i: rules.expert_axis_ok(DENSE, x[i]), e),
        (lambda x, i: rules.experts_split_ok(MOE, x[i]), e),
        (lambda x, i: rules.layers_split_ok(8, x[i], 2), pp),
        (lambda x, i: rules.seq_split_ok(12, x[i]), pp),
        (lambda x, i: rules.batch_split_ok(24, x[i], 3), pp),
        (lambda x, i: rules.interleaved_ok(6, x[i], True), pp),
    ]
    for rule, col in checks:
        assert np.array_equal(rule(col, slice(None)), [bool(rule(col, i)) for i in range(4)])
    assert not rules.heads_split_ok(MOE, 4) and rules.heads_split_ok(MOE, 2)  # 2 heads
    assert not rules.expert_axis_ok(DENSE, 2) and rules.expert_axis_ok(MOE, 2)
    assert not rules.experts_split_ok(MOE, 3) and rules.experts_split_ok(MOE, 4)  # 4 experts
    assert rules.interleaved_ok(3, 2, False) and not rules.interleaved_ok(3, 2, True)
