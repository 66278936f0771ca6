"""Training budgets: how many tokens, how many steps, how long, how many chip-hours, what cost.

Chinchilla (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", arXiv
2203.15556): a compute-optimal dense model sees about 20 training tokens per parameter,
``tokens = ratio * N``. Du et al. 2024 (arXiv 2405.15052) fix the budget this way for the
*dense reference* and train the MoE for the same wall-clock cost; pass that dense model as
``reference``. Without one, an MoE's budget uses its **total** parameters: the compute-optimal
token count of a routed model is not settled (Clark et al. 2022, arXiv 2202.01169, fit it
between its active and total size), and total parameters is the conservative (longer) budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import math
from dataclasses import dataclass, replace

from meshcast.errors import MeshcastError
from simulator.cost.goodput import (
    SECONDS_PER_DAY,
    FailureModel,
    Goodput,
    checkpoint_bytes,
    goodput,
    with_spread,
)

if TYPE_CHECKING:
    from simulator.specs.model import ModelSpec

CHINCHILLA_TOKENS_PER_PARAM = 20.0


def chinchilla_tokens(model: ModelSpec, ratio: float = CHINCHILLA_TOKENS_PER_PARAM,
                      reference: ModelSpec | None = None) -> int:
    """``ratio * N`` training tokens, ``N`` = total parameters (embeddings included, as
    Chinchilla counts them) of ``reference``, else of ``model`` (see the module docstring)."""
    _check_tokens_per_param(ratio)
    return int(round(ratio * (reference or model).total_params))


def _check_tokens_per_param(ratio: float) -> None:
    """A clear error unless ``ratio`` is a positive finite number."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise MeshcastError(f"tokens-per-param: {ratio} must be a positive number (Chinchilla: 20)")


def train_steps(tokens, tokens_per_step):
    """Steps to see ``tokens``: ``ceil(tokens / tokens_per_step)``, in integers."""
    return -(-tokens // tokens_per_step)


def chip_hours(chips, seconds):
    """``chips * seconds / 3600``: what a run of ``seconds`` on ``chips`` is billed for (numbers
    or numpy columns)."""
    return chips * seconds / 3600.0


@dataclass(frozen=True)
class Budget:
    """One run: ``steps = ceil(tokens / tokens_per_step)``, ideal ``steps * step_time_s``;
    ``seconds`` is the expected wall clock under interruptions when ``goodput`` is given
    (:mod:`simulator.cost.goodput`), else the ideal; :func:`chip_hours`, ``cost_usd =
    chip_hours * price`` (None without a price)."""

    tokens: int
    tokens_per_step: int
    step_time_s: float
    chips: int
    price_per_chip_hour_usd: float | None
    goodput: Goodput | None = None

    @property
    def steps(self) -> int:
        return train_steps(self.tokens, self.tokens_per_step)

    @property
    def ideal_seconds(self) -> float:
        return self.steps * self.step_time_s

    @property
    def seconds(self) -> float:
        return self.goodput.expected_s if self.goodput else self.ideal_seconds

    @property
    def days(self) -> float:
        return self.seconds / SECONDS_PER_DAY

    @property
    def ideal_days(self) -> float:
        return self.ideal_seconds / SECONDS_PER_DAY

    @property
    def chip_hours(self) -> float:
        return chip_hours(self.chips, self.seconds)

    @property
    def cost_usd(self) -> float | None:
        p = self.price_per_chip_hour_usd
        return None if p is None else self.chip_hours * p

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "tokens_per_step": self.tokens_per_step,
                "steps": self.steps, "step_time_s": self.step_time_s, "seconds": self.seconds,
                "days": self.days, "ideal_days": self.ideal_days, "chips": self.chips,
                "chip_hours": self.chip_hours,
                "price_per_chip_hour_usd": self.price_per_chip_hour_usd, "cost_usd": self.cost_usd,
                "goodput": self.goodput.as_dict() if self.goodput else None}


def make_budget(tokens: int, tokens_per_step: int, pred, price: float | None,
                failures: FailureModel | None, band: tuple | None = None) -> Budget:
    """The budget of ``pred`` (a StepPrediction) over ``tokens``; with ``failures``, its
    expected wall clock, interval and p50/p90, ``band`` (the step time's interval
    ``(lo_s, hi_s, level)``, when there is one) widening the spread. The checkpoint is the
    model's whole state (:func:`~simulator.cost.goodput.checkpoint_bytes`), each device copying
    an even share."""
    job = pred.job
    b = Budget(tokens, tokens_per_step, pred.step_time_s, job.chips, price)
    if failures is None:
        return b
    ckpt = checkpoint_bytes(job.model.total_params, job.sharding.optimizer)
    g = goodput(failures, b.ideal_seconds, job.chips, ckpt)
    return replace(b, goodput=with_spread(g, band=band, step_s=pred.step_time_s))


def price_of(profile) -> float | None:
    """The profile's on-demand price per chip-hour (USD), or None if it gives none."""
    p = profile.price_per_chip_hour_usd
    return None if p is None else p.value


def smallest_meeting(days_by_chips: dict[int, float], deadline_days: float) -> int | None:
    """The smallest chip count whose time to train is within ``deadline_days``, or None."""
    if deadline_days <= 0:
        raise MeshcastError(f"deadline: {deadline_days} days must be positive")
    ok = [c for c, d in days_by_chips.items() if d <= deadline_days]
    return min(ok) if ok else None
