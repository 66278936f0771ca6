"""Fitted profiles: every profile of a fit with its values, each value's provenance and the
interval bands at its transfer distance (:class:`hardware_profiles.schema.FitRecord`)."""

from __future__ import annotations

from hardware_profiles.schema import FitRecord, FittedValue, HardwareProfile
from simulator.published.fit import FitResult, distance
from simulator.published.hier import COVARIATE
from simulator.published.intervals import band
from simulator.published.terms import CURVES, quantities_of, value_of, with_values


def _value_basis(fr: FitResult, chip: str, q: str) -> tuple[str, str]:
    """``(basis, borrowed_from)`` of one value: the chip's own rows informed it, its
    architecture's, every chip's (with the FLOP:byte rule for compute terms), or none."""
    if q not in fr.posterior.informed:
        sd = fr.posterior.sd.get((chip, q))
        return "assumed", ("the prior: rows barely inform it" + (f" (log sd {sd:.2f})" if sd else ""))
    if q in fr.informed_by_chip.get(chip, set()):
        return "own", ""
    arch = fr.lineage.arch
    sibs = sorted(c for c, qs in fr.informed_by_chip.items()
                  if q in qs and c != chip and arch.get(c) == arch[chip])
    if sibs:
        return "architecture", f"architecture {arch[chip]} ({', '.join(sibs)})"
    rule = "; moved by the FLOP:byte rule" if q in COVARIATE else ""
    return "global", f"every measured chip{rule}"


def fitted_profile(fr: FitResult, chip: str, pool: list, source: str) -> HardwareProfile:
    """``chip``'s profile with its fitted values and its :class:`FitRecord`; ``pool`` holds the
    cross-validated rows the interval bands are made of."""
    prof = fr.profiles[chip]
    values = fr.values.get(chip, {})
    basis, detail = distance(chip, fr.rows_by_chip, fr.lineage.arch)
    out = with_values(prof, values, f"{source}; {detail}")
    entries = []
    for q in quantities_of(prof):
        basis_q, borrowed = _value_basis(fr, chip, q)
        if q not in values:  # not fitted: what the compute model will use (a fallback curve's)
            basis_q, borrowed = "assumed", _fallback(out, q)
        sd = fr.posterior.sd.get((chip, q)) if q in values else None
        entries.append(FittedValue(term=q, value=value_of(out, q), basis=basis_q,
                                   rows=fr.rows_by_chip.get(chip, 0) if basis_q == "own" else 0,
                                   borrowed_from=borrowed, log_sd=sd))
    arch = fr.lineage.arch[chip]
    record = FitRecord(source=source, basis=basis, basis_detail=detail, values=entries,
                       measured_precisions=sorted(fr.precisions_by_arch.get(arch, set())),
                       interval_dense=band(pool, basis, "dense"),
                       interval_moe=band(pool, basis, "moe"))
    return out.model_copy(update={"fit": record})


def _fallback(profile: HardwareProfile, q: str) -> str:
    """Where an unfitted value comes from: the curve the compute model falls back to, or the
    profile's own assumption."""
    if q in CURVES and (src := profile.efficiency.present(q)) != q:
        return f"the {src} curve (no row of this quantity anywhere)"
    return "the profile's own assumed value"


def fitted_profiles(fr: FitResult, pool: list, source: str) -> dict[str, HardwareProfile]:
    """Every profile of the fit (measured or not), fitted (:func:`fitted_profile`)."""
    return {c: fitted_profile(fr, c, pool, source) for c in sorted(fr.profiles)}
