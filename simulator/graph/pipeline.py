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
from functools import cached_property, lru_cache

import numpy as np

from simulator.cost.formulas import warmup_forwards

Task = tuple[str, int, int]  # (F|B, chunk, microbatch)


def one_f_one_b_order(rank: int, pp: int, m: int) -> list[Task]:
    """Warm-up forwards (:func:`~simulator.cost.formulas.warmup_forwards`: ``min(pp - rank - 1,
    m)``), then alternate 1F1B, then cool-down."""
    warm = int(warmup_forwards(rank, pp, m, 1))
    order: list[Task] = [("F", 0, i) for i in range(warm)]
    for i in range(m - warm):
        order += [("F", 0, warm + i), ("B", 0, i)]
    order += [("B", 0, i) for i in range(m - warm, m)]
    return order


def interleaved_order(rank: int, pp: int, m: int, v: int) -> list[Task]:
    """Megatron interleaved 1F1B: warm-up forward chunks
    (:func:`~simulator.cost.formulas.warmup_forwards`: ``2(pp - rank - 1) + (v - 1) pp``).

    The k-th forward on a rank is chunk ``(k // pp) % v`` of micro-batch
    ``(k // (pp v)) pp + k % pp``; backwards walk the chunks in reverse. Needs ``m % pp == 0``.
    """
    total = m * v
    warm = int(warmup_forwards(rank, pp, m, v))

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
    """A job's pipeline schedule; ``tasks`` (for a trace) are replayed from ``shown`` -- the
    arguments of :func:`_tasks` -- when first asked for."""

    span_s: float
    finish_s: list[float]  # per rank: end of its last task
    busy_s: list[float]  # per rank
    bubble_s: float  # span minus the busiest rank's work
    shown: tuple | None = None  # (tf, tb, send_s, micro-batches shown, schedule, v)

    @cached_property
    def tasks(self) -> list[tuple[int, str, int, int, float, float]]:
        """(rank, F|B, stage, mb, t0, t1) of every task of the run shown."""
        return _tasks(*self.shown) if self.shown else []

    @property
    def critical_rank(self) -> int:
        return max(range(len(self.busy_s)), key=self.busy_s.__getitem__)


@dataclass(frozen=True)
class Program:
    """A compiled schedule on ``slots`` rows of ``done`` plus two: row ``slots`` reads 0 (no
    previous task on the rank), row ``slots + 1`` reads -inf (no cross-rank dependency).
    Tasks in level order: their rows, their previous task's row on the same rank, their
    cross-rank dependency's row, and their duration row (``2 * rank + is_backward``); ``levels``
    slices out each level of mutually independent tasks. ``last[r]`` holds rank ``r``'s last
    task; ``probe`` (``(2, 2 pp)``, or ``(0, 2 pp)`` when the run is too short) the two steady
    rounds :func:`steady_rounds` compares."""

    slots: int
    ids: np.ndarray
    prev: np.ndarray
    cross: np.ndarray
    dur: np.ndarray
    levels: tuple[tuple[int, int], ...]  # [start, end) into the four arrays above
    last: np.ndarray
    probe: np.ndarray
    period: int  # L: rounds between two rounds with the same dependency pattern
    keys: np.ndarray | None = None  # keep=True: each task's key (see _rank_tasks), level order

    @property
    def n_tasks(self) -> int:
        return len(self.ids)


def _orders(pp: int, m: int, schedule: str, v: int):
    if schedule == "interleaved" and v > 1:
        return [interleaved_order(r, pp, m, v) for r in range(pp)], v
    return [one_f_one_b_order(r, pp, m) for r in range(pp)], 1


def steady_rounds(orders, pp: int, v: int) -> tuple[int, list[int]]:
    """The steady phase in rounds: ``(period L, warm-up per rank)``.

    After its ``w_r`` warm-up forwards, rank ``r`` runs pairs ``(F, B)``; pair ``j`` is at
    positions ``w_r + 2j``, ``w_r + 2j + 1`` of its order. Round ``g`` is pair ``g + r`` of every
    rank ``r``. In both schedules every cross-rank dependency of round ``g`` lies in round ``g``
    or ``g - 1`` (1F1B: ``F`` of pair ``j`` on rank ``r - 1``'s pair ``j - 1``, ``B`` on rank
    ``r + 1``'s pair ``j``; interleaved: ``F`` on rank ``r - 1``'s pair ``j - 2`` or, from rank 0,
    rank ``pp - 1``'s pair ``j + pp - 2``; ``B`` on rank ``r + 1``'s pair ``j`` or, from the last
    rank, rank 0's pair ``j - pp``), and which tasks have one repeats every ``L`` rounds
    (1F1B: 1; interleaved: ``pp v``, one cycle through the chunks). So round ``g`` is a max-plus
    map of round ``g - 1`` that depends only on ``g mod L``, and max-plus maps commute with
    adding a constant: once round ``g + L`` equals round ``g`` plus ``c`` in every task, every
    later round repeats with that shift.
    """
    warm = [[kind for kind, _, _ in order].index("B") - 1 if order else 0 for order in orders]
    return (pp * v if v > 1 else 1), warm


def last_full_round(orders, pp: int, v: int) -> int:
    """The last round every rank has as a steady pair: ``min_r(pairs_r - 1 - r)``, rank ``r``
    running ``w_r`` warm-up forwards, ``pairs_r`` pairs and ``w_r`` cool-down backwards."""
    _, warm = steady_rounds(orders, pp, v)
    return min(len(o) // 2 - w - 1 - r for r, (o, w) in enumerate(zip(orders, warm)))


@lru_cache(maxsize=1024)
def compile_schedule(pp: int, m: int, schedule: str, v: int, keep: bool = False) -> Program:
    """Tasks, dependencies and levels of the schedule for ``m`` micro-batches. A task's level
    is one more than the higher of its previous task's and its cross-rank dependency's.
    ``keep``: every task keeps its own row of ``done`` (for a trace), and the program its
    tasks' keys. The last full round and the one ``L`` rounds before it are probed."""
    orders, vv = _orders(pp, m, schedule, v)
    rows: list[tuple[int, int, int, int, int]] = []  # (prev, cross, duration row, level, key)
    placed = _place_run(_rank_tasks(pp, vv, orders, m + 1), rows)
    period, warm = steady_rounds(orders, pp, vv)
    g = last_full_round(orders, pp, vv)
    probe = [[placed[r][warm[r] + 2 * (gg + r) + b] for r in range(pp) for b in (0, 1)]
             for gg in (g - period, g)] if g - period >= 0 else []
    return _allocate(rows, [placed[r][-1] for r in range(pp)], probe, period, keep)


def _allocate(rows, last: list[int], probe: list[list[int]], period: int, keep: bool) -> Program:
    """Give each task a row of ``done`` that is reused once its last reader has run (a task is
    read by its rank's next task and by its cross-rank dependant), so ``done`` holds only the
    tasks alive at once; the final and probed tasks (with ``keep``, all tasks) stay to the end."""
    t = np.array(rows, dtype=np.int64).reshape(-1, 5)
    prev, cross, dur, level, key = t.T
    n = len(t)
    pp = len(last)
    probe_arr = np.array(probe, dtype=np.int64).reshape(-1, 2 * pp)
    last_use = np.zeros(n, dtype=np.int64)
    for src in (prev, cross):
        ok = src >= 0
        np.maximum.at(last_use, src[ok], level[ok])
    last_use[last] = 1 << 40
    last_use[probe_arr.ravel()] = 1 << 40
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
                   slot_arr[last], slot_arr[probe_arr], period,
                   key[by_level] if keep else None)


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


def _place_run(tasks, rows) -> list[list[int]]:
    """Add the run's tasks to ``rows`` in an order that respects every dependency; returns each
    rank's task rows. -1 / -2 stand for "no previous task" / "no cross-rank dependency"."""
    pp = len(tasks)
    row_of: dict[int, int] = {}
    placed: list[list[int]] = [[] for _ in range(pp)]
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


def _run(prog: Program, durations: np.ndarray, send: np.ndarray) -> np.ndarray:
    """``finish(task) = max(done[prev], done[cross] + send) + duration``, level by level;
    returns ``done`` (rows of slots) for the last and probed tasks to be read from."""
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
    return done


def run_program(prog: Program, durations: np.ndarray, send: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per-rank finish times ``(pp, rows)`` and the probed rounds ``(2, 2 pp, rows)``;
    ``durations`` is ``(2 pp, rows)`` (F, B per rank, already divided by the virtual stages).
    Rows run in chunks sized so one numpy call covers a few thousand values while ``done``
    stays in cache."""
    rows = durations.shape[1]
    chunk = int(min(max(2**19 // (prog.slots + 2), 1024), 16384))  # done: about 4 MB
    finish = np.empty((len(prog.last), rows))
    probe = np.empty((*prog.probe.shape, rows))
    for lo in range(0, rows, chunk):
        hi = min(lo + chunk, rows)
        done = _run(prog, np.ascontiguousarray(durations[:, lo:hi]), send[lo:hi])
        finish[:, lo:hi] = done[prog.last]
        probe[..., lo:hi] = done[prog.probe]
    return finish, probe


#: A trace shows the tasks of a run of at most this many micro-batches.
TRACE_MICROBATCHES = 64
#: Rounds after the warm-up before the probed pair (the first round still carries the
#: warm-up's unevenness; on the search's GPT-3 table every row is periodic from the second).
SETTLE_ROUNDS = 2
#: Relative tolerance of the steady-state test (float rounding of the rounds' sums).
STEADY_RTOL = 1e-12


@lru_cache(maxsize=1024)
def base_microbatches(pp: int, schedule: str, v: int) -> int:
    """The shortest run simulated for a longer one: the first ``m`` (a multiple of ``pp`` for
    interleaved) whose last full round lies at least ``L +`` :data:`SETTLE_ROUNDS` rounds in."""
    step = pp if schedule == "interleaved" and v > 1 else 1
    m = step
    while True:
        orders, vv = _orders(pp, m, schedule, v)
        period, _ = steady_rounds(orders, pp, vv)
        if last_full_round(orders, pp, vv) >= period + SETTLE_ROUNDS:
            return m
        m += step


def pipeline_finish(tf: np.ndarray, tb: np.ndarray, send: np.ndarray, m, schedule: str,
                    v: int) -> np.ndarray:
    """``simulate_pipeline(...).finish_s`` per row: ``tf``, ``tb`` are ``(pp, rows)``, ``m`` the
    micro-batches (one, or one per row).

    A row with ``m`` above the base run ``m0`` (:func:`base_microbatches`) runs ``m0``; when its
    last full round repeats the round ``L`` before it shifted by one ``c`` in every task (the
    periodic regime: :func:`steady_rounds`), the rest repeats exactly and
    ``finish(m) = finish(m0) + (m - m0) v / L * c`` (``v = 1`` for 1F1B; ``m - m0`` is a multiple
    of ``pp`` for interleaved, which needs ``m % pp == 0``). Rows not periodic yet retry with a
    base four times as long, and are simulated in full once that reaches ``m``: every answer is
    the schedule's, to float rounding.
    """
    pp, rows = tf.shape
    vv = v if schedule == "interleaved" and v > 1 else 1
    dur = np.empty((2 * pp, rows))
    dur[0::2] = tf / vv
    dur[1::2] = tb / vv
    ms = np.broadcast_to(np.asarray(m, dtype=np.int64), (rows,))
    out = np.empty((pp, rows))
    todo = np.arange(rows)
    base = base_microbatches(pp, schedule, v)
    while len(todo):
        long = ms[todo] > base
        for mm in np.unique(ms[todo[~long]]):  # short enough: the whole schedule
            sel = todo[ms[todo] == mm]
            out[:, sel] = run_program(compile_schedule(pp, int(mm), schedule, v), dur[:, sel],
                                      send[sel])[0]
        todo = todo[long]
        if not len(todo):
            break
        prog = compile_schedule(pp, base, schedule, v)
        finish, probe = run_program(prog, dur[:, todo], send[todo])
        shift = probe[1] - probe[0]
        c = shift.max(axis=0)
        ok = c - shift.min(axis=0) <= STEADY_RTOL * np.abs(probe[1]).max(axis=0)
        k = (ms[todo[ok]] - base) * vv // prog.period
        out[:, todo[ok]] = finish[:, ok] + k * c[ok]
        todo = todo[~ok]
        base *= 4
    return out


def simulate_pipeline(tf: list[float], tb: list[float], send_s: float, m: int,
                      schedule: str = "1f1b", v: int = 1) -> PipelineResult:
    """The schedule for one job: ``tf[r]``, ``tb[r]`` are a rank's forward/backward time per
    micro-batch (all its chunks together); ``send_s`` is one activation send between ranks.
    Finish times as :func:`pipeline_finish`; the trace's tasks are those of a run of at most
    :data:`TRACE_MICROBATCHES` micro-batches (or the base run, if longer)."""
    pp = len(tf)
    busy = [m * (tf[r] + tb[r]) for r in range(pp)]
    if pp == 1:
        return PipelineResult(busy[0], list(busy), busy, 0.0)
    finish = pipeline_finish(np.array(tf, dtype=float)[:, None], np.array(tb, dtype=float)[:, None],
                             np.array([send_s], dtype=float), m, schedule, v)[:, 0].tolist()
    span = max(finish)
    shown = min(m, max(TRACE_MICROBATCHES, base_microbatches(pp, schedule, v)))
    return PipelineResult(span, finish, busy, span - max(busy),
                          (tuple(tf), tuple(tb), send_s, shown, schedule, v))


def _tasks(tf, tb, send_s: float, m: int, schedule: str, v: int):
    """Every task of a run of ``m`` micro-batches as (rank, F|B, stage, mb, t0, t1)."""
    pp = len(tf)
    prog = compile_schedule(pp, m, schedule, v, keep=True)
    vv = v if schedule == "interleaved" and v > 1 else 1
    dur = np.empty((2 * pp, 1))
    dur[0::2, 0] = np.asarray(tf, dtype=float) / vv
    dur[1::2, 0] = np.asarray(tb, dtype=float) / vv
    done = _run(prog, dur, np.array([send_s], dtype=float))
    span = max(m, 1) + 1
    out = []
    for row, key in zip(prog.ids.tolist(), prog.keys.tolist()):
        bwd, k_mb = key % 2, key // 2
        k, mb = divmod(k_mb, span)
        rank = k % pp
        t1 = float(done[row, 0])
        out.append((rank, "B" if bwd else "F", k, mb, t1 - float(dur[2 * rank + bwd, 0]), t1))
    return sorted(out, key=lambda t: (t[4], t[0]))
