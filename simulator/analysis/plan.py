"""What to buy: one job on several hardware profiles and chip counts, the best configuration on
each, the time and cost to train its token budget, the Pareto front of time vs cost, and the
smallest chip count that meets a deadline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from simulator.cost.budget import Budget, chinchilla_tokens, price_of, smallest_meeting
from meshcast.errors import MeshcastError
from simulator.search.rank import Finalist, rank
from simulator.search.space import make_space

#: Chip counts tried when none are given.
DEFAULT_CHIPS = (64, 128, 256, 512, 1024, 2048, 4096)


@dataclass
class PlanEntry:
    """One (profile, chip count): its best configuration and budget, or why there is none."""

    hardware: str
    chips: int
    best: Finalist | None = None
    budget: Budget | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.best is not None


@dataclass
class PlanResult:
    model: str
    tokens: int
    tokens_per_param: float | None
    reference: str
    global_batch: int
    seq_len: int
    entries: list[PlanEntry]
    pareto: list[PlanEntry]
    deadline_days: float | None = None
    deadline: dict[str, int | None] = field(default_factory=dict)


def pareto_front(entries: list[PlanEntry]) -> list[PlanEntry]:
    """Entries no other entry beats on both time and cost (priced, feasible ones), fastest
    first: walk by increasing time, keep each that is cheaper than every faster one."""
    priced = sorted((e for e in entries if e.ok and e.budget.cost_usd is not None),
                    key=lambda e: (e.budget.seconds, e.budget.cost_usd, e.hardware, e.chips))
    front, cheapest = [], float("inf")
    for e in priced:
        if e.budget.cost_usd < cheapest:
            front.append(e)
            cheapest = e.budget.cost_usd
    return front


def plan(model, hardware: list, chips: list[int] | None = None, *, tokens: int | None = None,
         tokens_per_param: float | None = None, reference=None, deadline_days: float | None = None,
         global_batch: int | None = None, global_batch_tokens: int | None = None,
         seq_len: int | None = None, finalists: int = 2,
         progress: Callable[[str], None] | None = None) -> PlanResult:
    """Best configuration per (profile, chip count) by time to train ``tokens`` (default:
    Chinchilla, ``tokens_per_param`` x the reference's parameters)."""
    from hardware_profiles import load_profile
    from simulator.specs.zoo import load_model

    m = load_model(model) if isinstance(model, (str, Path)) else model
    ref = load_model(reference) if isinstance(reference, (str, Path)) else reference
    if tokens is not None and tokens_per_param is not None:
        raise MeshcastError(f"tokens: give --tokens ({tokens}) or --tokens-per-param "
                            f"({tokens_per_param}), not both")
    if tokens is not None and tokens < 1:
        raise MeshcastError(f"tokens: {tokens} must be a positive number of training tokens")
    if not hardware:
        raise MeshcastError("hardware: give at least one profile, e.g. h100-sxm,tpu-v5p")
    profiles = [load_profile(h) if isinstance(h, (str, Path)) else h for h in hardware]
    counts = sorted(set(chips or DEFAULT_CHIPS))
    if counts[0] < 1:
        raise MeshcastError(f"chips: {counts[0]} must be a positive integer")
    ratio = None if tokens is not None else (tokens_per_param or 20.0)
    budget_tokens = tokens if tokens is not None else chinchilla_tokens(m, ratio, ref)
    entries = []
    gb = sl = None
    for hw in profiles:
        for n in counts:
            if progress:
                progress(f"{hw.name} x {n}")
            entry, space = _one(m, hw, n, budget_tokens, global_batch, global_batch_tokens,
                                seq_len, finalists)
            entries.append(entry)
            if space is not None:
                gb, sl = space.global_batch, space.seq_len
    if gb is None:
        gb = global_batch or 0
        sl = seq_len or m.seq_len
    result = PlanResult(m.name, budget_tokens, ratio, (ref or m).name, gb, sl, entries,
                        pareto_front(entries), deadline_days)
    if deadline_days is not None:
        for hw in profiles:
            days = {e.chips: e.budget.days for e in entries if e.hardware == hw.name and e.ok}
            result.deadline[hw.name] = smallest_meeting(days, deadline_days)
    return result


def _one(m, hw, n, tokens, global_batch, global_batch_tokens, seq_len, finalists):
    """PlanEntry for one profile and chip count (a MeshcastError becomes its reason)."""
    try:
        space = make_space(m, hw, n, global_batch=global_batch,
                           global_batch_tokens=global_batch_tokens, seq_len=seq_len)
        res = rank(space, "time_to_train", top=1, finalists=finalists, tokens=tokens)
    except MeshcastError as e:
        return PlanEntry(hw.name, n, reason=str(e)), None
    best = res.top[0]
    budget = Budget(tokens, space.tokens_per_step, best.prediction.step_time_s, n, price_of(hw))
    return PlanEntry(hw.name, n, best, budget), space
