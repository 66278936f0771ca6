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


def test_memory_is_found_once_per_memory_key_and_equals_row_by_row():
    """Rows alike in mesh, micro-batch, remat, schedule and virtual stages (any placement)
    share one memory figure: computed once per key, it is the row-by-row figure exactly."""
    from simulator.search.fast import _memory_per_device, memory_key

    space = make_space("mixtral-8x7b", "h100-sxm", 64, seq_len=4096, global_batch=64)
    cands = enumerate_candidates(space)
    key = memory_key(cands)
    cols = np.stack([*cands.mesh.T, cands.micro_batch, cands.remat, cands.schedule,
                     cands.virtual], axis=1)
    want = np.unique(cols, axis=0, return_inverse=True)[1].ravel()
    pairs = np.unique(np.stack([key, want]), axis=1).shape[1]
    assert pairs == len(np.unique(key)) == len(np.unique(want)) < len(cands)  # rows share keys
    np.testing.assert_array_equal(memory_per_device(cands), _memory_per_device(cands))


def test_no_configuration_fits_is_a_clear_error():
    space = make_space("llama3-405b", "h100-sxm", 8, seq_len=4096, global_batch=8)
    with pytest.raises(MeshcastError) as e:
        rank_table(enumerate_candidates(space))
    msg = str(e.value)
    assert msg.startswith("chips: no configuration of llama3-405b on 8 h100-sxm chips fits")
    assert "GiB" in msg and "use more chips" in msg


def _replayed_peak(rank: int, pp: int, m: int, interleaved: bool, v: int) -> float:
    """Peak live forwards while the schedule's own task order runs, in units of the rank's
    chunks (the definition the closed form must match)."""
    from simulator.graph.pipeline import interleaved_order, one_f_one_b_order

    if pp == 1:
        return 1.0
    order = interleaved_order(rank, pp, m, v) if interleaved and v > 1 \
        else one_f_one_b_order(rank, pp, m)
    live = peak = 0
    for kind, _, _ in order:
        live += 1 if kind == "F" else -1
        peak = max(peak, live)
    return peak / (v if interleaved else 1)


def test_in_flight_closed_form_is_the_schedules_peak():
    from simulator.graph.memory import in_flight_microbatches

    for pp in (1, 2, 3, 4, 8):
        for v in (1, 2, 3):
            for m in (1, 2, 3, pp, 2 * pp, 5 * pp + 1, 40):
                for interleaved in (False, True):
                    if interleaved and v > 1 and m % pp:
                        continue  # the schedule needs m % pp == 0 (a Job rule)
                    for r in range(pp):
                        want = _replayed_peak(r, pp, m, interleaved, v)
                        assert in_flight_microbatches(r, pp, m, interleaved, v) == want
    # columns: one call, the same numbers
    pp, m, v = np.array([1, 2, 4, 4]), np.array([3, 8, 8, 16]), np.array([1, 1, 2, 3])
    inter = np.array([False, False, True, True])
    got = in_flight_microbatches(0, pp, m, inter, v)
    assert np.array_equal(got, [_replayed_peak(0, *map(int, x[:2]), bool(x[2]), int(x[3]))
                                for x in zip(pp, m, inter, v)])


@pytest.mark.parametrize("model", ["llama3-8b", "mixtral-8x7b", "deepseek-v3"])
def test_rank_memory_on_columns_equals_each_number(model):
    """The search's call (numpy columns of meshes, micro-batches, remat policies) and the graph
    path's (numbers) give the same bytes, term by term."""
    from dataclasses import astuple

    from simulator.graph.dims import Dims
    from simulator.graph.memory import rank_memory
    from simulator.specs.sharding import make_sharding
    from simulator.specs.zoo import load_model

    m = load_model(model)
    s = make_sharding(distributed_optimizer=True)
    mesh = {"data": np.array([1, 2, 4, 1]), "fsdp": np.array([1, 4, 1, 2]),
            "expert": np.array([1, 1, 2, 4]) if m.moe else np.ones(4, int),
            "model": np.array([1, 2, 4, 1]), "seq": np.array([1, 1, 2, 2]),
            "pipeline": np.array([1, 2, 1, 4])}
    from simulator.specs.sharding import REMAT_POLICIES

    names = ["none", "selective", "full", "full"]
    b, remat = np.array([1, 2, 1, 4]), np.array([REMAT_POLICIES.index(r) for r in names])
    kinds, flight = tuple(m.is_moe_layer(i) for i in range(4)), np.array([1.0, 2.0, 3.5, 1.0])
    cols = rank_memory(m, s, Dims.from_mesh(s, 4096, mesh, b), kinds, True, True, remat, flight,
                       1e11)
    for i in range(4):
        d = Dims.from_mesh(s, 4096, {a: int(x[i]) for a, x in mesh.items()}, int(b[i]))
        one = rank_memory(m, s, d, kinds, True, True, names[i], float(flight[i]), 1e11)
        assert [np.asarray(x)[i] if np.ndim(x) else x for x in astuple(cols)] \
            == [float(x) for x in astuple(one)]
