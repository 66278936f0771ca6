"""``meshcast validate --published FILE.csv`` and ``meshcast fit --published FILE.csv``.

validate: forecast every row the built-in (or ``--profile``) hardware profiles can map, print
measured vs forecast, the error summary and the skipped rows with their reasons; ``--fit`` also
fits per-family matmul efficiencies on the file (in-sample) and forecasts each model with the
values fitted on the other models (held out), which becomes the per-row report.
fit: the same fit for one hardware profile, written as a profile YAML, beside it
``<out>.fit_predictions.csv`` (measured, in-sample and held-out forecast per row) and
``<out>.fit_report.json`` (fitted values, in-sample and held-out summaries, the CSV's sha256).
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

from simulator.errors import MeshcastError


def add_validate_args(va) -> None:
    va.add_argument("--published", help="a CSV with the columns of published_runs.csv")
    va.add_argument("--plot", help="--published: write a predicted-vs-measured log-log plot here")
    va.add_argument("--fit", action="store_true", help="--published: also fit per-family matmul "
                    "efficiencies; report in-sample and held out by model")
    va.add_argument("--profile", action="append", default=[],
                    help="--published: a profile YAML replacing the built-in one of its name")
    va.add_argument("--moe-host-issue-s", type=float, default=None, metavar="SECONDS",
                    help="--published: host seconds per eager dropless-MoE op for every row "
                    "(default 0; --fit-host fits it)")
    va.add_argument("--fit-host", action="store_true", help="--published --fit: also fit one "
                    "host issue time per eager dropless-MoE op, across all families")


def add_fit_args(fi) -> None:
    fi.add_argument("--published", help="fit to a published-runs CSV instead of raw.csv")
    fi.add_argument("--hardware", help="--published: the profile to fit (name, alias or YAML)")
    fi.add_argument("--fit-host", action="store_true", help="--published: also fit the host "
                    "issue time per eager dropless-MoE op (printed; predict takes it as "
                    "--moe-host-issue-s)")


def _cases(path: str, profiles: dict, host_s: float | None = None):
    from simulator.published import read_cases

    if host_s is not None and host_s < 0:
        raise MeshcastError(f"moe-host-issue-s: {host_s} is negative; give seconds >= 0")
    return read_cases(path, profiles, **({} if host_s is None else {"moe_host_issue_s": host_s}))


def _profiles(paths: list[str]) -> dict:
    from hardware_profiles import load_profile_file

    out = {}
    for p in paths:
        prof = load_profile_file(p)
        out[prof.name] = prof
    return out


def cmd_validate(a) -> int:
    from simulator.published import evaluate, summarize
    from simulator.published.report import format_report, format_summary, report_json

    if a.fit_host and not a.fit:
        raise MeshcastError("fit-host: fits only with --fit; add --fit")
    cases, skipped = _cases(a.published, _profiles(a.profile), a.moe_host_issue_s)
    if not cases:
        raise MeshcastError(f"published: no row of {a.published} could be mapped to a job; "
                            f"first reason: {skipped[0].reason}")
    extra: dict = {}
    if a.fit:
        fr = _fit_with_progress(cases, a.fit_host)
        results, header = fr.held_out, "held out by model"
        extra = {"in_sample_summary": summarize(fr.in_sample), "fitted": fr.values_table(),
                 "fitted_moe_host_issue_s": fr.host_issue_s}
    else:
        results, header = evaluate(cases), "profiles as built in; --fit fits them, held out by model"
    summary = summarize(results)
    if a.plot:
        from simulator.published.plot import plot_predicted_vs_measured

        plot_predicted_vs_measured(results, a.plot, f"meshcast vs {Path(a.published).name} ({header})")
    if a.json:
        print(json.dumps({**report_json(results, summary, skipped), **extra}, indent=2))
        return 0
    text = format_report(a.published, results, summary, skipped, header)
    if a.fit:
        text += "\n" + "\n".join(format_summary(extra["in_sample_summary"], "summary (in-sample)"))
        text += "\n"
        text += "fitted:\n" + "".join(f"  {x}\n" for x in fr.describe())
    print(text, end="")
    return 0


def cmd_fit(a) -> int:
    from hardware_profiles import load_profile, save_profile
    from simulator.published.fit import fitted_profiles
    from simulator.published.report import format_summary
    from simulator.published.summary import summarize

    if not a.hardware:
        raise MeshcastError("hardware: fit --published needs --hardware NAME (the profile to fit)")
    base = load_profile(a.hardware)
    cases, _ = _cases(a.published, {base.name: base})
    mine = [c for c in cases if c.job.hardware.name == base.name]
    if not mine:
        seen = sorted({c.job.hardware.name for c in cases})
        raise MeshcastError(f"hardware: no row of {a.published} maps to {base.name}; rows map to "
                            f"{', '.join(seen) or 'nothing'}")
    fr = _fit_with_progress(mine, a.fit_host)
    ins, held = summarize(fr.in_sample), summarize(fr.held_out)
    sha = hashlib.sha256(Path(a.published).read_bytes()).hexdigest()[:16]
    source = (f"fitted {date.today().isoformat()} to {len(mine)} published runs in "
              f"{Path(a.published).name} (sha256 {sha}) by meshcast fit --published; median "
              f"|error| in-sample {100 * ins['median_abs_error']:.1f}%, held out by model "
              f"{100 * held['median_abs_error']:.1f}%")
    prof = fitted_profiles({base.name: base}, fr.values, source)[base.name]
    save_profile(prof, a.out)
    _write_predictions(fr, Path(a.out).with_suffix(".fit_predictions.csv"))
    report = {"published": str(a.published), "sha256": sha, "hardware": base.name,
              "fitted": fr.values_table(), "fitted_moe_host_issue_s": fr.host_issue_s,
              "in_sample": ins, "held_out_by_model": held}
    Path(a.out).with_suffix(".fit_report.json").write_text(json.dumps(report, indent=2))
    print("\n".join(format_summary(ins, "summary (in-sample)")
                     + format_summary(held, "summary (held out by model)")))
    for x in fr.describe():
        print(f"fitted: {x}")
    if fr.host_issue_s is not None:
        print(f"the host issue time is a framework setting, not a profile value: pass "
              f"--moe-host-issue-s {fr.host_issue_s:.3g} to predict for eager dropless MoE")
    print(a.out)
    return 0


def _fit_with_progress(cases, fit_host: bool):
    from simulator.cli_progress import Progress
    from simulator.published.fit import fit_published

    progress = Progress("fit")
    try:
        return fit_published(cases, progress, fit_host=fit_host)
    finally:
        progress.done()


def _write_predictions(fr, path: Path) -> None:
    import csv

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "model", "hardware", "measured_step_time_s", "in_sample_predicted_s",
                    "held_out_predicted_s", "held_out_error"])
        for a, b in zip(fr.in_sample, fr.held_out):
            w.writerow([a.id, a.model, a.hardware, a.measured_step_time_s,
                        a.predicted_step_time_s, b.predicted_step_time_s, b.error])
