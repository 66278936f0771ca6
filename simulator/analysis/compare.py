"""MoE vs dense at equal step time (Du et al. 2024, arXiv 2405.15052): ``meshcast compare``.

The dense reference gets its Chinchilla budget (``r`` tokens per parameter, default 20), its step
time on the best (or a given) sharding, and so a wall-clock budget. Each MoE runs the same
global batch on the same chips, on its own best (or the given) sharding; it gets its step time,
the increase over dense split into its parts (:mod:`simulator.analysis.decompose`), and the tokens it can
train under each yardstick (:mod:`simulator.analysis.matched`). ``view`` only picks the headline yardstick.

Sharding: with ``mesh`` both models run it, the dense with the ``expert`` axis folded into
``data`` (a dense model has no experts; its batch is split the same ``data x expert`` ways);
otherwise each model runs the best configuration ``rank`` finds for it (by step time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simulator.analysis.attribution import attribute
from simulator.cost.budget import Budget, chinchilla_tokens, make_budget, price_of
from simulator.cost.goodput import Goodput, checkpoint_bytes, failure_model, goodput, with_spread
from simulator.analysis.decompose import Increase, decompose_predictions
from meshcast.errors import MeshcastError
from simulator.analysis.matched import VIEWS, Matched, check_view, matched
from simulator.specs.model import ModelSpec


@dataclass
class MoEComparison:
    """One MoE against the dense reference."""

    prediction: object
    increase: Increase
    attribution: dict
    views: dict[str, Matched]
    headline: Matched
    #: the headline view's run under interruptions (its own checkpoint size), or None
    goodput: Goodput | None = None

    @property
    def model(self) -> ModelSpec:
        return self.prediction.job.model


@dataclass
class Comparison:
    """The dense reference, its budget, and one MoEComparison per MoE."""

    dense: object
    dense_attribution: object
    budget: Budget
    tokens_per_param: float
    view: str
    moes: list[MoEComparison]
    sharding: str  # "best" or "mesh"


def _load(name, role: str, want_moe: bool) -> ModelSpec:
    from simulator.specs.zoo import load_model

    m = load_model(name, role) if isinstance(name, (str, Path)) else name
    if want_moe and m.moe is None:
        raise MeshcastError(f"moe: {m.name} is a dense model; give MoE models to --moe "
                            "(e.g. moe-6.4b) and the dense reference to --dense")
    if not want_moe and m.moe is not None:
        raise MeshcastError(f"{role}: {m.name} is an MoE model; give a dense reference to --dense "
                            "(e.g. dense-6.4b) and MoE models to --moe")
    return m


def dense_mesh(mesh: dict[str, int]) -> dict[str, int]:
    """The dense model's mesh for an MoE mesh: ``expert`` folded into ``data``."""
    out = {a: v for a, v in mesh.items() if a != "expert"}
    e = mesh.get("expert", 1)
    if e != 1:
        data = out.get("data", 1)
        out["data"] = -1 if data == -1 else data * e
    return out


def _forecast(model: ModelSpec, hw, chips: int, mesh, batch: dict, extra: dict):
    """The model's forecast on ``mesh``, or on the best configuration ``rank`` finds."""
    from simulator.predict import predict_job
    from simulator.search.rank import rank
    from simulator.search.space import make_space
    from simulator.specs.job import make_job
    from simulator.specs.sharding import make_sharding

    if mesh is not None:
        return predict_job(make_job(model, make_sharding(mesh=mesh, **batch, **extra), hw, chips))
    space = make_space(model, hw, chips, **batch, **extra)
    return rank(space, "step_time", top=1).top[0].prediction


def compare(dense, moes, hardware, chips: int, *, mesh: dict[str, int] | None = None,
            tokens_per_param: float = 20.0, view: str = "step_time",
            global_batch: int | None = None, global_batch_tokens: int | None = None,
            seq_len: int | None = None, failures: dict | None = None,
            **sharding) -> Comparison:
    """Compare ``moes`` (names or specs) to the ``dense`` reference on ``chips`` of ``hardware``
    (see the module docstring). ``sharding`` holds further ShardingSpec fields (remat,
    micro_batch, precision, ...); with ``mesh=None`` remat and micro-batch are searched.
    ``failures``: :func:`simulator.cost.goodput.failure_model` options; the dense budget's wall
    clock and each MoE's headline run then count interruptions, checkpoints and restarts --
    the same interruption rate on the same chips, each model checkpointing its own state."""
    from hardware_profiles import load_profile
    from simulator.search.space import job_batch

    check_view(view)
    if mesh is None:
        for key in ("remat", "micro_batch"):
            if key in sharding:
                raise MeshcastError(f"{key.replace('_', '-')}: {sharding[key]} is searched when no "
                                    "mesh is given; pass --mesh (mesh=) too, or drop it")
    d = _load(dense, "dense", want_moe=False)
    tokens = chinchilla_tokens(d, tokens_per_param)  # checks the ratio before any forecast
    ms = [_load(m, "moe", want_moe=True) for m in (moes if isinstance(moes, (list, tuple)) else [moes])]
    if not ms:
        raise MeshcastError("moe: give at least one MoE model (e.g. --moe moe-6.4b)")
    hw = load_profile(hardware) if isinstance(hardware, (str, Path)) else hardware
    gb, seq = job_batch(d, global_batch=global_batch, global_batch_tokens=global_batch_tokens,
                        seq_len=seq_len)  # the default of predict, rank and plan too
    batch = dict(global_batch=gb, seq_len=seq)
    dpred = _forecast(d, hw, chips, dense_mesh(mesh) if mesh else None, batch, sharding)
    tokens_per_step = dpred.job.tokens_per_step
    fm = None if failures is None else failure_model(hw, **failures)
    budget = make_budget(tokens, tokens_per_step, dpred, price_of(hw), fm)
    out, dense_att = [], attribute(dpred)
    for m in ms:
        mpred = _forecast(m, hw, chips, mesh, batch, sharding)
        inc, att = decompose_predictions(dpred, mpred, dense_att)
        views = {v: matched(v, budget.steps, tokens_per_step, d, m, seq, dpred.step_time_s,
                            mpred.step_time_s) for v in VIEWS}
        g = None if fm is None else with_spread(goodput(
            fm, views[view].seconds, chips,
            checkpoint_bytes(m.total_params, mpred.job.sharding.optimizer)))
        out.append(MoEComparison(mpred, inc, att, views, views[view], g))
    return Comparison(dpred, dense_att, budget, tokens_per_param, view, out,
                      "mesh" if mesh else "best")
