"""Fit the elementwise (memory) curve to whole layers and heads, the GEMMs held at their curves.

For an in-context case (:mod:`calibration.context`) with step-graph ops ``i``:

``t = sum_{i not elementwise} cost_i + sum_{i elementwise} (launch + (bytes_i + h) / R)``

The first sum uses the profile fitted from the isolated sweeps (GEMMs, attention, gathers); the
second is the simulator's memory-bound time ``bytes / (bw * eff(bytes))`` with
``eff(x) = (R / bw) x / (x + h)``: only the achieved rate ``R`` and the half-saturation size
``h`` are fitted, with relative residuals. Held out: every other size of each case kind.
"""

from __future__ import annotations

from calibration.context import CONTEXT_KINDS, context_ops
from calibration.fit import GroupFit, Point, _report, _solve
from simulator.graph.ops import OpKind

GROUP = "elementwise:context"


def _fixed_and_bytes(p: Point, profile) -> tuple[float, list[float]]:
    """(seconds of the case's non-elementwise ops on ``profile``, bytes of each elementwise op)."""
    from simulator.compute import ComputeModel
    from simulator.graph.ops import CostContext, cost

    # the calibrated curves are rates over the profile's bf16 peak (a host's fp32 peak equals
    # it), so the bf16 compute model reproduces the fitted GEMM and attention times; the ops'
    # bytes are the run's dtype (context_ops)
    ctx = CostContext(ComputeModel.from_profile(profile, "bf16"), None)
    fixed, ew = 0.0, []
    for op in context_ops(p.op, *p.shape, p.dtype):
        if op.kind is OpKind.ELEMENTWISE and not op.gather:
            ew.append(op.nbytes)
        else:
            fixed += cost(op, ctx)
    return fixed, ew


def fit_context(points: list[Point], profile, launch: float) -> GroupFit | None:
    """The in-context elementwise fit (``rate`` R, ``half_saturation`` h), or None if fewer than
    two in-context cases were measured."""
    pts = [p for p in points if p.group in CONTEXT_KINDS]
    if len(pts) < 2:
        return None
    terms = {id(p): _fixed_and_bytes(p, profile) for p in pts}

    def model(theta, p):
        rate, half = theta
        fixed, ew = terms[id(p)]
        return fixed + sum(launch + (b + half) / rate for b in ew)

    train, test = [], []
    for kind in CONTEXT_KINDS:
        by_size = sorted((p for p in pts if p.group == kind), key=lambda p: p.size)
        train += by_size[0::2]
        test += by_size[1::2]
    if len(train) < 2:
        train, test = pts, []
    big = max(pts, key=lambda p: p.size)
    fixed, ew = terms[id(big)]
    x0 = [sum(ew) / max(big.seconds - fixed, 0.2 * big.seconds), max(min(ew), 1.0)]
    theta_train = _solve(train, model, x0)
    theta = _solve(pts, model, theta_train)
    fit = _report(GROUP, {"rate": theta[0], "half_saturation": theta[1]}, theta_train, model,
                  train, test)
    op_bytes = [b for p in pts for b in terms[id(p)][1]]
    fit.size_range = (min(op_bytes), max(op_bytes))  # the curve's x is one op's bytes
    return fit
