"""Rank every feasible configuration of a job: enumerate, prune by memory, time the rest on
the fast path, then re-evaluate the finalists with the graph path and rank by that.

Objectives: ``step_time`` (lower is better), ``mfu`` (higher), ``time_to_train`` and ``cost``
(lower; the budget's token count over the fixed tokens per step, times the step time, and the
chip-hours times the profile's price). For one job all four order the configurations alike --
they matter when ``plan`` compares chip counts and hardware. Ties are broken by the rows'
identity columns, so the ranking does not depend on the order of the table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from simulator.cost.budget import (
    Budget,
    chinchilla_tokens,
    chip_hours,
    make_budget,
    price_of,
    train_steps,
)
from simulator.cost.goodput import FailureModel, checkpoint_bytes, wall_factor
from meshcast.errors import MeshcastError, NoFeasibleConfig
from simulator.search.enumerate import enumerate_candidates
from simulator.search.fast import StepTimes, memory_per_device, mfu, step_times
from simulator.search.space import OBJECTIVES, SearchSpace
from simulator.search.table import Candidates

Progress = Callable[[str, float], None]


@dataclass
class Finalist:
    """A configuration the graph path re-evaluated: its row, fast-path step time and the
    graph path's StepPrediction."""

    index: int
    row: dict
    fast_step_s: float
    prediction: object
    objective: float
    budget: Budget

    @property
    def axis_order(self) -> list[str]:
        return list(self.prediction.job.sharding.axis_order)


@dataclass
class RankResult:
    """The ranking: ``top`` finalists in graph-path order, the evaluated table (rows that fit,
    in fast-path rank order) with its fast-path columns, counts and timings."""

    space: SearchSpace
    objective: str
    top: list[Finalist]
    table: Candidates
    times: StepTimes
    memory_bytes: np.ndarray
    counts: dict
    seconds: dict = field(default_factory=dict)
    tokens: int = 0
    failures: FailureModel | None = None  # the interruption model budgets count (or None)

    @property
    def configs_per_s(self) -> float:
        """Configurations through the fast path (memory check of every valid row, timing of
        those that fit) per second of fast-path time."""
        t = self.seconds.get("memory", 0.0) + self.seconds.get("timing", 0.0)
        return self.counts["candidates"] / t if t > 0 else float("inf")

    @property
    def mfu(self) -> np.ndarray:
        return mfu(self.table.space, self.times.step_s)


def objective_values(space: SearchSpace, objective: str, step_s, tokens: int,
                     failures: FailureModel | None = None):
    """The objective per step time (array or float): smaller is better except for ``mfu``.
    ``time_to_train`` and ``cost`` count the expected wall clock under ``failures``
    (:func:`simulator.cost.goodput.wall_factor`: the same factor for every configuration of
    one job, so it scales them without reordering)."""
    _check_objective(objective)
    if objective == "step_time":
        return step_s
    if objective == "mfu":
        return mfu(space, step_s)
    wall = 1.0 if failures is None else wall_factor(
        failures, space.chips, checkpoint_bytes(space.model.total_params, space.base.optimizer))
    seconds = train_steps(tokens, space.tokens_per_step) * step_s * wall
    if objective == "time_to_train":
        return seconds
    return chip_hours(space.chips, seconds) * _price(space)


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise MeshcastError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")


def _price(space: SearchSpace) -> float:
    p = price_of(space.hardware)
    if p is None:
        raise MeshcastError(f"objective: cost needs a price but profile {space.hardware.name} has no "
                            "price_per_chip_hour_usd; use --objective time_to_train or a profile "
                            "with a price")
    return p


def order(cands: Candidates, values: np.ndarray, objective: str) -> np.ndarray:
    """Row order best first: by the objective, ties by the identity columns."""
    primary = -values if objective == "mfu" else values
    return np.lexsort([*reversed(cands.key_columns()), primary])


def rank(space: SearchSpace, objective: str = "step_time", top: int = 5,
         finalists: int | None = None, tokens: int | None = None,
         progress: Progress | None = None, failures: FailureModel | None = None) -> RankResult:
    """Enumerate ``space`` and rank it (see :func:`rank_table`)."""
    t0 = time.perf_counter()
    if progress:
        progress("enumerate", 0.0)
    cands = enumerate_candidates(space)
    res = rank_table(cands, objective, top, finalists, tokens, progress, failures)
    res.seconds["enumerate"] = time.perf_counter() - t0 - sum(res.seconds.values())
    return res


def rank_table(cands: Candidates, objective: str = "step_time", top: int = 5,
               finalists: int | None = None, tokens: int | None = None,
               progress: Progress | None = None, failures: FailureModel | None = None
               ) -> RankResult:
    """Prune ``cands`` by memory, time the rest, re-evaluate ``finalists`` (default
    ``max(2 top, 4)``) with the graph path and keep the ``top`` best by it. ``failures``:
    budgets count interruptions, checkpoints and restarts (:mod:`simulator.cost.goodput`)."""
    _check_objective(objective)
    if top < 1:
        raise MeshcastError(f"top: {top} must be at least 1")
    space = cands.space
    tokens = tokens or chinchilla_tokens(space.model)
    if objective == "cost":
        _price(space)
    report = progress or (lambda stage, frac: None)
    seconds = {}
    t0 = time.perf_counter()
    report("memory", 0.0)
    mem = memory_per_device(cands)
    capacity = space.hardware.chip.hbm_capacity_bytes.value
    fits = mem <= capacity
    seconds["memory"] = time.perf_counter() - t0
    if not fits.any():
        raise _none_fit(cands, mem, capacity)
    evaluated = cands.take(fits)
    t0 = time.perf_counter()
    times = step_times(evaluated, lambda frac: report("timing", frac))
    seconds["timing"] = time.perf_counter() - t0
    values = objective_values(space, objective, times.step_s, tokens, failures)
    best = order(evaluated, values, objective)
    evaluated = evaluated.take(best)
    times = StepTimes(times.step_s[best], times.compute_s[best], times.bubble_s[best])
    t0 = time.perf_counter()
    chosen = _finalists(evaluated, times, objective, tokens, finalists or max(2 * top, 4),
                        lambda frac: report("graph path", frac), failures)[:top]
    seconds["finalists"] = time.perf_counter() - t0
    counts = {"candidates": len(cands), "evaluated": len(evaluated),
              "out_of_memory": int((~fits).sum()),
              "invalid": {k: v for k, v in cands.invalid.items() if v},
              "invalid_total": sum(cands.invalid.values())}
    return RankResult(space, objective, chosen, evaluated, times, mem[fits][best], counts,
                      seconds, tokens, failures)


def _finalists(table: Candidates, times: StepTimes, objective: str, tokens: int,
               n: int, progress: Callable[[float], None],
               failures: FailureModel | None = None) -> list[Finalist]:
    """Predict the first ``n`` rows with the graph path and order them by its objective. A row
    whose graph-path memory does not fit is never a finalist (the fast path's memory is the
    same number, so this is a guard): the next rows are taken instead, up to ``4 n`` tried."""
    from simulator.predict import predict_job
    from simulator.specs.job import make_job

    space = table.space
    out = []
    n = min(n, len(table))
    for i in range(min(4 * n, len(table))):
        if len(out) == n:
            break
        progress(len(out) / n)
        pred = predict_job(make_job(space.model, table.sharding(i), space.hardware, space.chips))
        if not pred.memory.fits:
            continue
        value = float(objective_values(space, objective, pred.step_time_s, tokens, failures))
        budget = make_budget(tokens, space.tokens_per_step, pred, price_of(space.hardware),
                             failures)
        out.append(Finalist(i, table.row(i), float(times.step_s[i]), pred, value, budget))
    if not out:
        raise NoFeasibleConfig(
            f"chips: none of the {min(4 * n, len(table))} best configurations of "
            f"{space.model.name} on {space.chips} {space.hardware.name} chips fits in memory on "
            "the graph path; use more chips, a shorter --seq-len or a smaller --global-batch",
            "does not fit")
    sign = -1.0 if objective == "mfu" else 1.0
    return sorted(out, key=lambda f: (sign * f.objective, f.index))


def _none_fit(cands: Candidates, mem: np.ndarray, capacity: float) -> NoFeasibleConfig:
    i = int(np.argmin(mem))
    space = cands.space
    row = cands.row(i)
    mesh = ",".join(f"{a}={v}" for a, v in row["mesh"].items())
    need = f"{mem[i] / 2**30:.1f} GiB"
    return NoFeasibleConfig(
        f"chips: no configuration of {space.model.name} on {space.chips} {space.hardware.name} "
        f"chips fits in {capacity / 2**30:.1f} GiB per device ({len(cands)} tried; the "
        f"smallest needs {need}: mesh {mesh}, micro-batch {row['micro_batch']}, remat "
        f"{row['remat']}); use more chips, a shorter --seq-len or a smaller --global-batch",
        f"does not fit: {need}")
