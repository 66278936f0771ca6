"""Pipeline schedules: the bubble comes out of the simulation and matches the closed forms."""

from __future__ import annotations

import pytest

from simulator.graph.pipeline import interleaved_order, one_f_one_b_order, simulate_pipeline


@pytest.mark.parametrize("pp,m", [(2, 4), (4, 8), (4, 4), (8, 16)])
def test_1f1b_bubble_is_pp_minus_one_stage_times(pp, m):
    # Narayanan et al. 2021: bubble = (pp - 1) (tf + tb) for uniform stages and free sends.
    tf, tb = 1.0, 2.0
    r = simulate_pipeline([tf] * pp, [tb] * pp, 0.0, m)
    assert r.span_s == pytest.approx((m + pp - 1) * (tf + tb))
    assert r.bubble_s == pytest.approx((pp - 1) * (tf + tb))


@pytest.mark.parametrize("pp,m,v", [(2, 4, 2), (4, 8, 2), (4, 8, 4)])
def test_interleaved_bubble_shrinks_by_v(pp, m, v):
    # Narayanan et al. SC'21 sec. 2.2: bubble = (pp - 1) (tf + tb) / v.
    tf, tb = 1.0, 2.0
    r = simulate_pipeline([tf] * pp, [tb] * pp, 0.0, m, "interleaved", v)
    assert r.bubble_s == pytest.approx((pp - 1) * (tf + tb) / v)


def test_sends_add_to_the_span():
    free = simulate_pipeline([1.0] * 4, [2.0] * 4, 0.0, 8)
    sent = simulate_pipeline([1.0] * 4, [2.0] * 4, 0.1, 8)
    assert sent.span_s > free.span_s


def test_slow_stage_sets_the_pace():
    r = simulate_pipeline([1.0, 1.0, 2.0], [2.0, 2.0, 4.0], 0.0, 10)
    assert r.span_s >= 10 * 6.0


def test_orders_run_every_task_once():
    for order in (one_f_one_b_order(1, 4, 8), interleaved_order(1, 4, 8, 2)):
        kinds = [k for k, _, _ in order]
        assert kinds.count("F") == kinds.count("B") == len(order) // 2
        assert len(set(order)) == len(order)


@pytest.mark.parametrize("schedule,v", [("1f1b", 1), ("interleaved", 2)])
def test_long_runs_extend_the_steady_state_exactly(schedule, v, monkeypatch):
    import simulator.graph.pipeline as pl

    tf, tb = [1.0, 1.2, 0.9, 1.5], [2.0, 2.1, 1.8, 3.2]  # uneven stages, with sends
    m = 200
    extended = pl.simulate_pipeline(tf, tb, 0.05, m, schedule, v)
    monkeypatch.setattr(pl, "SIMULATED_MICROBATCHES", 10_000)
    direct = pl.simulate_pipeline(tf, tb, 0.05, m, schedule, v)
    assert extended.span_s == pytest.approx(direct.span_s, rel=1e-12)
    assert extended.finish_s == pytest.approx(direct.finish_s, rel=1e-12)
    assert len(extended.tasks) < len(direct.tasks)


def test_a_huge_number_of_microbatches_is_cheap():
    r = simulate_pipeline([1.0] * 8, [2.0] * 8, 0.0, 2**40)
    assert r.span_s == pytest.approx((2**40 + 7) * 3.0)
