"""Ranking (issue 4): stable under permutation of the table, objectives, finalists, counts."""

from __future__ import annotations

import numpy as np
import pytest

from meshcast.errors import MeshcastError
from simulator.search import enumerate_candidates, make_space, rank, rank_table
from simulator.search.rank import objective_values


@pytest.fixture(scope="module")
def cands():
    return enumerate_candidates(make_space("mixtral-8x7b", "h100-sxm", 16, seq_len=2048,
                                           global_batch=32))


def _keys(res) -> list[tuple]:
    return [tuple(int(x) for x in row) for row in zip(*res.table.key_columns())]


def test_ranking_is_stable_under_permutation_of_the_table(cands):
    first = rank_table(cands, top=3, finalists=4)
    perm = np.random.default_rng(3).permutation(len(cands))
    again = rank_table(cands.take(perm), top=3, finalists=4)
    assert _keys(first) == _keys(again)
    assert np.array_equal(first.times.step_s, again.times.step_s)
    assert [f.row for f in first.top] == [f.row for f in again.top]


def test_table_is_sorted_best_first_and_ties_break_by_identity(cands):
    res = rank_table(cands, top=2, finalists=2)
    s = res.times.step_s
    assert (np.diff(s) >= 0).all()
    keys = _keys(res)
    for a, b in zip(range(len(s) - 1), range(1, len(s))):
        if s[a] == s[b]:
            assert keys[a] < keys[b]


def test_objectives_order_alike_for_one_job(cands):
    by_time = rank_table(cands, "step_time", top=1, finalists=1)
    by_mfu = rank_table(cands, "mfu", top=1, finalists=1)
    by_ttt = rank_table(cands, "time_to_train", top=1, finalists=1)
    by_cost = rank_table(cands, "cost", top=1, finalists=1)
    for other in (by_mfu, by_ttt, by_cost):
        assert _keys(other)[:50] == _keys(by_time)[:50]
    space = cands.space
    steps = -(-by_ttt.tokens // space.tokens_per_step)
    assert by_ttt.top[0].objective == pytest.approx(steps * by_ttt.top[0].prediction.step_time_s)
    assert by_cost.top[0].objective == pytest.approx(
        by_ttt.top[0].objective * 16 / 3600 * space.hardware.price_per_chip_hour_usd.value)
    assert objective_values(space, "mfu", by_time.top[0].prediction.step_time_s, 1) == \
        pytest.approx(by_time.top[0].prediction.mfu)
    # the search's objectives and the finalists' budgets are one statement of steps and hours
    for res, field in ((by_ttt, "seconds"), (by_cost, "cost_usd")):
        f = res.top[0]
        assert f.objective == pytest.approx(getattr(f.budget, field), rel=1e-12)
    with pytest.raises(MeshcastError, match="objective: 'speed' is not one of"):
        objective_values(space, "speed", 1.0, 1)


def test_counts_add_up_and_finalists_come_from_the_graph_path(cands):
    res = rank_table(cands, top=3, finalists=5)
    c = res.counts
    assert c["candidates"] == len(cands) == c["evaluated"] + c["out_of_memory"]
    assert c["invalid_total"] == sum(cands.invalid.values())
    assert len(res.top) == 3 and res.configs_per_s > 0
    assert all(f.prediction.memory.fits for f in res.top)
    steps = [f.prediction.step_time_s for f in res.top]
    assert steps == sorted(steps)


def test_progress_is_reported():
    seen = []
    rank(make_space("llama3-8b", "h100-sxm", 8, global_batch=16, seq_len=1024), top=1,
         progress=lambda stage, frac: seen.append((stage, frac)))
    stages = [s for s, _ in seen]
    assert stages[:2] == ["enumerate", "memory"] and "timing" in stages
    assert stages[-1] == "graph path"
    assert max(f for s, f in seen if s == "timing") == 1.0


def test_bad_objective_and_cost_without_price(cands):
    with pytest.raises(MeshcastError, match="objective: 'speed' is not one of"):
        rank_table(cands, "speed")
    a100 = make_space("llama3-8b", "a100-sxm-80gb", 8, global_batch=16, seq_len=1024)
    with pytest.raises(MeshcastError, match="objective: cost needs a price.*a100-sxm-80gb"):
        rank(a100, "cost")
