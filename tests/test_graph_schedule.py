"""simulator.graph.schedule: the one list scheduler gives the same times on floats, on numpy
columns and on max-plus unknowns; waits on the compute stream are charged to the collectives
that held it up."""

from __future__ import annotations

from collections import defaultdict

import networkx as nx
import numpy as np
import pytest

from simulator.cost.collectives import Collective
from simulator.graph.ops import COMPUTE, Op, OpKind
from simulator.graph.schedule import Clock, run, schedule, schedule_items

NEG = -np.inf


def _c(name, deps, stream=COMPUTE):
    return name, Op(name, OpKind.MATMUL, stream=stream), deps


def _x(name, deps, stream, axis="model", kind=Collective.ALL_GATHER):
    return name, Op(name, OpKind.COLLECTIVE, stream=stream, collective=kind, axis=axis), deps


#: A small step: two streams of collectives beside compute, a register input ``@x``.
ITEMS = [
    _c("a", ["@x"]),
    _x("ag", ["a"], "tp"),
    _c("b", ["a"]),
    _c("c", ["ag", "b"]),
    _x("rs", ["c"], "grad", "data", Collective.REDUCE_SCATTER),
    _x("ag2", ["a"], "tp"),  # queued behind ag on its stream
    _c("d", ["c"]),
    _c("e", ["rs", "ag2"]),
    _c("f", ["d"]),
]
STREAMS = (COMPUTE, "tp", "grad")
STATE = (*STREAMS, "@x")


def _float_run(durations: dict, state: dict) -> dict:
    """Float schedule of ITEMS from ``state`` (stream free times and ``@x``): end per node."""
    clock = Clock.scalar()
    for s in STREAMS:
        clock.free[s] = state[s]
    clock.end["@x"] = state["@x"]
    items = [(n, _with(op, durations[n]), p) for n, op, p in ITEMS]
    run(items, clock)
    return dict(clock.end)


def _with(op: Op, duration) -> Op:
    out = Op(op.name, op.kind, stream=op.stream, collective=op.collective, axis=op.axis)
    out.duration = duration
    return out


def _durations(rng, rows=None):
    shape = () if rows is None else (rows,)
    return {n: rng.uniform(0.1, 3.0, size=shape) if shape else float(rng.uniform(0.1, 3.0))
            for n, _, _ in ITEMS}


def test_floats_and_numpy_columns_agree():
    rng = np.random.default_rng(0)
    rows = 16
    dur = _durations(rng, rows)
    state = {s: rng.uniform(0.0, 2.0, size=rows) for s in STATE}
    clock = Clock.arrays(dict(zip(STREAMS, (state[s] for s in STREAMS))), {"@x": state["@x"]},
                         np.full(rows, NEG))
    run([(n, _with(op, dur[n]), p) for n, op, p in ITEMS], clock)
    for r in range(rows):
        ref = _float_run({n: float(v[r]) for n, v in dur.items()},
                         {s: float(v[r]) for s, v in state.items()})
        for n, _, _ in ITEMS:
            assert clock.end[n][r] == ref[n], (r, n)


def test_floats_and_max_plus_unknowns_agree():
    """Run once with every stream clock and ``@x`` unknown (max-plus basis vectors); evaluating
    each end ``max_j (v_j + x_j)`` at a concrete state equals the float run from that state."""
    rng = np.random.default_rng(1)
    dur = _durations(rng)
    S = len(STATE)
    basis = np.full((S, S), NEG)
    np.fill_diagonal(basis, 0.0)
    at = {v: basis[i] for i, v in enumerate(STATE)}
    clock = Clock.arrays({s: at[s] for s in STREAMS}, {"@x": at["@x"]}, np.full(S, NEG))
    run([(n, _with(op, dur[n]), p) for n, op, p in ITEMS], clock)
    forms = {n: clock.end[n] for n, _, _ in ITEMS}
    free = {s: clock.free[s] for s in STREAMS}
    for _ in range(20):
        x0 = rng.uniform(0.0, 5.0, size=S)
        ref = _float_run(dur, dict(zip(STATE, x0)))
        for n, v in forms.items():
            assert np.max(v + x0) == pytest.approx(ref[n], rel=1e-12, abs=0)
        # stream clocks after the run: the last end on each stream, or the start state
        for s in STREAMS:
            last = [ref[n] for n, op, _ in ITEMS if op.stream == s]
            assert np.max(free[s] + x0) == pytest.approx(max(last), rel=1e-12)
    # an end is -inf on an unknown it cannot wait for: the tp gather never waits on grad
    assert forms["ag"][STATE.index("grad")] == NEG
    assert all(v[STATE.index(COMPUTE)] > NEG for v in forms.values())


def test_a_float_run_from_zero_is_schedule_items():
    rng = np.random.default_rng(2)
    dur = _durations(rng)
    ref = _float_run(dur, {s: 0.0 for s in STATE})
    items = [(n, _with(op, dur[n]), [p for p in preds if p != "@x"]) for n, op, preds in ITEMS]
    sc = schedule_items(items)
    for n, _, _ in ITEMS:
        assert sc.end[n] == ref[n]
        assert sc.start[n] == pytest.approx(sc.end[n] - dur[n], abs=1e-12)
    assert sc.makespan == max(ref[n] for n, _, _ in ITEMS)


def _graph(spec) -> nx.DiGraph:
    """(name, stream, seconds, deps) rows -> a graph in insertion order."""
    g = nx.DiGraph()
    for name, stream, seconds, deps in spec:
        if stream == COMPUTE:
            op = Op(name, OpKind.MATMUL, duration=seconds)
        else:
            op = Op(name, OpKind.COLLECTIVE, stream=stream, collective=Collective.ALL_GATHER,
                    axis="model", duration=seconds)
        g.add_node(name, op=op)
        g.add_edges_from((d, name) for d in deps)
    return g


def test_a_compute_wait_is_charged_to_the_collective():
    g = _graph([("a", COMPUTE, 1.0, []),
                ("ag", "tp", 3.0, ["a"]),
                ("b", COMPUTE, 1.0, ["ag"])])
    sc = schedule(g)
    assert (sc.start["b"], sc.end["b"], sc.makespan) == (4.0, 5.0, 5.0)
    assert sc.waits["a"] == ()
    assert sc.waits["b"] == (("ag", 3.0),)
    assert "ag" not in sc.waits  # only compute-stream nodes wait
    assert sc.window(-1.0, 5.0) == {"compute": 2.0, "comm.all_gather.model": 3.0}
    assert sc.window(-1.0, 1.0) == {"compute": 1.0}


def test_a_wait_is_split_along_the_chain_that_held_it_up():
    """b waits (1, 6]: ag2 ran (3, 6] and is charged 3 s; it was queued behind ag on its stream,
    which ran (1, 3] and is charged the other 2 s. Part of the wait hidden under compute is not
    charged: c's wait is only what is left after d ran."""
    g = _graph([("a", COMPUTE, 1.0, []),
                ("ag", "tp", 2.0, ["a"]),
                ("ag2", "tp", 3.0, ["a"]),
                ("b", COMPUTE, 1.0, ["ag2"])])
    sc = schedule(g)
    assert sc.start["ag2"] == 3.0 and sc.start["b"] == 6.0
    assert sc.waits["b"] == (("ag2", 3.0), ("ag", 2.0))
    g2 = _graph([("a", COMPUTE, 1.0, []),
                 ("ag", "tp", 3.0, ["a"]),
                 ("d", COMPUTE, 2.0, ["a"]),  # overlaps (1, 3] of the gather
                 ("c", COMPUTE, 1.0, ["ag", "d"])])
    sc2 = schedule(g2)
    assert sc2.start["c"] == 4.0
    assert sc2.waits["c"] == (("ag", 1.0),)
    parts = sc2.window(-1.0, sc2.makespan)
    assert sum(parts.values()) == pytest.approx(sc2.makespan)  # the breakdown sums to the time
    assert parts == {"compute": 4.0, "comm.all_gather.model": 1.0}


def test_streams_run_in_program_order():
    """An op never overtakes an earlier op of its own stream, even when ready first."""
    g = _graph([("a", COMPUTE, 5.0, []),
                ("slow", "tp", 1.0, ["a"]),
                ("free", "tp", 1.0, [])])  # ready at 0, but queued behind "slow"
    sc = schedule(g)
    assert sc.start["free"] == 6.0


def test_clock_defaults():
    c = Clock.scalar()
    assert isinstance(c.free, defaultdict) and c.free["anything"] == 0.0
    assert c.mx(1.0, 2.0) == 2.0 and c.none == float("-inf")
