"""Pipeline schedules: the bubble comes out of the schedule. One engine, for one job (predict)
and for columns of configurations (the search).

Each pipeline rank runs its forward (F) and backward (B) micro-batch tasks in the schedule's
order; ``F(k, i)`` waits for ``F(k-1, i)`` plus a send, ``B(k, i)`` for ``B(k+1, i)`` plus a send
and for ``F(k, i)``, where ``k`` is the virtual stage (``chunk * pp + rank``).
1F1B: Narayanan et al. 2021 (PipeDream-Flush); interleaved: Narayanan et al. SC'21 sec. 2.2,
bubble ``(pp-1)/v`` of the ideal time. The rank order follows Megatron-LM's schedules.

A task's finish is ``max(previous task on its rank, cross-rank dependency + send) + duration``
-- a max-plus recurrence on a DAG fixed by ``(pp, m, schedule, v)`` -- so the DAG is compiled
once (tasks grouped into levels of mutually independent tasks) and evaluated for every
configuration at once (:func:`pipeline_finish`); :func:`simulate_pipeline` runs it on one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

Task = tuple[str, int, int]  # (F|B, chunk, microbatch)


def one_f_one_b_order(rank: int, pp: int, m: int) -> list[Task]:
    """Warm-up ``min(pp - rank - 1, m)`` forwards, then alternate 1F1B, then cool-down."""
    warm = min(pp - rank - 1, m)
    order: list[Task] = [("F", 0, i) for i in range(warm)]
    for i in range(m - warm):
        order += [("F", 0, warm + i), ("B", 0, i)]
    order += [("B", 0, i) for i in range(m - warm, m)]
    return order


def interleaved_order(rank: int, pp: int, m: int, v: int) -> list[Task]:
    """Megatron interleaved 1F1B: warm-up ``2(pp - rank - 1) + (v - 1) pp`` forward chunks.

    The k-th forward on a rank is chunk ``(k // pp) % v`` of micro-batch
    ``(k // (pp v)) pp + k % pp``; backwards walk the chunks in reverse. Needs ``m % pp == 0``.
    """
    total = m * v
    warm = min(2 * (pp - rank - 1) + (v - 1) * pp, total)

    def task(kind: str, k: int) -> Task:
        chunk = (k // pp) % v
        mb = (k // (pp * v)) * pp + k % pp
        return (kind, chunk if kind == "F" else v - 1 - chunk, mb)

    order = [task("F", k) for k in range(warm)]
    for j in range(total - warm):
        order += [task("F", warm + j), task("B", j)]
    order += [task("B", j) for j in range(total - warm, total)]
    return order


@dataclass(frozen=True)
class PipelineResult:
    span_s: float
    finish_s: list[float]  # per rank: end of its last task
    busy_s: list[float]  # per rank
    bubble_s: float  # span minus the busiest rank's work
    tasks: list[tuple[int, str, int, int, float, float]] = ()  # (rank, F|B, stage, mb, t0, t1)

    @property
    def critical_rank(self) -> int:
        return max(range(len(self.busy_s)), key=self.busy_s.__getitem__)


#: Beyond this many micro-batches the schedule is in its steady state: simulate two shorter runs
#: and extend linearly (exact once every rank repeats a fixed F/B pattern).
SIMULATED_MICROBATCHES = 64


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
    keys: np.ndarray | None = None  # keep=True: each task's key (see _rank_tasks), level order

    @property
    def n_tasks(self) -> int:
        return len(self.ids)


def _orders(pp: int, m: int, schedule: str, v: int):
    if schedule == "interleaved" and v > 1:
        return [interleaved_order(r, pp, m, v) for r in range(pp)], v
    return [one_f_one_b_order(r, pp, m) for r in range(pp)], 1


@lru_cache(maxsize=1024)
def compile_schedule(pp: int, runs: tuple[int, ...], schedule: str, v: int,
                     keep: bool = False) -> Program:
    """Tasks, dependencies and levels of the schedule for each micro-batch count in ``runs``,
    in one program: a run shares every task of the last run that sits at the same place in its
    rank's order and depends only on shared tasks (the warm-up and steady phase of a shorter
    run are the longer run's), so only its own tail is added. A task's level is one more than
    the higher of its previous task's and its cross-rank dependency's. ``keep``: every task
    keeps its own row of ``done`` (for a trace), and the program its tasks' keys."""
    rows: list[tuple[int, int, int, int, int]] = []  # (prev, cross, duration row, level, key)
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
    return _allocate(rows, last, len(runs), pp, keep)


def _allocate(rows, last: list[int], runs: int, pp: int, keep: bool = False) -> Program:
    """Give each task a row of ``done`` that is reused once its last reader has run (a task is
    read by its rank's next task and by its cross-rank dependant), so ``done`` holds only the
    tasks alive at once; the runs' final tasks (with ``keep``, all tasks) stay to the end."""
    t = np.array(rows, dtype=np.int64).reshape(-1, 5)
    prev, cross, dur, level, key = t.T
    n = len(t)
    last_use = np.zeros(n, dtype=np.int64)
    for src in (prev, cross):
        ok = src >= 0
        np.maximum.at(last_use, src[ok], level[ok])
    last_use[last] = 1 << 40
    if keep:
        last_use[:] = 1 << 40
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
                   slot_arr[last].reshape(runs, pp), key[by_level] if keep else None)


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
                rows.append((prev, cross, dur, level, key))
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


def _run(prog: Program, durations: np.ndarray, send: np.ndarray, full: bool = False
         ) -> np.ndarray:
    """``finish(task) = max(done[prev], done[cross] + send) + duration``, level by level;
    the runs' final tasks (``full``: every row of ``done``)."""
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
    return done if full else done[prog.last]


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


def simulate_pipeline(tf: list[float], tb: list[float], send_s: float, m: int,
                      schedule: str = "1f1b", v: int = 1) -> PipelineResult:
    """The schedule for one job: ``tf[r]``, ``tb[r]`` are a rank's forward/backward time per
    micro-batch (all its chunks together); ``send_s`` is one activation send between ranks.
    Finish times as :func:`pipeline_finish` (extended linearly past
    :data:`SIMULATED_MICROBATCHES`); the trace's tasks are those of the run it simulated."""
    pp = len(tf)
    busy = [m * (tf[r] + tb[r]) for r in range(pp)]
    if pp == 1:
        return PipelineResult(busy[0], list(busy), busy, 0.0)
    finish = pipeline_finish(np.array(tf, dtype=float)[:, None], np.array(tb, dtype=float)[:, None],
                             np.array([send_s], dtype=float), m, schedule, v)[:, 0].tolist()
    span = max(finish)
    m1 = max(pp, (SIMULATED_MICROBATCHES // pp) * pp)
    tasks = _tasks(tf, tb, send_s, m1 if m > m1 + pp else m, schedule, v)
    return PipelineResult(span, finish, busy, span - max(busy), tasks)


def _tasks(tf, tb, send_s: float, m: int, schedule: str, v: int):
    """Every task of a run of ``m`` micro-batches as (rank, F|B, stage, mb, t0, t1)."""
    pp = len(tf)
    prog = compile_schedule(pp, (m,), schedule, v, keep=True)
    vv = v if schedule == "interleaved" and v > 1 else 1
    dur = np.empty((2 * pp, 1))
    dur[0::2, 0] = np.asarray(tf, dtype=float) / vv
    dur[1::2, 0] = np.asarray(tb, dtype=float) / vv
    done = _run(prog, dur, np.array([send_s], dtype=float), full=True)
    span = max(m, 1) + 1
    out = []
    for row, key in zip(prog.ids.tolist(), prog.keys.tolist()):
        bwd, k_mb = key % 2, key // 2
        k, mb = divmod(k_mb, span)
        rank = k % pp
        t1 = float(done[row, 0])
        out.append((rank, "B" if bwd else "F", k, mb, t1 - float(dur[2 * rank + bwd, 0]), t1))
    return sorted(out, key=lambda t: (t[4], t[0]))
