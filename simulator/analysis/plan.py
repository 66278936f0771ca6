"""What to buy: one job on several hardware profiles and chip counts, the best configuration on
each, the time and cost to train its token budget, the Pareto front of time vs cost, and the
smallest chip count that meets a deadline.

Cost = chip-hours x the price per chip-hour: the ``prices`` given (``plan --price``), else the
profile's sourced list price, else unknown (None, never zero: such a profile is left off the
front and named in :attr:`PlanResult.unpriced`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from simulator.cost.budget import Budget, chinchilla_tokens, make_budget, price_of, smallest_meeting
from simulator.cost.goodput import FailureModel, failure_model
from meshcast.errors import MeshcastError
from simulator.search.rank import Finalist, rank
from simulator.search.space import job_batch, make_space

#: Chip counts tried when none are given.
DEFAULT_CHIPS = (64, 128, 256, 512, 1024, 2048, 4096)
#: Largest price per chip-hour accepted (USD): a typo, not a chip, beyond it.
MAX_PRICE_PER_CHIP_HOUR_USD = 1000.0
#: The source a price given on the command line carries.
GIVEN_PRICE_SOURCE = "given with --price"


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
    #: price per chip-hour (USD) of each profile, None where unknown, and where it came from
    prices: dict[str, float | None] = field(default_factory=dict)
    price_sources: dict[str, str] = field(default_factory=dict)
    #: the interruption model per profile (None: ideal time, no interruptions counted)
    failures: dict[str, FailureModel | None] = field(default_factory=dict)

    @property
    def unpriced(self) -> list[str]:
        """Profiles with no price (their cost is unknown, not zero)."""
        return [h for h, p in self.prices.items() if p is None]


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
         seq_len: int | None = None, finalists: int = 2, prices: dict | None = None,
         progress: Callable[[str], None] | None = None,
         failures: dict | None = None) -> PlanResult:
    """Best configuration per (profile, chip count) by time to train ``tokens`` (default:
    Chinchilla, ``tokens_per_param`` x the reference's parameters). ``prices`` maps a profile
    (name, alias or path, as ``hardware`` names it) to USD per chip-hour; it overrides the
    profile's list price. ``failures``: options of :func:`simulator.cost.goodput.failure_model`
    (rate, restart_min, checkpoint_gb_s, async_checkpoint, every_min), each defaulting to the
    profile's sourced value; time to train is then the expected wall clock under interruptions
    (``None``: the ideal, steps x step time)."""
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
    profiles = with_prices([load_profile(h) if isinstance(h, (str, Path)) else h
                            for h in hardware], prices or {})
    counts = sorted(set(chips or DEFAULT_CHIPS))
    if counts[0] < 1:
        raise MeshcastError(f"chips: {counts[0]} must be a positive integer")
    ratio = None if tokens is not None else (tokens_per_param or 20.0)
    budget_tokens = tokens if tokens is not None else chinchilla_tokens(m, ratio, ref)
    # one batch for every (profile, chips), the default of predict, rank and compare too
    gb, sl = job_batch(m, global_batch=global_batch, global_batch_tokens=global_batch_tokens,
                       seq_len=seq_len)
    entries = []
    models = {}
    for hw in profiles:
        fm = models[hw.name] = None if failures is None else failure_model(hw, **failures)
        for n in counts:
            if progress:
                progress(f"{hw.name} x {n}")
            entries.append(_one(m, hw, n, budget_tokens, gb, sl, finalists, fm))
    result = PlanResult(m.name, budget_tokens, ratio, (ref or m).name, gb, sl, entries,
                        pareto_front(entries), deadline_days,
                        prices={hw.name: price_of(hw) for hw in profiles},
                        price_sources={hw.name: hw.price_per_chip_hour_usd.source
                                       for hw in profiles if price_of(hw) is not None},
                        failures=models)
    if deadline_days is not None:
        for hw in profiles:
            days = {e.chips: e.budget.days for e in entries if e.hardware == hw.name and e.ok}
            result.deadline[hw.name] = smallest_meeting(days, deadline_days)
    return result


def with_prices(profiles: list, prices: dict) -> list:
    """``profiles`` with the given prices per chip-hour (USD) in place of their list prices;
    a key names a profile as ``load_profile`` does (name, alias, path). A key that is none of
    ``profiles``, or a price that is not a positive finite number, is a MeshcastError naming
    it."""
    from hardware_profiles import load_profile
    from hardware_profiles.schema import Sourced

    by_name = {hw.name: hw for hw in profiles}
    for key, usd in prices.items():
        name = key if key in by_name else load_profile(key).name
        if name not in by_name:
            raise MeshcastError(f"price: {key!r} ({name}) is not one of the profiles planned "
                                f"({', '.join(by_name)}); drop its price or add it to --hardware")
        if not isinstance(usd, (int, float)) or not math.isfinite(usd) or \
                not 0 < usd <= MAX_PRICE_PER_CHIP_HOUR_USD:
            raise MeshcastError(f"price: {key}={usd} must be USD per chip-hour, a number > 0 and "
                                f"<= {MAX_PRICE_PER_CHIP_HOUR_USD:g} (e.g. {name}=3.50)")
        by_name[name] = by_name[name].model_copy(update={"price_per_chip_hour_usd": Sourced(
            value=float(usd), source=f"{GIVEN_PRICE_SOURCE}: ${usd:g} per chip-hour")})
    return [by_name[hw.name] for hw in profiles]


def _one(m, hw, n, tokens, global_batch, seq_len, finalists, failures) -> PlanEntry:
    """PlanEntry for one profile and chip count (a MeshcastError becomes its reason)."""
    from simulator.analysis.interval import interval_of

    try:
        space = make_space(m, hw, n, global_batch=global_batch, seq_len=seq_len)
        res = rank(space, "time_to_train", top=1, finalists=finalists, tokens=tokens,
                   failures=failures)
    except MeshcastError as e:
        return PlanEntry(hw.name, n, reason=str(e))
    best = res.top[0]
    iv = interval_of(best.prediction)  # rank's budget already counts failures, without a band
    budget = best.budget if not iv.exists else make_budget(
        tokens, space.tokens_per_step, best.prediction, price_of(hw), failures,
        (iv.lo_s, iv.hi_s, iv.level))
    return PlanEntry(hw.name, n, best, budget)
