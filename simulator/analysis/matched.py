"""How many tokens an MoE may train against a dense reference's budget, under three yardsticks.

The dense reference trains its Chinchilla tokens ``D = r * N_dense`` (:mod:`simulator.cost.budget`)
in ``S_d = ceil(D / B)`` steps of ``B`` tokens, each ``t_d`` seconds. Each yardstick turns that
into a budget and a cost per MoE step, and the MoE runs the whole steps that fit:

- ``step_time`` (Du et al. 2024, arXiv 2405.15052): equal wall-clock. Budget ``W = S_d * t_d``
  seconds, an MoE step costs ``t_m``: ``S_m = floor(W / t_m)``.
- ``flops``: equal model FLOPs. Budget ``S_d * B * f_d``, a step costs ``B * f_m``, with ``f``
  the model FLOPs per token (:func:`simulator.cost.flops.model_flops_per_token`, attention included):
  ``S_m = floor(S_d * f_d / f_m)``.
- ``active_params``: equal ``6 * N_active * tokens`` (the activated-parameter yardstick of
  prior MoE work): ``S_m = floor(S_d * N_d / N_m,active)``.

The MoE then trains ``S_m * B`` tokens in ``S_m * t_m`` seconds; ``wall_clock_ratio`` is that
over ``W``: 1 (to within one step) under ``step_time``, and above 1 when a yardstick grants the
MoE more tokens than its step time pays for. Each floor is taken of the quotient times
``1 + 1e-12``, so that a quotient that is whole on paper is not lost to float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from meshcast.errors import MeshcastError
from simulator.cost.flops import model_flops_per_token
from simulator.cost.goodput import SECONDS_PER_DAY
from simulator.specs.model import ModelSpec

VIEWS = ("step_time", "flops", "active_params")
VIEW_LABELS = {"step_time": "equal step time (wall clock)", "flops": "FLOP-matched",
               "active_params": "activated-parameter-matched"}


@dataclass(frozen=True)
class Matched:
    """The MoE's run under one yardstick: steps, tokens, seconds, and seconds over the dense's."""

    view: str
    steps: int
    tokens: int
    seconds: float
    wall_clock_ratio: float

    def as_dict(self) -> dict:
        return {"view": self.view, "steps": self.steps, "tokens": self.tokens,
                "seconds": self.seconds, "days": self.seconds / SECONDS_PER_DAY,
                "wall_clock_ratio": self.wall_clock_ratio}


def check_view(view: str) -> str:
    if view not in VIEWS:
        raise MeshcastError(f"view: {view!r} is not one of {', '.join(VIEWS)} "
                            "(step_time is Du et al. 2024's equal wall-clock budget)")
    return view


def equal_time_steps(dense_steps: int, dense_step_s: float, moe_step_s: float) -> int:
    """``floor(S_d * t_d / t_m)``: the MoE steps that fit in the dense run's wall clock."""
    if dense_step_s <= 0 or moe_step_s <= 0:
        raise MeshcastError(f"step time: {dense_step_s!r} s (dense), {moe_step_s!r} s (MoE) must "
                            "be positive")
    return math.floor(dense_steps * dense_step_s / moe_step_s * (1 + 1e-12))


def view_steps(view: str, dense_steps: int, dense: ModelSpec, moe: ModelSpec, seq_len: int,
               dense_step_s: float, moe_step_s: float) -> int:
    """MoE steps under ``view`` (see the module docstring for each formula)."""
    check_view(view)
    if view == "step_time":
        return equal_time_steps(dense_steps, dense_step_s, moe_step_s)
    if view == "flops":
        ratio = model_flops_per_token(dense, seq_len) / model_flops_per_token(moe, seq_len)
    else:
        ratio = dense.active_params / moe.active_params
    return math.floor(dense_steps * ratio * (1 + 1e-12))


def matched(view: str, dense_steps: int, tokens_per_step: int, dense: ModelSpec, moe: ModelSpec,
            seq_len: int, dense_step_s: float, moe_step_s: float) -> Matched:
    """The MoE's run under ``view``: ``S_m`` steps, ``S_m * B`` tokens, ``S_m * t_m`` seconds."""
    steps = view_steps(view, dense_steps, dense, moe, seq_len, dense_step_s, moe_step_s)
    seconds = steps * moe_step_s
    return Matched(view, steps, steps * tokens_per_step, seconds,
                   seconds / (dense_steps * dense_step_s))
