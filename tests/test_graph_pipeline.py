"""Pipeline schedules: the bubble comes out of the simulation and matches the closed forms."""

from __future__ import annotations

import numpy as np
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
def test_long_runs_extend_the_steady_state_exactly(schedule, v):
    """A run far past the base run: its finish times are the event simulation's, from a trace
    of at most the base run's tasks."""
    tf, tb = [1.0, 1.2, 0.9, 1.5], [2.0, 2.1, 1.8, 3.2]  # uneven stages, with sends
    m = 200
    extended = simulate_pipeline(tf, tb, 0.05, m, schedule, v)
    direct = _event_simulation(tf, tb, 0.05, m, schedule, v)
    assert extended.finish_s == pytest.approx(direct, rel=1e-12)
    assert len(extended.tasks) < 2 * len(tf) * m * v


@pytest.mark.parametrize("pp, schedule, v", [(2, "1f1b", 1), (4, "1f1b", 1), (8, "1f1b", 1),
                                             (4, "interleaved", 2), (2, "interleaved", 6),
                                             (8, "interleaved", 3)])
def test_extension_matches_the_whole_schedule_on_many_rows(pp, schedule, v):
    """Random uneven stages, sends from none to larger than a task, and micro-batch counts
    from one to far past the base run, many rows at once: each row's finish times equal
    the whole schedule compiled for its own ``m``."""
    from simulator.graph.pipeline import compile_schedule, pipeline_finish, run_program

    rng = np.random.default_rng(pp * 10 + v)
    rows = 60
    tf = rng.uniform(0.2, 2.0, (pp, rows))
    tf[0] += rng.uniform(0, 1.0, rows)  # embedding
    tf[-1] += rng.uniform(0, 3.0, rows)  # head
    tb = tf * rng.uniform(1.5, 3.0, (pp, rows))
    send = rng.uniform(0, 2.5, rows) * rng.integers(0, 2, rows)
    step = pp if schedule == "interleaved" else 1
    m = step * rng.integers(1, 160 // step, rows)
    got = pipeline_finish(tf, tb, send, m, schedule, v)
    vv = v if schedule == "interleaved" else 1
    for j in range(rows):
        dur = np.empty((2 * pp, 1))
        dur[0::2, 0], dur[1::2, 0] = tf[:, j] / vv, tb[:, j] / vv
        ref = run_program(compile_schedule(pp, int(m[j]), schedule, v), dur, send[j:j + 1])[0]
        assert got[:, j] == pytest.approx(ref[:, 0], rel=1e-11)


def test_rows_still_settling_are_not_extrapolated(monkeypatch):
    """A stage whose round trip nearly ties its own loop settles slowly: its base run's last
    round is not yet its predecessor shifted, so the row is not extended from it (it is
    rerun longer) and still gets the whole schedule's answer."""
    import simulator.graph.pipeline as pl

    pp, m = 4, 300
    tf = np.full((pp, 1), 1.0)
    tb = np.full((pp, 1), 2.0)
    tf[0] += 1e-3  # rank 0's loop exceeds the round trip's mean by a hair
    send = np.array([0.5])
    bases = []
    real = pl.compile_schedule

    def spy(pp_, m_, schedule, v, keep=False):
        bases.append(m_)
        return real(pp_, m_, schedule, v, keep)

    monkeypatch.setattr(pl, "compile_schedule", spy)
    got = pl.pipeline_finish(tf, tb, send, m, "1f1b", 1)
    ref = _event_simulation(list(tf[:, 0]), list(tb[:, 0]), 0.5, m, "1f1b", 1)
    assert got[:, 0] == pytest.approx(ref, rel=1e-12)
    assert len(bases) > 1  # the base run alone did not prove the steady state


def test_a_huge_number_of_microbatches_is_cheap():
    r = simulate_pipeline([1.0] * 8, [2.0] * 8, 0.0, 2**40)
    assert r.span_s == pytest.approx((2**40 + 7) * 3.0)


def _event_simulation(tf, tb, send, m, schedule, v):
    """An independent oracle: each rank runs its tasks in order, a task starting once the
    previous one on its rank is done and its cross-rank dependency has arrived (plus a send);
    finish times per rank."""
    pp = len(tf)
    if schedule == "interleaved" and v > 1:
        orders = [interleaved_order(r, pp, m, v) for r in range(pp)]
    else:
        orders, v = [one_f_one_b_order(r, pp, m) for r in range(pp)], 1
    done, free, pos = {}, [0.0] * pp, [0] * pp
    while any(pos[r] < len(orders[r]) for r in range(pp)):
        moved = False
        for r in range(pp):
            while pos[r] < len(orders[r]):
                kind, chunk, mb = orders[r][pos[r]]
                k = chunk * pp + r
                dep = (("F", k - 1, mb) if k > 0 else None) if kind == "F" else (
                    ("B", k + 1, mb) if k < pp * v - 1 else None)
                if dep is not None and dep not in done:
                    break
                ready = done[dep] + send if dep is not None else 0.0
                free[r] = done[(kind, k, mb)] = max(ready, free[r]) + (
                    tf[r] if kind == "F" else tb[r]) / v
                pos[r] += 1
                moved = True
        assert moved, "deadlock"
    return free


@pytest.mark.parametrize("pp, m, schedule, v", [
    (2, 1, "1f1b", 1), (3, 7, "1f1b", 1), (4, 4, "1f1b", 1), (8, 33, "1f1b", 1),
    (2, 8, "interleaved", 2), (4, 12, "interleaved", 3), (3, 9, "interleaved", 4)])
def test_the_compiled_schedule_matches_an_event_simulation(pp, m, schedule, v):
    """Uneven ranks (last heavier, random jitter) and sends, many configurations at once: the
    compiled max-plus program gives each its event simulation's finish times."""
    from simulator.graph.pipeline import pipeline_finish

    rng = np.random.default_rng(pp * 100 + m)
    rows = 7
    tf = rng.uniform(0.5, 2.0, (pp, rows))
    tf[-1] *= 2.0
    tb = tf * rng.uniform(1.8, 3.0, (pp, rows))
    send = rng.uniform(0, 0.2, rows)
    got = pipeline_finish(tf, tb, send, m, schedule, v)
    for j in range(rows):
        ref = _event_simulation(list(tf[:, j]), list(tb[:, j]), send[j], m, schedule, v)
        assert got[:, j] == pytest.approx(ref, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("pp, schedule, v", [(4, "1f1b", 1), (4, "interleaved", 2),
                                             (3, "interleaved", 4)])
def test_probed_rounds_follow_the_stated_dependencies(pp, schedule, v):
    """steady_rounds' claim, checked on the compiled DAG: every cross-rank dependency of a
    steady pair lies in the same round or the one before (round g = pair g + r on rank r)."""
    from simulator.graph.pipeline import _orders, _rank_tasks, steady_rounds

    m = 6 * pp
    orders, vv = _orders(pp, m, schedule, v)
    _, warm = steady_rounds(orders, pp, vv)
    tasks = _rank_tasks(pp, vv, orders, m + 1)
    round_of = {}
    for r, ts in enumerate(tasks):
        for pos in range(warm[r], len(ts) - 1, 2):
            j = (pos - warm[r]) // 2
            if ts[pos + 1][0] % 2 == 1 and ts[pos][0] % 2 == 0:  # a steady (F, B) pair
                round_of[ts[pos][0]] = round_of[ts[pos + 1][0]] = j - r
    checked = 0
    for ts in tasks:
        for key, dep, _ in ts:
            if key in round_of and dep in round_of:
                assert round_of[dep] in (round_of[key], round_of[key] - 1)
                checked += 1
    assert checked > 4 * pp


@pytest.mark.parametrize("schedule, v", [("1f1b", 1), ("interleaved", 2)])
def test_trace_tasks_obey_the_schedule(schedule, v):
    """The trace's tasks: each lasts its rank's share, follows the previous task on its rank,
    waits for its cross-rank dependency plus the send, and the last ends at the rank's finish."""
    tf, tb, send, m, pp = [1.0, 1.3, 0.8, 1.6], [2.0, 2.4, 1.9, 3.1], 0.07, 8, 4
    r = simulate_pipeline(tf, tb, send, m, schedule, v)
    assert len(r.tasks) == 2 * pp * m * v
    end = {(kind, k, mb): t1 for _, kind, k, mb, _, t1 in r.tasks}
    last_on = [0.0] * pp
    for rank, kind, k, mb, t0, t1 in sorted(r.tasks, key=lambda t: t[4]):
        assert t1 - t0 == pytest.approx((tf[rank] if kind == "F" else tb[rank]) / v)
        assert t0 >= last_on[rank] - 1e-12
        dep = ("F", k - 1, mb) if kind == "F" else ("B", k + 1, mb)
        if dep in end:
            assert t0 >= end[dep] + send - 1e-12
        last_on[rank] = t1
    assert last_on == pytest.approx(r.finish_s, rel=1e-12)
