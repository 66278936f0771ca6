"""Memory pruning (issue 4): the fast path drops exactly the configurations that predict says
do not fit, and a job that fits nowhere is an error naming chips, the need and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from meshcast.errors import MeshcastError
from simulator.predict import predict_job
from simulator.search import enumerate_candidates, make_space, rank_table
from simulator.search.fast import memory_per_device
from simulator.specs.job import make_job


@pytest.mark.parametrize("model, hardware, chips", [
    ("llama3-8b", "h100-sxm", 8), ("mixtral-8x7b", "h100-sxm", 16), ("moe-6.4b", "tpu-v5p", 64)])
def test_pruned_rows_are_exactly_those_predict_says_do_not_fit(model, hardware, chips):
    space = make_space(model, hardware, chips, seq_len=4096, global_batch=64)
    cands = enumerate_candidates(space)
    mem = memory_per_device(cands)
    cap = space.hardware.chip.hbm_capacity_bytes.value
    fits = mem <= cap
    assert fits.any() and (~fits).any()  # the sample below has both kinds
    rng = np.random.default_rng(7)
    idx = np.concatenate([rng.choice(np.nonzero(fits)[0], 8, replace=False),
                          rng.choice(np.nonzero(~fits)[0], 8, replace=False)])
    for i in idx:
        pred = predict_job(make_job(space.model, cands.sharding(i), space.hardware, chips))
        assert pred.memory.fits == bool(fits[i]), cands.row(i)
        assert pred.memory.per_device_bytes == pytest.approx(mem[i], rel=1e-12)
    res = rank_table(cands, top=1, finalists=1)
    assert res.counts["out_of_memory"] == int((~fits).sum())
    assert res.counts["evaluated"] == int(fits.sum()) == len(res.table)


def test_no_configuration_fits_is_a_clear_error():
    space = make_space("llama3-405b", "h100-sxm", 8, seq_len=4096, global_batch=8)
    with pytest.raises(MeshcastError) as e:
        rank_table(enumerate_candidates(space))
    msg = str(e.value)
    assert msg.startswith("chips: no configuration of llama3-405b on 8 h100-sxm chips fits")
    assert "GiB" in msg and "use more chips" in msg
