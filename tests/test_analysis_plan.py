"""Budgets (issue 4): Chinchilla tokens, steps, wall-clock, chip-hours, cost, deadlines -- on a
model whose parameter count is a power of two, so every figure can be checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.budget import (
    Budget,
    chinchilla_tokens,
    chip_hours,
    smallest_meeting,
    train_steps,
)
from meshcast.errors import MeshcastError
from simulator.analysis.plan import PlanEntry, pareto_front
from simulator.specs.model import ModelSpec, MoESpec

# D=1024, 8 heads of 128 (MHA), SwiGLU F=4096, 4 layers, V=32768 untied:
#   attention 1024*128*(2*8 + 2*8) = 4,194,304; FFN 3*1024*4096 = 12,582,912; a layer 2^24;
#   4 layers 2^26; embeddings 2*32768*1024 = 2^26; total 2^27 = 134,217,728 parameters.
ROUND = ModelSpec(name="round", source="test", n_layers=4, d_model=1024, n_heads=8,
                  ffn_hidden=4096, vocab_size=32768, seq_len=2048)


def test_round_model_has_two_to_the_27_parameters():
    assert ROUND.total_params == 2**27


def test_hand_worked_budget():
    # Chinchilla: 20 x 2^27 = 2,684,354,560 tokens. 256 seqs x 2048 = 2^19 tokens per step:
    # steps = 20 x 2^27 / 2^19 = 5,120. At 2.5 s a step: 12,800 s = 0.148 days; on 64 chips
    # 64 x 12,800 / 3,600 = 227.56 chip-hours; at $4.00 per chip-hour $910.22.
    tokens = chinchilla_tokens(ROUND)
    assert tokens == 2_684_354_560
    b = Budget(tokens, 256 * 2048, 2.5, 64, 4.0)
    assert b.steps == 5120
    assert b.seconds == 12_800.0
    assert b.days == pytest.approx(12_800 / 86_400)
    assert b.chip_hours == pytest.approx(227.5556, rel=1e-6)
    assert b.cost_usd == pytest.approx(910.2222, rel=1e-6)
    assert Budget(tokens, 256 * 2048, 2.5, 64, None).cost_usd is None
    assert Budget(tokens + 1, 256 * 2048, 2.5, 64, 4.0).steps == 5121  # a partial step counts
    # integer ceiling: exact where a float quotient would round the partial step away
    assert train_steps(10**18 + 1, 10**9) == 10**9 + 1
    assert np.array_equal(chip_hours(np.array([64, 128]), 12_800.0), [64 * 12_800 / 3600,
                                                                      128 * 12_800 / 3600])


def test_ratio_and_reference():
    assert chinchilla_tokens(ROUND, ratio=10) == 10 * 2**27
    moe = ROUND.model_copy(update={"name": "round-moe", "moe": MoESpec(
        n_experts=8, top_k=2, expert_ffn_hidden=4096)})
    # an MoE defaults to its total parameters; Du et al. 2024 pass the dense reference
    assert chinchilla_tokens(moe) == 20 * moe.total_params > 20 * moe.active_params
    assert chinchilla_tokens(moe, reference=ROUND) == 20 * 2**27
    with pytest.raises(MeshcastError, match="tokens-per-param: -1"):
        chinchilla_tokens(ROUND, ratio=-1)


def test_smallest_chip_count_meeting_a_deadline():
    days = {64: 10.0, 128: 5.2, 256: 2.7, 512: 1.5}
    assert smallest_meeting(days, 6) == 128
    assert smallest_meeting(days, 5.2) == 128
    assert smallest_meeting(days, 1.0) is None
    with pytest.raises(MeshcastError, match="deadline: 0"):
        smallest_meeting(days, 0)


def test_pareto_front_keeps_what_nothing_beats_on_time_and_cost():
    def e(hw, chips, seconds_per_step, price):
        return PlanEntry(hw, chips, best=object(), budget=Budget(100, 1, seconds_per_step, chips, price))

    a = e("x", 64, 10.0, 1.0)   # 1000 s, cost 64*1000/3600
    b = e("x", 128, 5.5, 1.0)   # faster, dearer
    c = e("y", 64, 12.0, 2.0)   # slower and dearer than a: dominated
    d = e("z", 256, 2.0, None)  # no price: not on the front
    assert pareto_front([c, d, b, a]) == [b, a]


def test_failures_change_the_chip_count_that_meets_a_deadline():
    """Counting interruptions (a high rate, so a small model shows it): the expected days
    exceed the ideal ones, more so on more chips, and the deadline that the ideal time meets
    on the smaller count needs the larger one once failures count."""
    from simulator.analysis.plan import plan

    kw = dict(chips=[64, 128], tokens=2**33, global_batch=256, seq_len=2048)
    ideal = plan(ROUND, ["h100-sxm"], **kw)
    days = {e.chips: e.budget.days for e in ideal.entries}
    hit = plan(ROUND, ["h100-sxm"], **kw, failures={"rate": 2.0, "restart_min": 1.0})
    for e in hit.entries:
        g = e.budget.goodput
        assert e.budget.ideal_days == pytest.approx(days[e.chips])
        assert e.budget.days == pytest.approx(g.expected_s / 86400) and g.goodput < 1
        assert g.p90_s >= g.p50_s > 0
    good = {e.chips: e.budget.goodput.goodput for e in hit.entries}
    assert good[128] < good[64]
    late = {e.chips: e.budget.days for e in hit.entries}
    deadline = max(days[64], late[128])
    assert deadline < late[64]  # a deadline the ideal time meets on 64 chips, failures do not
    kw["deadline_days"] = deadline
    assert plan(ROUND, ["h100-sxm"], **kw).deadline["h100-sxm"] == 64
    assert plan(ROUND, ["h100-sxm"], **kw, failures={"rate": 2.0, "restart_min": 1.0}
                ).deadline["h100-sxm"] == 128
    assert hit.failures["h100-sxm"].rate_per_chip_day.value == 2.0
    assert ideal.failures["h100-sxm"] is None
