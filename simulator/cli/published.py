"""``meshcast validate --published FILE.csv`` and ``meshcast fit --published FILE.csv``.

validate: fit the file (pooled along the hardware lineage) and forecast each group (hardware,
model, source: ``--cv``, all three by default) with values fitted on the others; print measured vs
forecast, the error summaries, the intervals' coverage and the skipped rows with their reasons.
With ``--profiles DIR`` / ``--profile YAML`` (or ``--cv none``) it forecasts every row with the
profiles as given instead, e.g. the fitted ones on runs they never saw.
fit: the same fit, written as one fitted profile per built-in profile into ``--out DIR`` (chips
with no row transferred), with ``fit_report.json`` (values, provenance, variance components,
cross-validated summaries, coverage, the CSV's sha256) and ``fit_predictions.csv`` beside them.
``--hardware NAME --out FILE.yaml`` writes that one profile only.
"""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import date
from pathlib import Path

from meshcast.errors import MeshcastError
from meshcast.out_dir import output_dir

_FITTED = "a directory for the fitted profiles"

CV_CHOICES = ("hardware", "model", "source", "all", "none")


def add_validate_args(va) -> None:
    va.add_argument("--published", help="a CSV with the columns of published_runs.csv; "
                    "omitted: give --calibration instead")
    from simulator.cli import args as cli_args

    va.add_argument("--plot", type=cli_args.output_file("--plot", ".png"),
                    help="--published: write a predicted-vs-measured log-log plot here "
                    "(default: no plot)")
    va.add_argument("--fit", action="store_true", help="--published: same as --cv all")
    va.add_argument("--cv", choices=CV_CHOICES, help="--published: fit on every other group of "
                    "this kind and forecast the held-out one; all (the default): the three, "
                    "hardware first; none: forecast with the profiles as given (the default "
                    "with --profiles or --profile)")
    va.add_argument("--profile", action="append", default=[],
                    help="--published: a profile YAML replacing the built-in one of its name; "
                    "--calibration: the profile to validate (default DIR/profile.yaml)")
    va.add_argument("--moe-host-issue-s", type=cli_args.host_seconds, default=None,
                    metavar="SECONDS",
                    help="--published: host seconds per eager dropless-MoE op for every row "
                    "(default 0)")
    from simulator.cli.search import add_profiles_arg

    add_profiles_arg(va, shipped_fit=False)


def add_fit_args(fi) -> None:
    fi.add_argument("--published", help="fit to a published-runs CSV instead of raw.csv "
                    "(default: fit the calibration DIRECTORY's raw.csv)")
    fi.add_argument("--hardware", help="--published: write only this profile (name, alias or "
                    "YAML) to --out FILE.yaml; default: every profile into --out DIR")


def _cases(path: str, profiles: dict, host_s: float | None = None):
    from simulator.published import read_cases

    if host_s is not None and host_s < 0:
        raise MeshcastError(f"moe-host-issue-s: {host_s} is negative; give seconds >= 0")
    cases, skipped = read_cases(path, profiles, **({} if host_s is None else
                                                   {"moe_host_issue_s": host_s}))
    if not cases:
        raise MeshcastError(f"published: no row of {path} could be mapped to a job; "
                            f"first reason: {skipped[0].reason}")
    return cases, skipped


def _profiles(paths: list[str]) -> dict:
    from hardware_profiles import load_profile_file

    out = {}
    for p in paths:
        prof = load_profile_file(p)
        out[prof.name] = prof
    return out


def _keys(a) -> list[str]:
    """The cross-validation schemes asked: ``--cv``; else all three, unless the profiles to
    forecast with were given (``--profiles``/``--profile``), which are then used as they are."""
    cv = a.cv or ("all" if a.fit or not (a.profiles or a.profile) else "none")
    if cv == "all":
        return ["hardware", "model", "source"]
    return [] if cv == "none" else [cv]


def cmd_validate(a) -> int:
    from simulator.cli.search import profiles_of

    with profiles_of(a):
        return _validate(a)


def _validate(a) -> int:
    from simulator.published import evaluate, summarize
    from simulator.published.fit import TERM_SHARE, by_term
    from simulator.published.report import format_cv, format_report, format_terms, report_json

    cases, skipped = _cases(a.published, _profiles(a.profile), a.moe_host_issue_s)
    keys = _keys(a)
    extra: dict = {}
    cv = None
    if keys:
        fr, cv, cover = _fit_and_cv(cases, keys)
        results, header = cv[keys[0]], f"held out by {keys[0]}"
        extra = {"cv": {k: {"summary": summarize(v), "by_term": by_term(fr, v),
                            "rows": [r.as_dict() for r in v]} for k, v in cv.items()},
                 "coverage": cover, "in_sample_summary": summarize(fr.in_sample),
                 "variance_components": _variances(fr)}
    else:
        results, header = evaluate(cases), "profiles as given, not fitted to this file"
        extra = {"coverage": _given_coverage(cases, results)}
    summary = summarize(results)
    if a.plot:
        from simulator.published.plot import plot_predicted_vs_measured

        plot_predicted_vs_measured(results, a.plot, f"meshcast vs {Path(a.published).name} "
                                   f"({header}; bars: 80% intervals)", _bands(cases, results, cv))
    if a.json:
        from simulator.cli.args import dumps_json

        print(dumps_json({**report_json(results, summary, skipped), **extra}, "validate"))
        return 0
    text = format_report(a.published, results, summary, skipped, header)
    if keys:
        terms = format_terms(extra["cv"][keys[0]]["by_term"])
        text += (f"rows that lean on each fitted term (|d log T / d log value| >= {TERM_SHARE}), "
                 f"held out by {keys[0]}:\n" + "\n".join(terms) + "\n\n"
                 + format_cv(extra["cv"], cover, keys[1:]))
    elif extra["coverage"]["n"]:
        c = extra["coverage"]
        text += (f"\ninterval coverage (the profiles' own 80% bands): {100 * c['covered']:.0f}% "
                 f"of {c['n']} rows\n")
    print(text, end="")
    return 0


def _fit_and_cv(cases, keys: list[str]):
    """The fit on every case, its cross-validation per key, and the intervals' coverage (which
    needs the hardware and model folds, run whether or not they were asked)."""
    from simulator.cli.progress import Progress
    from simulator.published.fit import ITERATIONS, TOLERANCE, cross_validate, fit_published
    from simulator.published.intervals import coverage

    progress = Progress("fit")
    try:
        fr = fit_published(cases, log=progress)
        cv = {k: cross_validate(fr, k, progress) for k in dict.fromkeys(keys + ["hardware", "model"])}
    finally:
        progress.done()
    cover = coverage(cv)
    if fr.last_move >= TOLERANCE:
        print(f"warning: the fit did not settle in {ITERATIONS} passes (its last moved a value by "
              f"{100 * fr.last_move:.1f}% in log); its values are the last pass's",
              file=sys.stderr)
    return fr, {k: cv[k] for k in keys} | {k: v for k, v in cv.items() if k not in keys}, cover


def _bands(cases, results, cv: dict | None) -> list:
    """Each row's 80% interval: made without its hardware and fold (cross-validated ``cv``), or
    its profile's own band (``--profiles``)."""
    from simulator.published.intervals import interval_pool, nested_band

    if cv:
        pool = interval_pool(cv)
        return [nested_band(pool, r) for r in results]
    return [_profile_band(c) for c in cases]


def _profile_band(case):
    fit = case.job.hardware.fit
    return fit and (fit.interval_moe if case.job.model.is_moe else fit.interval_dense)


def _variances(fr) -> dict:
    p = fr.posterior
    return {"sigma": p.sigma, "tau_architecture": p.tau_arch, "tau_chip": p.tau_chip,
            "flop_byte_slope": p.beta, "last_pass_log_move": fr.last_move}


def _given_coverage(cases, results) -> dict:
    """Coverage of the profiles' own bands (fitted profiles from ``--profiles DIR``)."""
    from simulator.published.intervals import LEVEL, covered

    hits = [covered(r, b) for c, r in zip(cases, results) if (b := _profile_band(c))]
    return {"level": LEVEL, "n": len(hits),
            "covered": sum(hits) / len(hits) if hits else None}


def cmd_fit(a) -> int:
    from hardware_profiles import load_profile, save_profile
    from simulator.published import summarize
    from simulator.published.fit import by_term
    from simulator.published.fitted import fitted_profiles
    from simulator.published.intervals import interval_pool
    from simulator.published.report import format_cv

    cases, skipped = _cases(a.published, {})
    fr, cv, cover = _fit_and_cv(cases, ["hardware", "model", "source"])
    sums = {k: {"summary": summarize(v), "by_term": by_term(fr, v)} for k, v in cv.items()}
    sha = hashlib.sha256(Path(a.published).read_bytes()).hexdigest()[:16]
    held = sums["hardware"]["summary"]
    source = (f"fitted {date.today().isoformat()} to {len(cases)} published runs in "
              f"{Path(a.published).name} (sha256 {sha}) by meshcast fit --published; held out "
              f"by hardware median |error| {100 * held['median_abs_error']:.1f}%")
    profiles = fitted_profiles(fr, interval_pool(cv), source)
    out = Path(a.out)
    if a.hardware:
        name = load_profile(a.hardware).name
        path = out if out.suffix in (".yaml", ".yml") else output_dir(out, _FITTED) / f"{name}.yaml"
        written = {name: save_profile(profiles[name], path)}
        report_dir = path.parent
    else:
        if out.suffix in (".yaml", ".yml"):
            raise MeshcastError(f"out: {out} is a YAML file; fit --published writes every profile "
                                "into a directory (or add --hardware NAME for one file)")
        where = output_dir(out, _FITTED)
        written = {n: save_profile(p, where / f"{n}.yaml") for n, p in profiles.items()}
        report_dir = out
    _write_predictions(fr, cv, report_dir / "fit_predictions.csv")
    report = {"published": str(a.published), "sha256": sha, "rows": len(cases),
              "skipped": len(skipped), "variance_components": _variances(fr),
              "profiles": {n: p.fit.model_dump(mode="json") for n, p in profiles.items()},
              "in_sample": summarize(fr.in_sample),
              "cv": {k: v["summary"] for k, v in sums.items()},
              "by_term": {k: v["by_term"] for k, v in sums.items()}, "coverage": cover}
    (report_dir / "fit_report.json").write_text(json.dumps(report, indent=2, allow_nan=False))
    print(format_cv(sums, cover, list(cv)), end="")
    for name, path in written.items():
        print(f"wrote {path}  ({profiles[name].fit.basis}: {profiles[name].fit.basis_detail})")
    return 0


def _write_predictions(fr, cv: dict, path: Path) -> None:
    import csv

    keys = list(cv)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "model", "hardware", "kind", "measured_step_time_s",
                    "in_sample_predicted_s"] + [f"held_out_by_{k}_predicted_s" for k in keys]
                   + [f"held_out_by_{k}_distance" for k in keys])
        for i, r in enumerate(fr.in_sample):
            w.writerow([r.id, r.model, r.hardware, r.kind, r.measured_step_time_s,
                        r.predicted_step_time_s] + [cv[k][i].predicted_step_time_s for k in keys]
                       + [cv[k][i].distance for k in keys])
