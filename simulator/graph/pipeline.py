"""Pipeline schedules as a small event simulation: the bubble comes out of the schedule.

Each pipeline rank runs its forward (F) and backward (B) micro-batch tasks in the schedule's
order; ``F(k, i)`` waits for ``F(k-1, i)`` plus a send, ``B(k, i)`` for ``B(k+1, i)`` plus a send
and for ``F(k, i)``, where ``k`` is the virtual stage (``chunk * pp + rank``).
1F1B: Narayanan et al. 2021 (PipeDream-Flush); interleaved: Narayanan et al. SC'21 sec. 2.2,
bubble ``(pp-1)/v`` of the ideal time. The rank order follows Megatron-LM's schedules.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def simulate_pipeline(tf: list[float], tb: list[float], send_s: float, m: int,
                      schedule: str = "1f1b", v: int = 1) -> PipelineResult:
    """Run the schedule: ``tf[r]``, ``tb[r]`` are a rank's forward/backward time per micro-batch
    (all its chunks together); ``send_s`` is one activation send between ranks.

    For ``m`` above :data:`SIMULATED_MICROBATCHES` (rounded to whole groups of ``pp``), runs
    ``m1`` and ``m2 = m1 + pp`` micro-batches and extends each rank's finish time linearly:
    ``finish(m) = finish(m1) + (m - m1) * (finish(m2) - finish(m1)) / pp``. The trace then holds
    the ``m1`` run's tasks.
    """
    pp = len(tf)
    m1 = max(pp, (SIMULATED_MICROBATCHES // pp) * pp)
    if pp > 1 and m > m1 + pp:
        a = _simulate(tf, tb, send_s, m1, schedule, v)
        b = _simulate(tf, tb, send_s, m1 + pp, schedule, v)
        finish = [fa + (m - m1) * (fb - fa) / pp for fa, fb in zip(a.finish_s, b.finish_s)]
        busy = [m * (tf[r] + tb[r]) for r in range(pp)]
        span = max(finish)
        return PipelineResult(span, finish, busy, span - max(busy), a.tasks)
    return _simulate(tf, tb, send_s, m, schedule, v)


def _simulate(tf: list[float], tb: list[float], send_s: float, m: int, schedule: str,
              v: int) -> PipelineResult:
    pp = len(tf)
    if pp == 1:
        busy = m * (tf[0] + tb[0])
        return PipelineResult(busy, [busy], [busy], 0.0)
    if schedule == "interleaved" and v > 1:
        orders = [interleaved_order(r, pp, m, v) for r in range(pp)]
    else:
        orders, v = [one_f_one_b_order(r, pp, m) for r in range(pp)], 1
    nv = pp * v
    done: dict[tuple[str, int, int], float] = {}
    tasks: list[tuple[int, str, int, int, float, float]] = []
    free = [0.0] * pp
    pos = [0] * pp
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for r in range(pp):
            while pos[r] < len(orders[r]):
                kind, chunk, mb = orders[r][pos[r]]
                k = chunk * pp + r
                deps = _deps(kind, k, mb, nv)
                if any(dep not in done for dep in deps):
                    break
                ready = max((done[dep] + (send_s if dep[1] != k else 0.0) for dep in deps), default=0.0)
                dur = (tf[r] if kind == "F" else tb[r]) / v
                t0 = max(ready, free[r])
                done[(kind, k, mb)] = free[r] = t0 + dur
                tasks.append((r, kind, k, mb, t0, t0 + dur))
                pos[r] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise RuntimeError("pipeline schedule deadlocked (schedule order bug)")
    span = max(done.values())
    busy = [m * (tf[r] + tb[r]) for r in range(pp)]
    return PipelineResult(span, list(free), busy, span - max(busy), tasks)


def _deps(kind: str, k: int, mb: int, nv: int) -> list[tuple[str, int, int]]:
    if kind == "F":
        return [("F", k - 1, mb)] if k > 0 else []
    deps = [("F", k, mb)]
    if k < nv - 1:
        deps.append(("B", k + 1, mb))
    return deps
