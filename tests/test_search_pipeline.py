"""The fast path's pipeline replay and template columns against the graph path's own code."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.graph.pipeline import SIMULATED_MICROBATCHES, simulate_pipeline
from simulator.search.columns import column
from simulator.search.pipeline import compile_schedule, pipeline_finish


@pytest.mark.parametrize("pp, m, schedule, v", [
    (2, 1, "1f1b", 1), (3, 7, "1f1b", 1), (4, 4, "1f1b", 1), (8, 33, "1f1b", 1),
    (4, 200, "1f1b", 1), (2, 8, "interleaved", 2), (4, 12, "interleaved", 3),
    (4, 100, "interleaved", 2), (3, 9, "interleaved", 4)])
def test_replay_matches_simulate_pipeline_rank_by_rank(pp, m, schedule, v):
    """Uneven ranks (first and last heavier, random jitter) and sends: the same finish times,
    including the linear extension past SIMULATED_MICROBATCHES."""
    rng = np.random.default_rng(pp * 100 + m)
    rows = 7
    tf = rng.uniform(0.5, 2.0, (pp, rows))
    tf[-1] *= 2.0
    tb = tf * rng.uniform(1.8, 3.0, (pp, rows))
    send = rng.uniform(0, 0.2, rows)
    got = pipeline_finish(tf, tb, send, m, schedule, v)
    for j in range(rows):
        ref = simulate_pipeline(list(tf[:, j]), list(tb[:, j]), send[j], m, schedule, v)
        assert got[:, j] == pytest.approx(ref.finish_s, rel=1e-12, abs=1e-12)


def test_two_runs_share_their_common_prefix():
    pp, m1 = 8, SIMULATED_MICROBATCHES
    both = compile_schedule(pp, (m1, m1 + pp), "1f1b", 1)
    one = compile_schedule(pp, (m1 + pp,), "1f1b", 1)
    assert one.n_tasks == 2 * pp * (m1 + pp)
    # the shorter run adds only its cool-down: at most pp - 1 backwards per rank
    assert both.n_tasks - one.n_tasks <= pp * (pp - 1)


def test_a_column_answers_a_branch_only_when_every_row_agrees():
    t = column([2, 4, 8])
    assert bool(t > 1) and not bool(t > 8)
    with pytest.raises(ValueError, match="structure_key"):
        bool(t > 2)
