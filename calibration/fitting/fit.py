"""Fit the cost model's efficiencies and latencies to raw rows (scipy, relative-error loss).

The formulas are the simulator's own; only their numbers are fitted (design lesson 3):

- matmul: ``t - launch = flops / (peak * eff(flops))`` with ``eff(x) = e x / (x + h)``, i.e.
  ``t - launch = (x + h) / (peak * e)``: fit ``peak * e`` and ``h``.
  Matmul rows time forward plus both backward GEMMs (``6 m k n`` FLOPs, calibration.cases).
- attention: the same curve in the simulator's attention FLOPs (forward plus backward).
- elementwise: the same in bytes against HBM bandwidth (streaming ``x * a + b``); and
  ``gather``, the embedding lookup and its scatter-add gradient, likewise.
- in context (``block``, ``head``): the memory curve again, fitted to whole layers and heads
  with the GEMM and attention terms held at their curves (:mod:`calibration.fitting.fit_context`).
- collectives: ``t = c_lat(op, f) * a + c_bw(op, f) * nbytes / W``, where ``c_lat`` and ``c_bw`` are
  read off :mod:`simulator.cost.collectives` for the group (unit latency, unit bandwidth): fit the
  latency ``a`` and the achieved bandwidth ``W`` per (kind, mesh axis); each group crossed one
  network level (:mod:`calibration.levels`: within a host, or across hosts), and the profile's
  level takes its groups' figures (:mod:`calibration.fitting.profile_out`). A group spanning both
  levels (``host+cross_host``) is not fitted: :func:`fit_hierarchical` predicts it from the two
  fitted levels with the simulator's hierarchical formulas, every size held out.

Least squares on raw seconds fits only the largest sizes, so every residual is relative:
``(model - measured) / measured``. Sizes are split, not repetitions: every other size (sorted)
of each group is held out and the error of a fit without it is reported beside the in-sample one;
the parameters written to the profile are then refitted on every size.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from calibration.context import CONTEXT_KINDS
from calibration.levels import WITHIN_HOST
from meshcast.errors import MeshcastError
from simulator.cost.collectives import Collective, collective_time
from simulator.cost.topology import AxisPart, Level


@dataclass(frozen=True)
class Point:
    group: str  # e.g. "matmul", "collective:all_gather:model"
    size: float  # flops, bytes
    seconds: float  # median over repetitions
    group_size: int = 1
    op: str = ""
    shape: tuple[int, ...] = ()  # in-context cases: (sequences, tokens per sequence)
    dtype: str = "float32"
    levels: str = ""  # collectives: the level(s) the group crossed (calibration.levels)
    hosts: int = 1  # collectives: hosts one group spans


@dataclass
class GroupFit:
    group: str
    params: dict[str, float]
    in_sample_error: float  # median |relative error| on the fitted sizes
    held_out_error: float  # median |relative error| on held-out sizes (nan if none)
    max_held_out_error: float
    size_range: tuple[float, float]
    predictions: list[tuple[float, float, float, bool]]  # (size, measured, predicted, held out)
    not_used: str = ""  # why the profile leaves this fit out (reported all the same); "": used
    level: str = ""  # collectives: the network level(s) the group crossed


def medians(rows: list[dict]) -> list[Point]:
    """One point per case: the median of its repetitions (launch excluded)."""
    by_case: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_case[r["case_id"]].append(r)
    pts = []
    for reps in by_case.values():
        r = reps[0]
        t = float(np.median([x["seconds"] for x in reps]))
        if r["kind"] in ("matmul", "attention"):
            pts.append(Point(r["kind"], r["flops"], t))
        elif r["kind"] in CONTEXT_KINDS:
            pts.append(Point(r["kind"], r["nbytes"], t, shape=(r["m"], r["k"]), dtype=r["dtype"]))
        elif r["kind"] == "gather":
            pts.append(Point("gather", r["nbytes"], t))
        elif r["kind"] == "elementwise":
            # (raw files before the in-context cases also hold "layer" rows: kept apart)
            pts.append(Point("elementwise" + (":layer" if r["op"] == "layer" else ""),
                             r["nbytes"], t))
        elif r["kind"] == "collective":
            # rows from before multi-host runs (or that do not say) crossed the host's level
            pts.append(Point(f"collective:{r['op']}:{r['axis']}", r["nbytes"], t,
                             r["group_size"], r["op"], levels=r.get("levels") or WITHIN_HOST,
                             hosts=int(r.get("hosts", 1))))
        elif r["kind"] == "launch":
            pts.append(Point("launch", 0.0, t))
    return pts


def split(points: list[Point]) -> tuple[list[Point], list[Point]]:
    """Sizes sorted; odd positions held out (kept only if at least two sizes remain to fit)."""
    pts = sorted(points, key=lambda p: p.size)
    if len(pts) < 4:
        return pts, []
    return pts[0::2], pts[1::2]


def _solve(points, model, x0, group: str, fallback=None) -> np.ndarray:
    """Positive parameters (fitted in log space) minimising relative residuals on ``points``,
    from ``x0`` (or ``fallback`` where the model is not finite at ``x0``: a training fit driven
    to an extreme by odd rows). Rows no start can fit are a MeshcastError naming ``group``."""
    def resid(theta):
        return np.array([(model(theta, p) - p.seconds) / p.seconds for p in points])

    with np.errstate(all="ignore"):
        if fallback is not None and not np.all(np.isfinite(resid(np.asarray(x0)))):
            x0 = fallback
        try:
            return np.exp(least_squares(lambda log_theta: resid(np.exp(log_theta)),
                                        x0=np.log(x0)).x)
        except ValueError as e:
            raise MeshcastError(
                f"calibration: the {group} rows cannot be fitted ({e}): their times are not a "
                "finite function of their sizes; measure that kind again (a new --out, or "
                "remove its rows and --resume)") from None


def fit_curve(group: str, names: tuple[str, ...], points: list[Point], model, x0,
              split_points=split) -> GroupFit:
    """Fit ``model(theta, point)``'s parameters ``names`` twice: on the training sizes of
    ``split_points`` (its held-out error is reported) and then on every size (what the profile
    gets)."""
    train, test = split_points(points)
    theta_train = _solve(train, model, x0, group)
    theta = _solve(points, model, theta_train, group, fallback=x0)
    return _report(group, dict(zip(names, theta)), theta_train, model, train, test)


def _report(group, params, theta_train, model, train, test) -> GroupFit:
    """Errors of the training-sizes fit on its own sizes and on the held-out ones."""
    def err(pts):
        return [abs(model(theta_train, p) - p.seconds) / p.seconds for p in pts]

    e_in, e_out = err(train), err(test)
    preds = [(p.size, p.seconds, model(theta_train, p), p in test)
             for p in sorted(train + test, key=lambda p: p.size)]
    sizes = [p.size for p in train + test]
    params = {k: float(v) for k, v in params.items()}
    return GroupFit(group, params, float(np.median(e_in)),
                    float(np.median(e_out)) if e_out else float("nan"),
                    float(max(e_out)) if e_out else float("nan"), (min(sizes), max(sizes)), preds)


def fit_throughput(group: str, points: list[Point], launch: float) -> GroupFit:
    """``t = launch + (x + h) / R``: ``R`` = achieved rate at large sizes (peak x e_max)."""
    def model(theta, p):
        rate, half = theta
        return launch + (p.size + half) / rate

    big = max(points, key=lambda p: p.size)
    x0 = [big.size / max(big.seconds - launch, big.seconds * 0.5), max(big.size * 0.01, 1.0)]
    return fit_curve(group, ("rate", "half_saturation"), points, model, x0)


def _coefficients(op: str, f: int) -> tuple[float, float]:
    """(latency steps, bandwidth bytes-multiplier) of ``op`` over ``f`` devices on one switch."""
    kind = Collective(op)
    unit_bw = Level("unit", "switch", f, 1.0, 0.0, 1.0, False)
    unit_lat = Level("unit", "switch", f, 1e30, 1.0, 1.0, False)
    c_bw = collective_time(kind, (AxisPart(unit_bw, f),), 1.0)
    c_lat = collective_time(kind, (AxisPart(unit_lat, f),), 1.0)
    return c_lat, c_bw


def fit_collective(group: str, points: list[Point]) -> GroupFit:
    """``t = c_lat * a + c_bw * nbytes / W`` with the simulator's own coefficients."""
    c_lat, c_bw = _coefficients(points[0].op, points[0].group_size)

    def model(theta, p):
        lat, bw = theta
        return c_lat * lat + c_bw * p.size / bw

    small, big = min(points, key=lambda p: p.size), max(points, key=lambda p: p.size)
    x0 = [small.seconds / max(c_lat, 1e-9), c_bw * big.size / big.seconds]
    return fit_curve(group, ("latency_s", "bandwidth_bytes_per_s"), points, model, x0)


def fit_all(rows: list[dict]) -> tuple[float, dict[str, GroupFit]]:
    """(launch overhead, fits by group) from raw rows."""
    return fit_points(medians(rows))


def fit_points(pts: list[Point]) -> tuple[float, dict[str, GroupFit]]:
    """(launch overhead, fits by group) from the cases' medians (:func:`medians`).

    The launch overhead is the launch case's median, capped at the fastest other case: every
    case pays it, so none can be faster. A launch timed slower than that (load on a shared
    host, two local processes on two cores: 249 us against a 70 us elementwise case) would leave
    the small cases below the model's floor and drive the throughput fits to an infinite rate."""
    launch_pts = [p.seconds for p in pts if p.group == "launch"]
    others = [p.seconds for p in pts if p.group != "launch"]
    launch = float(np.median(launch_pts)) if launch_pts else 0.0
    launch = min(launch, min(others, default=launch))
    groups: dict[str, list[Point]] = defaultdict(list)
    for p in pts:
        if p.group != "launch" and p.group not in CONTEXT_KINDS:  # see calibration.fitting.fit_context
            groups[p.group].append(p)
    fits = {}
    for g, gp in sorted(groups.items()):
        if len(gp) < 2 or is_hierarchical(gp[0]):  # predicted, not fitted: fit_hierarchical
            continue
        fits[g] = fit_collective(g, gp) if g.startswith("collective") else \
            fit_throughput(g, gp, launch)
        fits[g].level = gp[0].levels if g.startswith("collective") else ""
    return launch, fits


def is_hierarchical(p: Point) -> bool:
    """A collective whose groups span both levels (``host+cross_host``)."""
    return p.group.startswith("collective") and "+" in p.levels


def fit_hierarchical(points: list[Point], levels) -> dict[str, GroupFit]:
    """Each collective group spanning both levels, predicted (not fitted) from ``levels``
    (:class:`simulator.cost.topology.Level` within a host and across hosts, innermost first, as
    the fitted profile's topology gives them) with the simulator's hierarchical collective over
    ``(group / hosts) x hosts`` devices: every size is held out, so its error checks the
    hierarchical model and both fitted levels together."""
    groups: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        if is_hierarchical(p):
            groups[p.group].append(p)
    inner, outer = levels
    out = {}
    for g, gp in sorted(groups.items()):
        gp = sorted(gp, key=lambda p: p.size)
        parts = (AxisPart(inner, gp[0].group_size // gp[0].hosts), AxisPart(outer, gp[0].hosts))
        kind = Collective(gp[0].op)
        pred = [collective_time(kind, parts, p.size) for p in gp]
        errs = [abs(m - p.seconds) / p.seconds for m, p in zip(pred, gp)]
        out[g] = GroupFit(g, {}, float("nan"), float(np.median(errs)), float(max(errs)),
                          (gp[0].size, gp[-1].size),
                          [(p.size, p.seconds, m, True) for m, p in zip(pred, gp)],
                          level=gp[0].levels)
    return out
