"""Fit the elementwise (memory) curve to whole layers and heads, the GEMMs held at their curves.

For an in-context case (:mod:`calibration.context`) with step-graph ops ``i``:

``t = sum_{i not elementwise} cost_i + sum_{i elementwise} (launch + (bytes_i + h) / R)``

The first sum uses the profile fitted from the isolated sweeps (GEMMs, attention, gathers); the
second is the simulator's memory-bound time ``bytes / (bw * eff(bytes))`` with
``eff(x) = (R / bw) x / (x + h)``: only the achieved rate ``R`` and the half-saturation size
``h`` are fitted, with relative residuals. Held out: every other size of each case kind.

The rate is identified only if the bytes term ``sum (bytes_i + h) / R`` is a visible share of a
case's time: when the held terms alone explain the cases (a noisy host, whose isolated GEMM and
attention sweeps over-predict their in-context times), the optimiser drives ``R`` off to 1e20
and more with the residuals unchanged. A fit whose largest share is below its own in-sample error
(or below :data:`MIN_SHARE`) is reported with ``not_used`` set, and the memory curve stays the streaming one.
"""

from __future__ import annotations

from calibration.context import CONTEXT_KINDS, context_job, context_ops, fitted_elementwise
from calibration.dtypes import precision_of_dtype
from calibration.fitting.fit import GroupFit, Point, fit_curve

GROUP = "elementwise:context"
#: Below this share of every case's time the bytes term is not identified, whatever the fit's
#: in-sample error (with as many training cases as parameters that error is zero: a 2x2-device
#: multi-host run fitted R = 2e23 B/s that way).
MIN_SHARE = 0.01


def fixed_and_bytes(p: Point, profile) -> tuple[float, list[float]]:
    """(seconds of the case's non-elementwise ops on ``profile``, bytes of each elementwise op)."""
    from simulator.cost.compute import ComputeModel
    from simulator.graph.cost import CostContext, cost
    from simulator.specs.job import make_job

    c = context_job(*p.shape, p.dtype)
    job = make_job(c.model, c.sharding, profile, c.chips)  # the case's job on the fitted profile
    ctx = CostContext(ComputeModel.from_profile(profile, precision_of_dtype(p.dtype)), job.topology)
    fixed, ew = 0.0, []
    for op in context_ops(p.group, *p.shape, p.dtype):
        if fitted_elementwise(op):
            ew.append(op.nbytes)
        else:
            fixed += cost(op, ctx)
    return fixed, ew


def _split_per_kind(pts: list[Point]) -> tuple[list[Point], list[Point]]:
    """Every other size of each case kind held out (none if fewer than two would be fitted)."""
    train, test = [], []
    for kind in CONTEXT_KINDS:
        by_size = sorted((p for p in pts if p.group == kind), key=lambda p: p.size)
        train += by_size[0::2]
        test += by_size[1::2]
    return (train, test) if len(train) >= 2 else (pts, [])


def fit_context(points: list[Point], profile, launch: float) -> GroupFit | None:
    """The in-context elementwise fit (``rate`` R, ``half_saturation`` h), or None if fewer than
    two in-context cases were measured."""
    pts = [p for p in points if p.group in CONTEXT_KINDS]
    if len(pts) < 2:
        return None
    terms = {id(p): fixed_and_bytes(p, profile) for p in pts}

    def model(theta, p):
        rate, half = theta
        fixed, ew = terms[id(p)]
        return fixed + sum(launch + (b + half) / rate for b in ew)

    big = max(pts, key=lambda p: p.size)
    fixed, ew = terms[id(big)]
    x0 = [sum(ew) / max(big.seconds - fixed, 0.2 * big.seconds), max(min(ew), 1.0)]
    fit = fit_curve(GROUP, ("rate", "half_saturation"), pts, model, x0, _split_per_kind)
    op_bytes = [b for p in pts for b in terms[id(p)][1]]
    fit.size_range = (min(op_bytes), max(op_bytes))  # the curve's x is one op's bytes
    rate, half = fit.params["rate"], fit.params["half_saturation"]
    shares = [sum((b + half) / rate for b in terms[id(p)][1]) / model((rate, half), p)
              for p in pts]
    if max(shares) < max(fit.in_sample_error, MIN_SHARE):
        fit.not_used = (f"rate not identified: the elementwise bytes are at most "
                        f"{100 * max(shares):.2g}% of a case's fitted time, below the fit's "
                        f"{100 * fit.in_sample_error:.1f}% in-sample error (the GEMM and attention "
                        "curves alone explain the layers); the memory curve is the streaming fit")
    return fit
