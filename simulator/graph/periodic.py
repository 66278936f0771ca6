"""The float schedule of one rank's micro-batch with its periodic layers skipped: what
:func:`simulator.predict.predict_job` reads off a stage (``t_fwd``, ``t_mb``, the end of the
last compute op, the makespan and the breakdown windows) without scheduling every node.

A rank's steps are runs of a repeated pattern of blocks (:func:`runs`: the layers). Within a run
the one list scheduler (:func:`simulator.graph.schedule.run`, with its attribution) schedules
repeat after repeat until repeat ``j >= 2`` shows that every later one is repeat ``j`` with each
op moved on by its own rate per repeat. Write ``E_r(k)`` for the end of op ``k`` (its position
in the pattern) in repeat ``r``, and an op's *inputs* for its predecessors and the previous op
on its stream.

1. **Rates.** Every op ends ``d_k = E_j(k) - E_{j-1}(k) = E_{j-1}(k) - E_{j-2}(k)`` later per
   repeat.
2. **No faster input.** Every input ``i`` of an op ``k`` of repeat ``j`` is an op of repeat
   ``j`` or ``j-1`` with ``d_i <= d_k``.
3. **Charges.** Every compute op of the pattern has one rate ``d_c``; the wait before each is
   charged as in repeat ``j-1``, and its chain
   (:meth:`simulator.graph.schedule._Attribution._charge`) visits only ops of repeats ``j-1``
   and ``j`` of rate ``d_c``.

Then ``E_{j+m}(k) = E_j(k) + m d_k`` for every ``m >= 0``. Proof, one repeat (then induction
over repeats and, within one, over the ops in order): an op starts at the latest of its inputs'
ends, each of which moves on by ``d_i <= d_k`` (2), so it starts at most ``d_k`` later; and the
input ``i*`` that sets its start in repeat ``j`` ended at most ``E_j(k) - d_k`` minus the
duration in repeat ``j-1`` -- that is ``d_i* >= d_k``, so ``d_i* = d_k``, and that input alone
moves the op on by ``d_k``. (This is :func:`simulator.search.maxplus.apply`'s periodic regime:
a gradient stream that falls ever further behind moves at its own, faster rate.) A chain's
course depends only on the starts of the ops it visits, their blockers (whichever input set
the start: the same input every repeat, by the argument above) and the wait's bounds, all moving
at ``d_c`` (3): every later repeat's charges are repeat ``j``'s.

The ``K = n - 1 - j`` repeats left are not scheduled: the last two become copies of repeats
``j-1`` and ``j``, each op moved on by ``K d_k`` (later steps wait on their nodes), the ``K - 2``
between count ``K - 2`` times repeat ``j``'s charges, and a chain that walks into one of them
(a backlogged stream, behind the optimizer's wait) finds its ops on demand: op ``k`` of repeat
``j + m`` is repeat ``j``'s moved on by ``m d_k`` (:class:`_Lazy`). Float rounding aside the
result is the full schedule's (:func:`full_summary`); tests compare the two on every zoo model.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from simulator.graph.ops import COMPUTE
from simulator.graph.plan import MICROBATCH, StagePlan, set_registers, step_items
from simulator.graph.schedule import Clock, _Attribution, run, schedule_items, wait_category

#: Shifts and charges compared up to float rounding: relative to the clocks' size (the
#: search's max-plus periodic test too, :func:`simulator.search.maxplus.apply`).
SAME = 1e-12
#: Pattern lengths tried by :func:`runs` (alternating dense/MoE layers repeat as a pair).
MAX_PATTERN = 4


def runs(seq: list) -> list[tuple[tuple, int]]:
    """``seq`` as (pattern, repeats) runs, greedily taking at each point the pattern of up to
    :data:`MAX_PATTERN` items that covers the most items by repeating."""
    out, i = [], 0
    while i < len(seq):
        best = (1, 1)
        for p in range(1, MAX_PATTERN + 1):
            pat = seq[i:i + p]
            if len(pat) < p:
                break
            n = 1
            while seq[i + n * p:i + (n + 1) * p] == pat:
                n += 1
            if n * p > best[0] * best[1] and n > 1:
                best = (p, n)
        p, n = best
        out.append((tuple(seq[i:i + p]), n))
        i += p * n
    return out


@dataclass
class StageSchedule:
    """What predict reads off one rank's scheduled micro-batch: ``t_fwd`` / ``t_mb`` (end of the
    last forward / micro-batch compute op), ``last_compute`` (end of the last compute op),
    ``makespan``, ``final_category`` (the category of the node that ends last), the windows
    ``before`` = ``(-inf, t_mb]`` and ``after`` = ``(t_mb, last_compute]`` (compute seconds by
    category: busy time and charged waits), and ``skipped``, the repeats not scheduled."""

    t_fwd: float
    t_mb: float
    last_compute: float
    makespan: float
    final_category: str
    before: dict[str, float]
    after: dict[str, float]
    skipped: int = 0


@dataclass
class _Skipped:
    """Repeats not scheduled: ``count`` times ``charges`` (category -> seconds); ``mb``: they
    hold micro-batch compute ops."""

    charges: dict[str, float]
    count: int
    mb: bool


def schedule_stage(plan: StagePlan) -> StageSchedule:
    """The stage's schedule summary, periodic repeats skipped (see the module docstring)."""
    return _Runner(plan).summary()


def full_summary(plan: StagePlan) -> StageSchedule:
    """The same summary from the full schedule of every node (the reference)."""
    sc = schedule_items(plan.unrolled())
    order = list(sc.waits)
    return _summarise(order, sc.ops, sc.end, sc.waits, 0)


def _charges(names, ops, waits, out=None) -> dict[str, float]:
    """Compute seconds by category of compute nodes ``names``: busy time and charged waits
    (added to ``out`` when given)."""
    out = defaultdict(float) if out is None else out
    for name in names:
        op = ops[name]
        out[op.category] += op.duration
        for who, seconds in waits[name]:
            out[wait_category(ops, who)] += seconds
    return out


def _summarise(order, ops, end, waits, skipped: int) -> StageSchedule:
    """The summary from ``order`` (compute nodes in program order, and :class:`_Skipped`
    entries): the windows split after the last micro-batch compute op."""
    def is_mb(e):
        return e.mb if isinstance(e, _Skipped) else ops[e].phase in MICROBATCH

    nodes = [e for e in order if not isinstance(e, _Skipped)]
    split = max((i for i, e in enumerate(order) if is_mb(e)), default=-1) + 1
    before: dict[str, float] = defaultdict(float)
    after: dict[str, float] = defaultdict(float)
    for part, out in ((order[:split], before), (order[split:], after)):
        for e in part:
            if isinstance(e, _Skipped):
                for k, v in e.charges.items():
                    out[k] += v * e.count
            else:
                _charges((e,), ops, waits, out)
    t_mb = next((end[n] for n in reversed(nodes) if ops[n].phase in MICROBATCH), 0.0)
    t_fwd = next((end[n] for n in reversed(nodes) if ops[n].phase == "fwd"), 0.0)
    last_compute = end[nodes[-1]] if nodes else 0.0
    final = max(ops, key=end.__getitem__) if ops else None  # the node that ends last
    if final is None:
        return StageSchedule(t_fwd, t_mb, last_compute, 0.0, "compute", before, after, skipped)
    return StageSchedule(t_fwd, t_mb, last_compute, end[final], ops[final].category, before,
                         after, skipped)


class _Lazy(dict):
    """A dict whose missing ``(node, m)`` keys -- op of a skipped repeat: the node's op ``m``
    repeats on -- are made on demand by ``make``."""

    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key):
        if type(key) is not tuple:
            raise KeyError(key)
        return self.make(key)


@dataclass
class _Skip:
    """One run's skipped repeats: ``nodes[r]`` the node names of repeat ``r`` (``j-2 .. j`` as
    scheduled, ``j+left-1``, ``j+left`` as copied), ``where`` each scheduled node's (repeat,
    position), ``rate`` each position's shift per repeat."""

    j: int
    left: int
    nodes: dict[int, list[str]]
    where: dict[str, tuple[int, int]]
    rate: list[float]

    def at(self, x, r: int):
        """The node at ``x``'s position in repeat ``r`` (a ``(node, m)`` key for a skipped
        repeat); ``x`` itself when it is not one of the run's scheduled nodes."""
        if x not in self.where:
            return x
        pos = self.where[x][1]
        if r in self.nodes:
            return self.nodes[r][pos]
        return (self.nodes[self.j][pos], r - self.j)

    def moved(self, x, by: int):
        """``x``'s op ``by`` repeats on."""
        return self.at(x, self.where[x][0] + by) if x in self.where else x


class _Runner:
    """Schedules a plan run by run, skipping the periodic repeats of each."""

    def __init__(self, plan: StagePlan) -> None:
        self.steps = plan.steps
        self.clock = Clock.scalar()
        t = self.trace = _Attribution(self.clock, chains=True)
        t.start, t.blocker, t.ops = _Lazy(self._start), _Lazy(self._blocker), _Lazy(self._op)
        self.regs: dict[str, tuple[str, ...]] = {}
        self.names: list[list[str]] = []  # per step (scheduled or copied): its node names
        self.inputs: dict[str, list[str]] = {}
        self.skips: dict[str, _Skip] = {}  # by each repeat-j node of a skipped run
        self.order: list = []
        self.skipped = 0

    # skipped nodes, on demand (module docstring)
    def _start(self, key):
        x, m = key
        sk = self.skips[x]
        return self.trace.start[x] + m * sk.rate[sk.where[x][1]]

    def _op(self, key):
        return self.trace.ops[key[0]]

    def _blocker(self, key):
        x, m = key
        b = self.trace.blocker[x]
        return None if b is None else self.skips[x].moved(b, m)

    def summary(self) -> StageSchedule:
        i = 0
        for pattern, n in runs([id(st.block) for st in self.steps]):
            self._run(i, len(pattern), n)
            i += len(pattern) * n
        t = self.trace
        return _summarise(self.order, t.ops, self.clock.end, t.waits, self.skipped)

    def _step(self, s: int) -> None:
        st = self.steps[s]
        items = step_items(st, self.regs)
        last = dict(self.trace.last_on)
        for name, op, preds in items:
            before = last.get(op.stream)
            self.inputs[name] = preds + [before] if before is not None else preds
            last[op.stream] = name
        run(items, self.clock, self.trace)
        set_registers(st, self.regs)
        self.names.append([name for name, _, _ in items])
        self.order.extend(name for name, op, _ in items if op.stream == COMPUTE)

    def _run(self, i0: int, p: int, n: int) -> None:
        """Steps ``i0 .. i0 + n p - 1``: ``n`` repeats of a pattern of ``p`` blocks."""
        for j in range(n):
            for s in range(i0 + j * p, i0 + (j + 1) * p):
                self._step(s)
            left = n - 1 - j
            if j >= 2 and left >= 3:
                sk = self._periodic(i0, p, j, left)
                if sk is not None:
                    self._skip(i0, p, sk)
                    return

    def _repeat(self, i0: int, p: int, r: int) -> list[str]:
        return [x for s in range(i0 + r * p, i0 + (r + 1) * p) for x in self.names[s]]

    def _periodic(self, i0: int, p: int, j: int, left: int) -> _Skip | None:
        """The run's skip when repeat ``j`` passes checks 1-3 of the module docstring."""
        end, t = self.clock.end, self.trace
        reps = {r: self._repeat(i0, p, r) for r in (j - 2, j - 1, j)}
        now, prev, old = reps[j], reps[j - 1], reps[j - 2]
        if not now:
            return None
        tol = SAME * max(abs(end[now[-1]]), 1.0)
        rate = [end[x] - end[y] for x, y in zip(now, prev)]
        if any(abs(end[y] - end[z] - d) > tol for y, z, d in zip(prev, old, rate)):
            return None  # 1
        where = {x: (r, k) for r, xs in reps.items() for k, x in enumerate(xs)}
        for k, x in enumerate(now):
            for i in self.inputs[x]:
                if where.get(i, (None,))[0] not in (j - 1, j) or rate[where[i][1]] > rate[k] + tol:
                    return None  # 2
        compute = [k for k, x in enumerate(now) if x in t.waits]
        dc = rate[compute[0]] if compute else 0.0
        for k in compute:
            x = now[k]
            if abs(rate[k] - dc) > tol or not _same(t.waits[x], t.waits[prev[k]], t.ops, tol):
                return None  # 3
            for v in t.chains[x]:
                if where.get(v, (None,))[0] not in (j - 1, j) or abs(rate[where[v][1]] - dc) > tol:
                    return None  # 3
        return _Skip(j, left, reps, where, rate)

    def _skip(self, i0: int, p: int, sk: _Skip) -> None:
        """Repeats ``j+1 .. j+left`` without scheduling them (module docstring)."""
        t, end, j, left = self.trace, self.clock.end, sk.j, sk.left
        now = sk.nodes[j]
        computed = [x for x in now if x in t.waits]
        mb = any(t.ops[x].phase in MICROBATCH for x in computed)
        self.order.append(_Skipped(dict(_charges(computed, t.ops, t.waits)), left - 2, mb))
        self.names.extend([] for _ in range((left - 2) * p))
        for q in (j - 1, j):
            sk.nodes[q + left] = []
            for s in range(i0 + q * p, i0 + (q + 1) * p):
                self.names.append([self._copy(sk, x, self.steps[s + left * p].prefix, q)
                                   for x in self.names[s]])
        for x in now:
            self.skips[x] = sk
        for stream in {op.stream for st in self.steps[i0:i0 + p] for op in st.block.ops}:
            t.last_on[stream] = sk.moved(t.last_on[stream], left)
            self.clock.free[stream] = end[t.last_on[stream]]
        self._move_registers(i0, p, sk)
        self.skipped += left - 2

    def _copy(self, sk: _Skip, x: str, prefix: str, q: int) -> str:
        """Node ``x`` of repeat ``q`` as its copy ``left`` repeats on, named with ``prefix``;
        its waits are charged as repeat ``j``'s (check 3)."""
        t, end = self.trace, self.clock.end
        k = sk.where[x][1]
        op, by = t.ops[x], sk.left * sk.rate[k]
        y = prefix + op.name
        sk.nodes[q + sk.left].append(y)
        end[y], t.start[y], t.ops[y] = end[x] + by, t.start[x] + by, op
        b = t.blocker[x]
        t.blocker[y] = None if b is None else sk.moved(b, sk.left)
        if x in t.waits:
            twin = sk.nodes[sk.j][k]
            t.waits[y] = tuple((sk.moved(w, q + sk.left - sk.j) if w else w, sec)
                               for w, sec in t.waits[twin])
            self.order.append(y)
        return y

    def _move_registers(self, i0: int, p: int, sk: _Skip) -> None:
        """Registers after the copies: a written one holds its node's copy, an accumulated one
        adds the copies of the nodes it gained in repeats ``j-1`` and ``j``."""
        blocks = [st.block for st in self.steps[i0:i0 + p]]
        acc = {r for b in blocks for r, _ in b.accumulates}
        for r in {r for b in blocks for r, _ in b.writes} - acc:
            self.regs[r] = tuple(sk.moved(x, sk.left) for x in self.regs.get(r, ()))
        for r in acc:
            held = self.regs.get(r, ())
            self.regs[r] = held + tuple(sk.moved(x, sk.left) for x in held
                                        if sk.where.get(x, (None,))[0] in (sk.j - 1, sk.j))


def _same(a, b, ops, tol: float) -> bool:
    """Two waits' pieces charge the same categories the same seconds."""
    return len(a) == len(b) and all(
        wait_category(ops, x) == wait_category(ops, y) and abs(s - u) <= tol
        for (x, s), (y, u) in zip(a, b))


__all__ = ["StageSchedule", "full_summary", "runs", "schedule_stage"]
