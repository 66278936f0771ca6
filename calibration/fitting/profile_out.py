"""Turn fits into a calibrated HardwareProfile (same schema as hardware_profiles/) and files.

Written beside the profile: ``fit_report.json`` (every group's parameters and errors, the
hashes of the raw rows and of the profile) and ``fit_predictions.csv`` (predicted vs measured per
size, held-out flagged). The profile's sources say ``calibrated <date> from raw rows
sha256:<hash>`` with the held-out error.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from calibration.fitting.files import PREDICTIONS_NAME, REPORT_NAME, file_sha256
from calibration.fitting.fit import GroupFit
from calibration.fitting.fit_context import GROUP as CONTEXT_GROUP
from calibration.levels import ACROSS_HOSTS, WITHIN_HOST
from hardware_profiles import save_profile
from hardware_profiles.schema import HardwareProfile
from meshcast.errors import MeshcastError, from_validation_error


def _src(date: str, digest: str, fit: GroupFit | None = None) -> str:
    s = f"calibrated {date} from raw rows sha256:{digest[:16]}"
    if fit is not None and not math.isnan(fit.held_out_error):
        s += (f"; held-out median error {100 * fit.held_out_error:.1f}% "
              f"(in-sample {100 * fit.in_sample_error:.1f}%), sizes {fit.size_range[0]:.3g}"
              f"..{fit.size_range[1]:.3g}")
    return s


def calibrated_profile(launch: float, fits: dict[str, GroupFit], digest: str, meta: dict,
                       base: HardwareProfile | None = None) -> HardwareProfile:
    """A profile whose matmul/memory curves, launch cost and (host) network come from the fit.

    With ``base`` the datasheet peaks stay and ``max_efficiency = fitted rate / peak`` (capped at
    1); without it (a CPU host) the fitted rates are the peaks and ``max_efficiency`` is 1.
    """
    date = dt.date.today().isoformat()
    if base is None:
        _require_fits(launch, fits, meta)
    mm, ew = fits.get("matmul"), fits.get("elementwise")
    raw = base.model_dump(mode="json") if base else _host_skeleton(meta)
    chip = raw["chip"]
    chip["launch_overhead_s"] = {"value": max(launch, 1e-9), "source": _src(date, digest)}
    if mm:
        peak = chip["peak_flops_per_s"]["bf16"]["value"] if base else mm.params["rate"]
        if not base:  # measured in the run's dtype (float32 on CPU); both keys carry it
            src = _src(date, digest, mm) + f"; measured in {meta.get('dtype', 'float32')}"
            chip["peak_flops_per_s"] = {"bf16": {"value": peak, "source": src},
                                        "fp32": {"value": peak, "source": src}}
        raw["efficiency"]["matmul"] = _curve(mm, peak, _src(date, digest, mm))
    if ew:
        # the memory curve is what a step's elementwise ops achieve, measured in context (whole
        # layers and heads), else streaming
        ctx = fits.get(CONTEXT_GROUP)
        lay = ctx if ctx is not None and not ctx.not_used else ew
        bw = chip["hbm_bandwidth_bytes_per_s"]["value"] if base else \
            max(ew.params["rate"], lay.params["rate"])
        in_context = lay is not ew
        if not base:  # a host's "HBM" is its best measured streaming rate
            chip["hbm_bandwidth_bytes_per_s"] = {"value": bw, "source": _src(date, digest, ew) + (
                "; the faster of streaming and in-context" if in_context else "")}
        raw["efficiency"]["memory"] = _curve(lay, bw, _src(date, digest, lay) + (
            "; elementwise ops fitted inside the reference layer and head (GEMM and attention "
            "terms held at their curves), simulator byte units" if in_context else ""))
    ga = fits.get("gather")
    if ga:
        raw["efficiency"]["gather"] = _curve(
            ga, chip["hbm_bandwidth_bytes_per_s"]["value"], _src(date, digest, ga)
            + "; embedding lookup and scatter-add gradient, simulator byte units")
    at = fits.get("attention")
    if at:
        peaks = chip["peak_flops_per_s"]
        peak = (peaks["bf16"] if base else peaks.get("fp32", peaks["bf16"]))["value"]
        raw["efficiency"]["attention"] = _curve(
            at, peak, _src(date, digest, at) + "; forward+backward of the reference attention, "
            "simulator FLOP units")
    _network(raw, fits, meta, date, digest, base is not None)
    raw["name"] = (base.name if base else "host") + "-calibrated"
    hosts = int(meta.get("n_hosts", 1))
    raw["notes"] = (raw.get("notes", "") + f"\nCalibrated {date} on {meta['n_devices']} "
                    f"{meta['device_kind']} devices" + (f" over {hosts} hosts" if hosts > 1 else "")
                    + f" ({meta['backend']}, jax {meta['jax_version']})"
                    f"; raw rows sha256:{digest}. Per-collective fits: fit_report.json.").strip()
    raw["aliases"] = []
    try:
        return HardwareProfile.model_validate(raw)
    except ValidationError as e:  # a fitted figure the schema refuses: never written, never hidden
        raise MeshcastError(
            f"{from_validation_error(e, 'fit')}: the rows are too noisy to fit "
            "(the profile is not written); measure again on a quiet host, or "
            "with `MESHCAST_CLOCK=process meshcast calibrate ...` (this process's CPU time, "
            "which other processes' load barely moves)") from None


def _require_fits(launch: float, fits: dict[str, GroupFit], meta: dict) -> None:
    """Without a base profile every figure of the host profile is fitted, none left at the
    skeleton's placeholders: a MeshcastError names the groups with no fit."""
    missing = [g for g in ("matmul", "attention", "elementwise") if g not in fits]
    if launch <= 0:
        missing.insert(0, "launch")
    if int(meta.get("n_devices", 1)) > 1 and not any(g.startswith("collective") for g in fits):
        missing.append("collective")
    if missing:
        raise MeshcastError(f"fit: no fit for {', '.join(missing)} (too few cases measured); "
                            "a profile is not written with placeholder values; complete the "
                            "calibration with `meshcast calibrate ... --resume`")


def _curve(fit: GroupFit, peak: float, source: str) -> dict:
    """An efficiency curve from a throughput fit: ``max_efficiency = rate / peak`` (capped at 1)."""
    return {"max_efficiency": min(1.0, fit.params["rate"] / peak),
            "half_saturation": fit.params["half_saturation"], "source": source,
            "calibrated_range": list(fit.size_range)}


def _host_network(coll: list[GroupFit], date: str, digest: str,
                  link: float | None = None) -> dict:
    """One level from its per-(kind, axis) collective fits: link bandwidth = the best kind's
    bandwidth (median over axes); each kind keeps its own efficiency (its bandwidth over the
    link's) and latency, since e.g. all-to-all runs well below ring all-reduce. With ``link`` (a
    datasheet's bandwidth, kept) the level's efficiency is the best kind's share of it instead."""
    by_kind: dict[str, list[GroupFit]] = {}
    for f in coll:
        by_kind.setdefault(f.group.split(":")[1], []).append(f)
    bw = {k: float(np.median([f.params["bandwidth_bytes_per_s"] for f in fs]))
          for k, fs in by_kind.items()}
    lat = {k: float(np.median([f.params["latency_s"] for f in fs])) for k, fs in by_kind.items()}
    src = _src(date, digest)
    out = {"latency_s": {"value": max(float(np.median(list(lat.values()))), 1e-9),
                         "source": src + f"; median over {len(lat)} kinds"}}
    if link is None:
        link = max(bw.values())
        out["link_bandwidth_bytes_per_s"] = {"value": link,
                                             "source": src + "; best collective kind"}
    else:
        out["efficiency"] = {"value": min(1.0, max(bw.values()) / link),
                             "source": src + "; best collective kind / datasheet link"}
    out["collectives"] = {k: {"efficiency": {"value": min(1.0, bw[k] / link), "source": src
                                             + f"; {k} bandwidth / link, median over "
                                             f"{len(by_kind[k])} axes"},
                              "latency_s": {"value": max(lat[k], 1e-9), "source": src}}
                          for k in sorted(bw)}
    return out


#: The fitted host profile's level across hosts (:data:`calibration.levels.ACROSS_HOSTS`):
#: InfiniBand, DCN or loopback, a switched network with full bisection as far as it is modelled.
ACROSS_KIND = "fat_tree"


def _network(raw: dict, fits: dict[str, GroupFit], meta: dict, date: str, digest: str,
             with_base: bool) -> None:
    """Write the fitted collectives into ``raw["network"]``, level by level.

    One host (every group within it): a host profile's single level gets them, sized to the
    devices (as before multi-host runs); a base profile's network is left as its datasheet says.
    Several hosts: the groups within a host give the innermost level and those across hosts the
    outermost. A host profile is then ``host`` (devices per host) x ``cross_host`` (the hosts
    measured), the topology the run had; a base profile keeps its levels, sizes and link
    bandwidths, and gets each level's measured efficiency, per-kind efficiency and latency."""
    coll = [f for g, f in fits.items() if g.startswith("collective") and "+" not in f.level]
    within = [f for f in coll if f.level != ACROSS_HOSTS]
    across = [f for f in coll if f.level == ACROSS_HOSTS]
    if not across:
        if coll and not with_base:
            raw["network"][0].update(_host_network(coll, date, digest))
        return
    if with_base:
        net = raw["network"]
        if within:
            net[0].update(_host_network(within, date, digest,
                                        net[0]["link_bandwidth_bytes_per_s"]["value"]))
        net[-1].update(_host_network(across, date, digest,
                                     net[-1]["link_bandwidth_bytes_per_s"]["value"]))
        return
    hosts = int(meta.get("n_hosts", 1))
    per_host = max(1, int(meta["n_devices"]) // hosts)
    outer = _host_network(across, date, digest)
    inner = _host_network(within, date, digest) if within else dict(
        outer, latency_s={"value": outer["latency_s"]["value"], "source": "no two devices share "
                          "a host: not measured, the cross-host latency"})
    raw["network"][0].update(inner, size=per_host)
    raw["network"].append({"name": ACROSS_HOSTS, "kind": ACROSS_KIND, "size": hosts, **outer,
                           "efficiency": {"value": 1.0,
                                          "source": "folded into the fitted bandwidth"}})


def level_report(fits: dict[str, GroupFit]) -> dict:
    """Per network level (and ``host+cross_host``, the groups spanning both, predicted from the
    two): its collective groups, the median and largest held-out error over their held-out
    sizes, and the median in-sample error."""
    by: dict[str, list[GroupFit]] = {}
    for g, f in fits.items():
        if g.startswith("collective"):
            by.setdefault(f.level or WITHIN_HOST, []).append(f)
    out = {}
    for level, fs in sorted(by.items()):
        held = [abs(p - m) / m for f in fs for _, m, p, h in f.predictions if h]
        ins = [f.in_sample_error for f in fs if not math.isnan(f.in_sample_error)]
        out[level] = {"groups": [f.group for f in fs],
                      "held_out_median_abs_error": float(np.median(held)) if held else None,
                      "held_out_max_abs_error": float(max(held)) if held else None,
                      "in_sample_median_abs_error": float(np.median(ins)) if ins else None,
                      **({"predicted_from": [WITHIN_HOST, ACROSS_HOSTS],
                          "note": "not fitted: every size predicted from the two fitted levels "
                                  "with the hierarchical collective"} if "+" in level else {})}
    return out


def profile_from_rows(rows: list[dict], base: HardwareProfile | None = None):
    """Fit ``rows`` and build the calibrated profile: (profile, launch, fits, rows sha256)."""
    from calibration.fitting.fit import fit_hierarchical, fit_points, is_hierarchical, medians
    from calibration.fitting.fit_context import fit_context
    from calibration.raw import rows_hash

    pts = medians(rows)
    launch, fits = fit_points(pts)
    meta = {k: rows[0][k] for k in ("backend", "device_kind", "n_devices", "jax_version", "dtype")}
    meta["n_hosts"] = max(int(r.get("n_hosts", 1)) for r in rows)
    digest = rows_hash(rows)
    profile = calibrated_profile(launch, fits, digest, meta, base)
    ctx = fit_context(pts, profile, launch)
    if ctx is not None:  # second pass: the memory curve from whole layers and heads
        fits[CONTEXT_GROUP] = ctx
        if not ctx.not_used:
            profile = calibrated_profile(launch, fits, digest, meta, base)
    if len(profile.network) > 1 and any(is_hierarchical(p) for p in pts):
        from simulator.cost.topology import job_levels

        try:  # the levels as a job of the run's size sees them (a base profile's sizes may differ)
            levels = job_levels(profile, int(meta["n_devices"]))
        except MeshcastError:
            levels = None
        if levels is not None and len(levels) > 1:
            fits.update(fit_hierarchical(pts, (levels[0], levels[-1])))
    return profile, launch, fits, digest


def _host_skeleton(meta: dict) -> dict:
    # every entry below is overwritten by a fit; calibrated_profile refuses (_require_fits)
    # rather than let one reach a profile
    one = {"value": 1.0, "source": "replaced by the fit"}
    curve = {"max_efficiency": 1.0, "half_saturation": 0.0, "source": "replaced by the fit"}
    hosts = int(meta.get("n_hosts", 1))
    over = f", {hosts} hosts x {int(meta['n_devices']) // hosts}" if hosts > 1 else ""
    return {"name": "host", "display_name": f"{meta['device_kind']} x {meta['n_devices']} "
            f"({meta['backend']}{over}) as calibrated",
            "chip": {"name": str(meta["device_kind"]), "vendor": "other",
                     "peak_flops_per_s": {"bf16": one}, "hbm_capacity_bytes":
                     {"value": 16e9, "source": "not measured: a nominal host share"},
                     "hbm_bandwidth_bytes_per_s": one, "launch_overhead_s": one,
                     # a CPU host's collectives are memory copies on the compute cores
                     "collectives_use_compute": meta["backend"] == "cpu"},
            "efficiency": {"matmul": curve, "attention": dict(curve, source=
                           "not calibrated yet: matmul-like default"), "memory": curve},
            "network": [{"name": "host", "kind": "switch", "size": int(meta["n_devices"]),
                         "link_bandwidth_bytes_per_s": one, "latency_s": one,
                         "efficiency": {"value": 1.0, "source": "folded into the fitted bandwidth"}}]}


def write_outputs(profile: HardwareProfile, out: Path, launch: float,
                  fits: dict[str, GroupFit], digest: str, raw: Path) -> None:
    """The profile YAML at ``out``, and beside it the report (every group's parameters and
    errors, the raw rows' path and sha256, the profile's sha256) and the predictions."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MeshcastError(f"out: cannot create {out.parent}: {e.strerror}") from None
    save_profile(profile, out)
    report = {"raw": str(raw), "raw_sha256": digest, "profile": out.name,
              "profile_sha256": file_sha256(out), "launch_overhead_s": launch,
              "groups": {g: {"params": f.params, "in_sample_median_abs_error": f.in_sample_error,
                             "held_out_median_abs_error": f.held_out_error,
                             "held_out_max_abs_error": f.max_held_out_error,
                             "size_range": list(f.size_range),
                             **({"level": f.level} if f.level else {}),
                             **({"not_used": f.not_used} if f.not_used else {})}
                         for g, f in fits.items()},
              "levels": level_report(fits)}
    (out.parent / REPORT_NAME).write_text(json.dumps(report, indent=2))
    with open(out.parent / PREDICTIONS_NAME, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["group", "size", "measured_s", "predicted_s", "held_out"])
        for g, f in fits.items():
            w.writerows([g, *row] for row in f.predictions)
