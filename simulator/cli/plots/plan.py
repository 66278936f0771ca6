"""Capacity planning pictures from ``simulator.analysis.plan.plan``: time vs chips, cost front."""

from __future__ import annotations

from matplotlib.ticker import FormatStrFormatter

from simulator.analysis.interval import interval_of
from simulator.cli.plots.common import colour, figure, legend
from simulator.cli.report import tokens_text


def plot_plan(res):
    """Left: days to train the budget against chips, one line per hardware (log-log; shaded:
    the forecast interval where the profile was fitted). Right:
    cost against days for every feasible (hardware, chips), the Pareto front joined."""
    fig, (tline, cost) = figure(12, 4.5, 1, 2)
    hws = list(dict.fromkeys(e.hardware for e in res.entries))
    for i, hw in enumerate(hws):
        ok = sorted((e for e in res.entries if e.hardware == hw and e.ok), key=lambda e: e.chips)
        if not ok:
            continue
        tline.plot([e.chips for e in ok], [e.budget.days for e in ok], "o-", color=colour(hw, i),
                   label=hw)
        ivs = [(e, iv) for e in ok if (iv := interval_of(e.best.prediction)).exists]
        if ivs:  # the step's interval carries over to the days (days are steps x step time)
            bands = [iv.scaled(e.budget.days, e.budget.step_time_s) for e, iv in ivs]
            tline.fill_between([e.chips for e, _ in ivs], [b[0] for b in bands],
                               [b[1] for b in bands], color=colour(hw, i), alpha=0.2, lw=0,
                               label=f"{hw}: {ivs[0][1].label}")
        priced = [e for e in ok if e.budget.cost_usd is not None]
        cost.scatter([e.budget.days for e in priced], [e.budget.cost_usd / 1e3 for e in priced],
                     color=colour(hw, i), label=hw)
        for e in priced:
            cost.annotate(str(e.chips), (e.budget.days, e.budget.cost_usd / 1e3), fontsize=6,
                          xytext=(3, 3), textcoords="offset points")
    if res.deadline_days:
        tline.axhline(res.deadline_days, color="grey", ls=":", label=f"deadline {res.deadline_days:g} d")
    front = res.pareto
    cost.plot([e.budget.days for e in front], [e.budget.cost_usd / 1e3 for e in front], "k--",
              lw=1, label="Pareto front")
    tline.set_xscale("log", base=2)
    tline.set_yscale("log")
    chips = sorted({e.chips for e in res.entries})
    tline.set_xticks(chips, [str(c) for c in chips])
    tline.set_xlabel("chips")
    tline.set_ylabel("days to train")
    tline.set_title(f"{res.model}: {tokens_text(res.tokens)} tokens", fontsize=10)
    legend(tline)
    cost.set_xscale("log")
    cost.set_xlabel("days to train")
    cost.set_ylabel("cost (k$, profile prices UNVERIFIED)")
    cost.set_title("cost vs time (labels: chips)", fontsize=10)
    legend(cost)
    for axis in (tline.yaxis, cost.xaxis):
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(FormatStrFormatter("%g"))
    return fig
