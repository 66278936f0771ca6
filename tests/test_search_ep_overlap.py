"""EP comm overlap: nothing waits for a forward or recompute chain's all-to-alls, so they still
run on the ep stream when the next chain starts, and the backward's own all-to-alls queue
behind them (the graph's streams run in order across chains). The fast path follows that
stream exactly, with and without a pipeline and under every remat policy."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.predict import predict_job
from simulator.search import enumerate_candidates, make_space
from simulator.search.fast import step_times
from simulator.search.space import REMATS
from simulator.specs.job import make_job


@pytest.mark.parametrize("remat", REMATS)
def test_fast_path_follows_the_ep_stream_across_chains(remat):
    space = make_space("mixtral-8x7b", "h100-sxm", 32, seq_len=2048, global_batch=64,
                       tp_comm_overlap=True, ep_comm_overlap=True)
    cands = enumerate_candidates(space)
    pool = np.nonzero((cands.axis("expert") > 1) & (cands.remat == REMATS.index(remat)))[0]
    idx = np.random.default_rng(0).choice(pool, size=12, replace=False)
    sub = cands.take(idx)
    pp = sub.axis("pipeline")
    assert (pp == 1).any() and (pp > 1).any()  # with and without a pipeline, as said above
    fast = step_times(sub).step_s
    for i in range(len(sub)):
        pred = predict_job(make_job(space.model, sub.sharding(i), space.hardware, space.chips))
        assert fast[i] == pytest.approx(pred.step_time_s, rel=1e-9), sub.row(i)
