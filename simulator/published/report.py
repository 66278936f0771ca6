"""Text and JSON reports of a published-runs validation."""

from __future__ import annotations

from simulator.published.evaluate import RowResult
from simulator.published.jobs import Skip


def _pct(x: float | None) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def _stats_line(name: str, s: dict) -> str:
    bias = "" if s["bias"] is None else f"{100 * s['bias']:+6.1f}%"
    return (f"  {name:30s} {s['n']:4d}  {_pct(s['median_abs_error'])}  {_pct(s['p90_abs_error'])}  "
            f"{bias}")


def format_rows(results: list[RowResult]) -> list[str]:
    out = [f"  {'id':38s} {'model':28s} {'hardware':14s} {'chips':>5s} {'measured s':>10s} "
           f"{'forecast s':>10s} {'error':>7s}  measured from"]
    for r in results:
        out.append(f"  {r.id:38s} {r.model[:28]:28s} {r.hardware:14s} {r.chips:5d} "
                   f"{r.measured_step_time_s:10.3f} {r.predicted_step_time_s:10.3f} "
                   f"{100 * r.error:+6.1f}%  {r.measured_from}")
    return out


def format_summary(summary: dict, title: str = "summary") -> list[str]:
    out = [f"{title}: {'':22s}    n  median|e|  p90|e|   bias (mean signed)",
           _stats_line("all", summary)]
    if summary.get("memory_not_fit"):
        out.append(f"  ({summary['memory_not_fit']} forecasts do not fit in memory: their runs "
                   "did, so an assumption of theirs is off; see each row's notes)")
    for key, label in (("by_kind", "kind"), ("by_hardware", "hardware"), ("by_source", "source")):
        for name, s in summary[key].items():
            out.append(_stats_line(f"{label} {name}", s))
    med = summary["spearman_median"]
    out.append(f"  rank agreement (Spearman, model+hardware groups with >= 3 configurations): "
               f"median {'-' if med is None else f'{med:.2f}'} over {summary['spearman_groups']} "
               f"groups, {summary['spearman_groups_at_least_0.8']} at >= 0.8")
    for name, rho in summary["spearman_by_group"].items():
        top = summary["spearman_ceiling_by_group"][name]
        out.append(f"    {name:40s} {rho:+.2f}" + ("" if top is None else
                                                  f"   (best reachable {top:+.2f})"))
    return out


def format_skipped(skipped: list[Skip]) -> list[str]:
    if not skipped:
        return []
    return [f"skipped ({len(skipped)}):"] + [f"  {s.id:38s} {s.model[:28]:28s} {s.reason}"
                                            for s in skipped]


def format_report(path: str, results: list[RowResult], summary: dict, skipped: list[Skip],
                  header: str = "") -> str:
    """The whole report: rows, summary, skipped rows with their reasons."""
    lines = [f"meshcast validate --published {path}: {len(results)} rows forecast, "
             f"{len(skipped)} skipped" + (f" ({header})" if header else ""),
             "  error = forecast / measured - 1 (positive: forecast slower than measured)", ""]
    title = f"summary ({header})" if header else "summary"
    lines += format_rows(results) + [""] + format_summary(summary, title) + [""]
    lines += format_skipped(skipped)
    return "\n".join(lines).rstrip() + "\n"


def report_json(results: list[RowResult], summary: dict, skipped: list[Skip]) -> dict:
    return {"rows": [r.as_dict() for r in results], "summary": summary,
            "skipped": [s.as_dict() for s in skipped]}


def format_terms(by_term: dict) -> list[str]:
    """One line per fitted term: the held-out error of the rows that lean on it."""
    return [_stats_line(f"term {q}", st) for q, st in by_term.items()]


def format_cv(cv: dict, cover: dict, keys: list[str]) -> str:
    """The summaries of the cross-validation schemes ``keys`` (each per group: its hardware,
    dense/MoE and source lines, Spearman within model+hardware groups, and per fitted term the
    rows that lean on it) and the coverage of the 80% intervals, nested by hardware."""
    lines = []
    for k in keys:
        lines += format_summary(cv[k]["summary"], f"held out by {k}")
        lines += format_terms(cv[k].get("by_term", {})) + [""]
    if cover["n"]:
        by = ", ".join(f"{d} {100 * v['covered']:.0f}% of {v['n']}"
                       for d, v in cover["by_distance"].items())
        lines.append(f"interval coverage (held out by hardware, {100 * cover['level']:.0f}% "
                     f"bands made without the row's hardware): {100 * cover['covered']:.0f}% of "
                     f"{cover['n']} rows ({by})")
    else:
        lines.append("interval coverage: no row could be judged (a band needs held-out rows of "
                     "another hardware at the same distance)")
    return "\n".join(lines).rstrip() + "\n"
