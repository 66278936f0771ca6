"""Deduplicated expert dispatch (DeepEP / HybridEP, ShardingSpec.moe_dispatcher="deepep"): a token
crosses each network level once per destination block it hits, not once per expert."""

from __future__ import annotations

import itertools
from math import comb

import pytest

from hardware_profiles import load_profile
from simulator.cost.collectives import Collective, collective_time, dedup_block_hit
from simulator.predict import predict_job
from simulator.specs.job import make_job
from simulator.specs.sharding import make_sharding
from simulator.cost.topology import build_topology
from simulator.specs.zoo import load_model

ORDER = ["model", "seq", "expert", "fsdp", "data", "pipeline"]


def _expert_parts(profile, chips, e):
    return build_topology(profile, chips, {"expert": e}, ORDER, {}).placement["expert"]


def test_block_hit_probability_counts_every_routing():
    # E = 8 experts in 4 blocks of 2, top-2: enumerate all C(8, 2) routings
    routings = list(itertools.combinations(range(8), 2))
    hit = sum(any(x in (0, 1) for x in r) for r in routings) / len(routings)
    assert dedup_block_hit(8, 2, 2) == pytest.approx(hit, rel=1e-12)
    assert hit == pytest.approx(1 - comb(6, 2) / comb(8, 2))


def test_block_hit_limits():
    assert dedup_block_hit(64, 1, 8) == pytest.approx(8 / 64)  # top-1: the block's share
    assert dedup_block_hit(64, 8, 64) == 1.0  # the block holds every expert
    assert dedup_block_hit(8, 8, 1) == 1.0  # every expert is chosen


def test_one_expert_per_device_in_a_node_or_top1_is_the_plain_all_to_all(gpu_profile):
    B = 1e8
    node = _expert_parts(gpu_profile, 8, 8)  # one NVLink level, one expert per device
    assert collective_time(Collective.ALL_TO_ALL, node, B, dedup=(8, 4)) == pytest.approx(
        collective_time(Collective.ALL_TO_ALL, node, B))
    p = _expert_parts(gpu_profile, 16, 16)  # 8 on NVLink x 2 over IB
    assert collective_time(Collective.ALL_TO_ALL, p, B, dedup=(64, 1)) == pytest.approx(
        collective_time(Collective.ALL_TO_ALL, p, B))
    # one expert per device but 8 per node: the fabric still merges a token's copies per node
    assert collective_time(Collective.ALL_TO_ALL, p, B, dedup=(16, 4)) < collective_time(
        Collective.ALL_TO_ALL, p, B)


def test_fabric_carries_one_copy_per_destination_node(gpu_profile):
    # 16 devices = 8 (NVLink, 100 GB/s) x 2 nodes (IB, 10 GB/s): the fabric is the busiest level.
    # E = 64, top-8: a token reaches the other node (32 experts) with P = 1 - C(32,8)/C(64,8) and
    # sends one copy there, so the fabric carries P * B / 8 against the plain B / 2.
    B, E, k = 1e8, 64, 8
    p = _expert_parts(gpu_profile, 16, 16)
    P = 1 - comb(32, 8) / comb(64, 8)
    nv = 8 * dedup_block_hit(E, k, E / 16) / k * (7 / 8) * B / 100e9
    ib = P * B / k / 10e9
    assert collective_time(Collective.ALL_TO_ALL, p, B, dedup=(E, k)) == pytest.approx(
        max(nv, ib) + 2e-6 + 5e-6, rel=1e-12)
    assert ib < 0.26 * (B / 2 / 10e9)


def test_other_collectives_ignore_dedup(gpu_profile):
    p = _expert_parts(gpu_profile, 16, 16)
    assert collective_time(Collective.ALL_GATHER, p, 1e8, dedup=(64, 8)) == collective_time(
        Collective.ALL_GATHER, p, 1e8)


def _job(dispatcher, model="qwen3-30b-a3b", ep=16):
    sh = make_sharding(mesh={"expert": ep, "data": 32 // ep}, micro_batch=1, global_batch=32,
                       seq_len=4096, moe_dispatcher=dispatcher)
    return make_job(load_model(model), sh, load_profile("h100-sxm"), 32)


def test_deepep_shrinks_cross_node_expert_traffic_in_the_step():
    plain, dedup = predict_job(_job("alltoall")), predict_job(_job("deepep"))
    a2a = "comm.all_to_all.expert"
    assert dedup.breakdown_s.get(a2a, 0.0) < 0.5 * plain.breakdown_s[a2a]
    assert dedup.step_time_s < plain.step_time_s
    ops = [a["op"] for a in dedup.critical.graph.nodes.values()
           if a["op"].collective is Collective.ALL_TO_ALL]
    assert ops and all(op.dedup == (128, 8, 1, None) for op in ops)  # fwd and bwd alike


def test_dense_models_are_unchanged_by_the_dispatcher():
    a = predict_job(_job("alltoall", model="llama3-8b", ep=1))
    b = predict_job(_job("deepep", model="llama3-8b", ep=1))
    assert a.step_time_s == b.step_time_s


def test_unknown_dispatcher_is_refused():
    with pytest.raises(ValueError, match="moe_dispatcher"):
        make_sharding(mesh={"data": 8}, moe_dispatcher="nccl")


# --- group-limited routing (DeepSeek's n_group / topk_group) -----------------------------------
def _grouped_routings(E: int, G: int, M: int, k: int):
    """Every routing of group-limited top-k, each equally likely: ``M`` of ``G`` groups, then
    ``k`` of the chosen groups' experts."""
    g = E // G
    for groups in itertools.combinations(range(G), M):
        pool = [x for grp in groups for x in range(grp * g, (grp + 1) * g)]
        for pick in itertools.combinations(pool, k):
            yield pick


@pytest.mark.parametrize("E,G,M,k,block", [
    (8, 4, 2, 2, 1), (8, 4, 2, 2, 2), (8, 4, 2, 2, 4),           # inside a group, one, two groups
    (12, 6, 3, 3, 1), (12, 6, 3, 3, 2), (12, 6, 3, 3, 4), (12, 6, 3, 3, 6),
])
def test_group_limited_hit_counts_every_routing(E, G, M, k, block):
    routings = list(_grouped_routings(E, G, M, k))
    hit = sum(any(x < block for x in r) for r in routings) / len(routings)
    assert dedup_block_hit(E, k, block, G, M) == pytest.approx(hit, rel=1e-12)
    # one expert is still hit with chance k/E; a larger block less often than unlimited
    plain = dedup_block_hit(E, k, block)
    assert dedup_block_hit(E, k, block, G, M) < plain if block > 1 else \
        dedup_block_hit(E, k, block, G, M) == pytest.approx(plain, rel=1e-12)


def test_unlimited_or_unaligned_groups_take_the_plain_form():
    for block in (1, 2, 4, 8):
        plain = dedup_block_hit(16, 4, block)
        assert dedup_block_hit(16, 4, block, 4, 4) == plain  # every group allowed
        assert dedup_block_hit(16, 4, block, 4, None) == plain
    assert dedup_block_hit(12, 3, 3, 6, 2) == dedup_block_hit(12, 3, 3)  # 3 vs groups of 2


def test_deepseek_v3_routing_cuts_the_fabric_share_of_its_dispatch():
    """EP 32 over 4 nodes of 8 H100s: 64 experts (two groups) per node; with a token's experts
    from at most 4 of 8 groups it reaches fewer nodes, so fewer bytes cross InfiniBand."""
    from simulator.cost.collectives import dedup_shares
    from simulator.cost.formulas import dedup_routing

    moe = load_model("deepseek-v3").moe
    assert dedup_routing(moe) == (256, 8, 8, 4)
    parts = _expert_parts(load_profile("h100-sxm"), 32, 32)
    grouped = dedup_shares(parts, *dedup_routing(moe))
    plain = dedup_shares(parts, 256, 8)
    assert grouped[-1] < plain[-1] and grouped[0] < plain[0]
    B = 1e9
    assert collective_time(Collective.ALL_TO_ALL, parts, B, dedup=dedup_routing(moe)) < \
        collective_time(Collective.ALL_TO_ALL, parts, B, dedup=(256, 8))


@pytest.mark.parametrize("fields,word", [
    (dict(expert_groups=3), "expert_groups=3 does not divide n_experts=16"),
    (dict(expert_groups=4, groups_per_token=5), "groups_per_token=5 exceeds expert_groups=4"),
    (dict(expert_groups=8, groups_per_token=1), "top_k=4 exceeds the 1 x 2"),
])
def test_bad_routing_groups_are_named(fields, word):
    from pydantic import ValidationError

    from simulator.specs.model import MoESpec

    with pytest.raises(ValidationError) as e:
        MoESpec(n_experts=16, top_k=4, expert_ffn_hidden=64, **fields)
    assert word in str(e.value)
