"""Accuracy against published training runs, out of sample (issue 13): meshcast's forecast of
every mappable row of ``benchmarks/data/published_runs.csv`` with the built-in profiles, then
fitted (pooled along the hardware lineage) and held out by hardware (the headline: a chip nobody
measured), by model and by source; the 80% intervals' coverage; rows skipped with reasons.
Run with `make bench` or
`pytest benchmarks/bench_published.py -m benchmark -s`."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from simulator.published import evaluate, read_cases, read_rows, summarize
from simulator.published.fit import by_term, cross_validate, fit_published
from simulator.published.intervals import coverage
from simulator.published.report import format_cv, format_rows, format_skipped, format_summary

DATA = Path(__file__).resolve().parent / "data" / "published_runs.csv"
#: (scheme, kind, limit on the median |error|), and the p90 limit per scheme, from the issue.
MEDIANS = (("hardware", "dense", 0.15), ("hardware", "moe", 0.20),
           ("model", "dense", 0.10), ("model", "moe", 0.15))
P90 = {"hardware": 0.35}
COVERAGE = (0.75, 0.85)


def _targets(cv: dict, cover: dict) -> list[str]:
    out = []
    for key, kind, limit in MEDIANS:
        v = cv[key]["by_kind"][kind]["median_abs_error"]
        out.append(f"  held out by {key:8s} {kind:5s} median |error| {100 * v:5.1f}% "
                   f"(target <= {100 * limit:.0f}%): {'met' if v <= limit else 'NOT met'}")
    for key, limit in P90.items():
        v = cv[key]["p90_abs_error"]
        out.append(f"  held out by {key:8s} p90 |error| {100 * v:5.1f}% (target <= "
                   f"{100 * limit:.0f}%): {'met' if v <= limit else 'NOT met'}")
    c = cover["covered"]
    out.append(f"  80% interval coverage, held out by hardware: {100 * c:.0f}% of {cover['n']} "
               f"(target {100 * COVERAGE[0]:.0f}-{100 * COVERAGE[1]:.0f}%): "
               f"{'met' if COVERAGE[0] <= c <= COVERAGE[1] else 'NOT met'}")
    return out


@pytest.mark.benchmark
def test_published_runs_report():
    t0 = time.perf_counter()
    cases, skipped = read_cases(DATA)
    n_rows = len(read_rows(DATA))
    raw = summarize(evaluate(cases))
    fr = fit_published(cases)
    cv = {k: cross_validate(fr, k) for k in ("hardware", "model", "source")}
    cover = coverage(cv)
    sums = {k: summarize(v) for k, v in cv.items()}
    p = fr.posterior
    lines = [f"\nmeshcast vs {DATA.name}: {n_rows} rows, {len(cases)} forecast, "
             f"{len(skipped)} skipped ({time.perf_counter() - t0:.0f} s on this machine)", ""]
    lines += format_summary(raw, "built-in profiles (no fit)") + [""]
    lines += format_summary(summarize(fr.in_sample), "in-sample (fitted on every row)") + [""]
    lines += format_cv({k: {"summary": sums[k], "by_term": by_term(fr, cv[k])} for k in cv},
                       cover, list(cv)).splitlines() + [""]
    lines += ["targets:"] + _targets(sums, cover) + [""]
    lines += [f"variance components: sigma {p.sigma:.3f}, tau architecture {p.tau_arch:.3f}, "
              f"tau chip {p.tau_chip:.3f}, FLOP:byte slope {p.beta:+.3f}", "fitted (every row):"]
    for chip in sorted(fr.rows_by_chip):
        lines.append(f"  {chip:14s} " + "  ".join(f"{q} {v:.3f}"
                                                  for q, v in sorted(fr.values[chip].items())))
    lines += ["", "per row, held out by hardware:"] + format_rows(cv["hardware"]) + [""]
    lines += format_skipped(skipped)
    print("\n".join(lines))
    assert len(cases) + len(skipped) == n_rows  # every row forecast or listed with its reason
    assert all(len(v) == len(cases) for v in cv.values())

