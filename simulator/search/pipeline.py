"""The pipeline schedule simulation of :mod:`simulator.graph.pipeline`, on columns of configurations.

The schedule is a fixed DAG for given ``(pp, m, schedule, v)``: each rank runs its tasks in the
order ``one_f_one_b_order`` / ``interleaved_order`` give, ``F(k, i)`` waits for ``F(k-1, i)``
plus a send, ``B(k, i)`` for ``B(k+1, i)`` plus a send. A task's finish is
``max(previous task on its rank, cross-rank dependency + send) + duration`` -- a max-plus
recurrence, so the DAG is compiled once (tasks grouped into levels of mutually independent
tasks) and evaluated for every configuration at once. Long runs are extended linearly from two
shorter runs exactly as ``simulate_pipeline`` does, so the result is the graph path's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from simulator.graph.pipeline import SIMULATED_MICROBATCHES, interleaved_order, one_f_one_b_order


@dataclass(frozen=True)
class Program:
    """A compiled schedule on ``slots`` rows of ``done`` plus two: row ``slots`` reads 0 (no
    previous task on the rank), row ``slots + 1`` reads -inf (no cross-rank dependency).
    Tasks in level order: their rows, their previous task's row on the same rank, their
    cross-rank dependency's row, and their duration row (``2 * rank + is_backward``); ``levels``
    slices out each level of mutually independent tasks. ``last[i, r]`` holds rank ``r``'s last
    task of run ``i``."""

    slots: int
    ids: np.ndarray
    prev: np.ndarray
    cross: np.ndarray
    dur: np.ndarray
    levels: tuple[tuple[int, int], ...]  # [start, end) into the four arrays above
    last: np.ndarray

    @property
    def n_tasks(self) -> int:
        return len(self.ids)


def _orders(pp: int, m: int, schedule: str, v: int):
    if schedule == "interleaved" and v > 1:
        return [interleaved_order(r, pp, m, v) for r in range(pp)], v
    return [one_f_one_b_order(r, pp, m) for r in range(pp)], 1


@lru_cache(maxsize=1024)
def compile_schedule(pp: int, runs: tuple[int, ...], schedule: str, v: int) -> Program:
    """Tasks, dependencies and levels of the schedule for each micro-batch count in ``runs``,
    in one program: a run shares every task of the last run that sits at the same place in its
    rank's order and depends only on shared tasks (the warm-up and steady phase of a shorter
    run are the longer run's), so only its own tail is added. A task's level is one more than
    the higher of its previous task's and its cross-rank dependency's."""
    rows: list[tuple[int, int, int, int]] = []  # (prev, cross, duration row, level)
    lasts = []
    base = None
    for m in (runs[-1], *runs[:-1]):
        orders, vv = _orders(pp, m, schedule, v)
        tasks = _rank_tasks(pp, vv, orders, max(runs) + 1)
        placed = _place_run(tasks, base, rows)
        if base is None:
            index = {t[0]: row for ts, rs in zip(tasks, placed) for t, row in zip(ts, rs)}
            base = (tasks, placed, index)
        lasts.append([placed[r][-1] for r in range(pp)])
    last = [t for run in lasts[1:] + lasts[:1] for t in run]
    return _allocate(rows, last, len(runs), pp)


def _allocate(rows, last: list[int], runs: int, pp: int) -> Program:
    """Give each task a row of ``done`` that is reused once its last reader has run (a task is
    read by its rank's next task and by its cross-rank dependant), so ``done`` holds only the
    tasks alive at once; the runs' final tasks stay to the end."""
    t = np.array(rows, dtype=np.int64).reshape(-1, 4)
    prev, cross, dur, level = t.T
    n = len(t)
    last_use = np.zeros(n, dtype=np.int64)
    for src in (prev, cross):
        ok = src >= 0
        np.maximum.at(last_use, src[ok], level[ok])
    last_use[last] = 1 << 40
    by_level = np.argsort(level, kind="stable")
    by_release = np.argsort(last_use, kind="stable").tolist()
    releases = last_use[by_release].tolist()
    slot = [0] * n
    free: list[int] = []
    slots, j = 0, 0
    levels_sorted = level[by_level].tolist()
    for i, lv in zip(by_level.tolist(), levels_sorted):
        while j < n and releases[j] < lv:  # every reader ran at an earlier level
            free.append(slot[by_release[j]])
            j += 1
        if free:
            slot[i] = free.pop()
        else:
            slot[i], slots = slots, slots + 1
    slot_arr = np.array(slot, dtype=np.int64)
    prev_slot = np.where(prev >= 0, slot_arr[np.maximum(prev, 0)], slots)
    cross_slot = np.where(cross >= 0, slot_arr[np.maximum(cross, 0)], slots + 1)
    bounds = np.searchsorted(level[by_level], np.arange(1, int(level.max(initial=0)) + 2))
    return Program(slots, slot_arr[by_level], prev_slot[by_level], cross_slot[by_level],
                   dur[by_level], tuple(zip(bounds[:-1].tolist(), bounds[1:].tolist())),
                   slot_arr[last].reshape(runs, pp))


def _rank_tasks(pp: int, v: int, orders, span: int) -> list[list[tuple[int, int, int]]]:
    """Per rank, its tasks in order as (key, cross-rank dependency's key or -1, duration row),
    keys ``(k * span + i) * 2 + is_backward`` for task ``F|B(k, i)``. ``F(k, i)`` depends on
    ``F(k-1, i)``, ``B(k, i)`` on ``B(k+1, i)`` (other virtual stages, so other ranks);
    ``B(k, i)``'s wait for ``F(k, i)`` is implied by the rank's own order."""
    last_stage = pp * v - 1
    out = []
    for r, order in enumerate(orders):
        tasks = []
        for kind, chunk, mb in order:
            k = chunk * pp + r
            if kind == "F":
                tasks.append((2 * (k * span + mb), 2 * ((k - 1) * span + mb) if k else -1, 2 * r))
            else:
                dep = 2 * ((k + 1) * span + mb) + 1 if k < last_stage else -1
                tasks.append((2 * (k * span + mb) + 1, dep, 2 * r + 1))
        out.append(tasks)
    return out


def _place_run(tasks, base, rows) -> list[list[int]]:
    """Add one run's tasks to ``rows`` (reusing the base run's where shared) in an order that
    respects every dependency; returns each rank's task rows. -1 / -2 stand for "no previous
    task" / "no cross-rank dependency"."""
    pp = len(tasks)
    row_of: dict[int, int] = {}
    placed: list[list[int]] = [[] for _ in range(pp)]
    shared = [base is not None] * pp
    pos = [0] * pp
    remaining = sum(len(t) for t in tasks)
    while remaining:
        before = remaining
        for r in range(pp):
            mine, p, done = tasks[r], pos[r], placed[r]
            while p < len(mine):
                key, dep, dur = mine[p]
                cross = -2 if dep < 0 else row_of.get(dep, -3)
                if cross == -3:
                    break
                if shared[r]:
                    b_tasks, b_placed, b_index = base
                    if (p < len(b_tasks[r]) and b_tasks[r][p][0] == key
                            and (dep < 0 or cross == b_index[dep])):
                        row_of[key] = b_placed[r][p]
                        done.append(row_of[key])
                        p += 1
                        continue
                    shared[r] = False
                prev = done[-1] if done else -1
                level = 1 + max(rows[prev][3] if prev >= 0 else 0,
                                rows[cross][3] if cross >= 0 else 0)
                row_of[key] = len(rows)
                rows.append((prev, cross, dur, level))
                done.append(row_of[key])
                p += 1
            remaining -= p - pos[r]
            pos[r] = p
        if remaining == before:
            raise RuntimeError("pipeline schedule deadlocked (schedule order bug)")
    return placed


def run_program(prog: Program, durations: np.ndarray, send: np.ndarray) -> np.ndarray:
    """Per-run, per-rank finish times ``(runs, pp, rows)``; ``durations`` is ``(2 pp, rows)``
    (F, B per rank, already divided by the virtual stages). Rows run in chunks sized so one
    numpy call covers a few thousand values while ``done`` stays in cache."""
    rows = durations.shape[1]
    chunk = int(min(max(2**19 // (prog.slots + 2), 1024), 16384))  # done: about 4 MB
    out = np.empty((*prog.last.shape, rows))
    for lo in range(0, rows, chunk):
        hi = min(lo + chunk, rows)
        out[..., lo:hi] = _run(prog, np.ascontiguousarray(durations[:, lo:hi]), send[lo:hi])
    return out


def _run(prog: Program, durations: np.ndarray, send: np.ndarray) -> np.ndarray:
    """``finish(task) = max(done[prev], done[cross] + send) + duration``, level by level."""
    done = np.empty((prog.slots + 2, durations.shape[1]))
    done[prog.slots] = 0.0
    done[prog.slots + 1] = -np.inf
    ids, prev, cross, dur = prog.ids, prog.prev, prog.cross, prog.dur
    for a, b in prog.levels:
        t = done[cross[a:b]]
        t += send
        np.maximum(t, done[prev[a:b]], out=t)
        t += durations[dur[a:b]]
        done[ids[a:b]] = t
    return done[prog.last]


def pipeline_finish(tf: np.ndarray, tb: np.ndarray, send: np.ndarray, m: int, schedule: str,
                    v: int) -> np.ndarray:
    """``simulate_pipeline(...).finish_s`` per row: ``tf``, ``tb`` are ``(pp, rows)``.

    For ``m > m1 + pp`` (``m1 = max(pp, (64 // pp) pp)``) runs ``m1`` and ``m1 + pp`` and
    extends: ``finish(m) = finish(m1) + (m - m1) (finish(m1 + pp) - finish(m1)) / pp``.
    """
    pp = tf.shape[0]
    vv = v if schedule == "interleaved" and v > 1 else 1
    dur = np.empty((2 * pp, tf.shape[1]))
    dur[0::2] = tf / vv
    dur[1::2] = tb / vv
    m1 = max(pp, (SIMULATED_MICROBATCHES // pp) * pp)
    if m > m1 + pp:
        a, b = run_program(compile_schedule(pp, (m1, m1 + pp), schedule, v), dur, send)
        return a + (m - m1) * (b - a) / pp
    return run_program(compile_schedule(pp, (m,), schedule, v), dur, send)[0]
