"""How far to trust a forecast: its interval and what it was fitted on.

``meshcast fit --published`` records in each profile (``HardwareProfile.fit``) how its
efficiencies were estimated -- on the chip's own runs, borrowed from its architecture, or from
every chip -- and the band the held-out runs at that transfer distance fell in, as factors on the
step time (one band for dense jobs, one for MoE). :func:`forecast_interval` turns a step time into
``[t * lo_factor, t * hi_factor]`` with that basis, and lists each way the forecast leaves what
was fitted (a precision the architecture was never measured in, a profile with no lineage, op
sizes past a calibrated curve's range). A profile with no fit record has no interval: its
efficiencies are assumed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from hardware_profiles.schema import HardwareProfile

#: The detail of a profile whose efficiencies no fit informed.
ASSUMED_DETAIL = ("efficiencies assumed, not fitted: `meshcast fit --published FILE --out DIR`, "
                  "then --profiles DIR")

#: The precision a matmul curve of the profile's ``efficiency`` is for.
_CURVE_PRECISION = {"matmul": "bf16", "matmul_fp8": "fp8", "matmul_fp4": "fp4"}


@dataclass(frozen=True)
class ForecastInterval:
    """A step time's interval (``lo_s``/``hi_s``, None when there is none) at ``level``, the
    basis of the profile's efficiencies (own / architecture / global / assumed) and its detail,
    and one line per way the forecast is outside what was fitted."""

    lo_s: float | None
    hi_s: float | None
    level: float | None
    basis: str
    detail: str
    outside: list[str] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        return self.lo_s is not None and self.hi_s is not None

    def scaled(self, value: float, step_time_s: float) -> tuple[float, float] | None:
        """The band on a quantity proportional to the step time (days, cost), or None."""
        if not self.exists or step_time_s <= 0:
            return None
        return value * self.lo_s / step_time_s, value * self.hi_s / step_time_s

    @property
    def label(self) -> str:
        """``80% interval`` (a legend's entry), or ``no interval``."""
        return f"{100 * self.level:.0f}% interval" if self.exists else "no interval"

    def band_text(self, unit: str = " s") -> str:
        """``12.1-16.9 s, 80%``, or ``no interval``."""
        if not self.exists:
            return "no interval"
        return f"{self.lo_s:.3g}-{self.hi_s:.3g}{unit}, {100 * self.level:.0f}%"

    def band_note(self) -> str:
        """`` (12.1-16.9 s, 80%)`` after a step time, or nothing without an interval."""
        return f" ({self.band_text()})" if self.exists else ""

    def text(self) -> str:
        """``12.1-16.9 s, 80%; efficiencies borrowed from ...`` (or ``no interval: ...``)."""
        return f"{self.band_text()}{'; ' if self.exists else ': '}{self.detail}"

    def basis_line(self) -> str:
        """``80% interval: <detail>``, or ``no interval: <detail>``."""
        return f"{self.label}: {self.detail}"

    def notes(self, indent: str = "  ", said: Collection[str] = ()) -> list[str]:
        """The basis line and an ``outside the fit: ...`` line per way out, at ``indent``, but
        for those already ``said`` (basis lines or outside lines said once for several)."""
        return ([f"{indent}{self.basis_line()}"] if self.basis_line() not in said else []) + [
            f"{indent}outside the fit: {o}" for o in self.outside if o not in said]

    def as_dict(self) -> dict:
        """JSON-ready (strict: no NaN): ``step_time_interval_s`` ([lo, hi] or null),
        ``interval_level``, ``basis``, ``basis_detail``, ``outside``."""
        band = self.exists and math.isfinite(self.lo_s) and math.isfinite(self.hi_s)
        return {"step_time_interval_s": [self.lo_s, self.hi_s] if band else None,
                "interval_level": self.level if band else None, "basis": self.basis,
                "basis_detail": self.detail, "outside": list(self.outside)}


def forecast_interval(profile: HardwareProfile, is_moe: bool, step_time_s: float,
                      precision: str, extrapolated: Iterable[str] = ()) -> ForecastInterval:
    """The interval of a ``step_time_s`` forecast on ``profile`` for a dense or MoE job in
    ``precision``: the fit record's band for the job's kind (the other kind's when that one is
    missing, said in ``detail``). ``extrapolated``: lines saying where op sizes left a calibrated
    curve's range (:func:`simulator.predict.outside_calibrated_range`), added to ``outside``."""
    outside = _outside(profile, precision) + list(extrapolated)
    fit = profile.fit
    if fit is None:
        return ForecastInterval(None, None, None, "assumed", ASSUMED_DETAIL, outside)
    kind, other = ("MoE", "dense") if is_moe else ("dense", "MoE")
    bands = {"MoE": fit.interval_moe, "dense": fit.interval_dense}
    band, detail = bands[kind], fit.basis_detail
    if band is None and bands[other] is not None:
        band = bands[other]
        detail += f"; no {kind} band was fitted, the {other} band is used"
    if band is None:
        return ForecastInterval(None, None, None, fit.basis,
                                f"{detail}; the fit recorded no interval", outside)
    return ForecastInterval(step_time_s * band.lo_factor, step_time_s * band.hi_factor,
                            band.level, fit.basis, detail, outside)


def interval_of(pred) -> ForecastInterval:
    """:func:`forecast_interval` of a StepPrediction (its profile, kind, step time, precision,
    and the op sizes of its critical stage against the calibrated ranges)."""
    from simulator.predict import outside_calibrated_range

    j = pred.job
    return forecast_interval(j.hardware, j.model.is_moe, pred.step_time_s, j.sharding.precision,
                             outside_calibrated_range(j, pred.critical.plan.op_counts()))


def _outside(profile: HardwareProfile, precision: str) -> list[str]:
    out = []
    lin = profile.lineage
    if lin is None:
        out.append(f"{profile.name} names no lineage (vendor -> architecture -> chip): no "
                   "measured sibling informs its efficiencies")
    fit = profile.fit
    if fit is not None and precision not in fit.measured_precisions:
        where = lin.architecture if lin is not None else profile.name
        measured = ", ".join(fit.measured_precisions) or "nothing"
        out.append(f"{precision} was never measured on {where} (measured: {measured}): "
                   f"{_borrowed(profile, precision)}")
    return out


def _borrowed(profile: HardwareProfile, precision: str) -> str:
    """Where an unmeasured precision's matmul efficiency comes from: the curve the compute model
    picks for it, and that curve's fitted provenance when the fit record has one."""
    from simulator.cost.compute import ComputeModel
    from meshcast.errors import MeshcastError

    eff = profile.efficiency
    try:
        used = ComputeModel.from_profile(profile, precision).matmul
    except MeshcastError:  # no peak for the precision: predict has already said so
        return "its efficiency is the profile's matmul curve"
    # the most specific curve first: the compute model falls back from fp4 to fp8 to matmul
    curve = next((n for n in reversed(_CURVE_PRECISION) if getattr(eff, n) is used), "matmul")
    values = {v.term: v for v in profile.fit.values}
    prov = ""
    if (v := values.get(curve)) is not None:
        prov = {"own": f", fitted on {v.rows} rows", "assumed": ", assumed"}.get(
            v.basis, f", itself from {v.borrowed_from or v.basis}")
    if _CURVE_PRECISION[curve] == precision:
        return f"its efficiency is the {curve} curve's{prov}, not fitted to any {precision} run"
    return (f"its efficiency is borrowed from the {_CURVE_PRECISION[curve]} matmul curve "
            f"`{curve}`{prov}")
