"""``meshcast compare --plot``: step times by part, the MoE increase by part, tokens per view."""

from __future__ import annotations

from simulator.analysis.attribution import PARTS
from simulator.analysis.decompose import INCREASE_PARTS
from simulator.analysis.interval import interval_of
from simulator.analysis.matched import VIEW_LABELS, VIEWS
from simulator.cli.plots.common import (colour, figure, interval_bars, legend, stacked_bars,
                                        token_unit)
from simulator.cli.report import tokens_text


def plot_comparison(c):
    """Three panels: (1) dense and MoE step times stacked by part (with their forecast intervals
    where the profile was fitted); (2) each MoE's increase over
    dense by part (percent of the dense step; the parts add up to the total marked); (3) tokens
    the dense and each MoE train under each yardstick."""
    fig, (steps, inc, tok) = figure(16, 4.6, 1, 3, width_ratios=[1, 1.2, 1])
    names = [c.dense.job.model.name] + [x.model.name for x in c.moes]
    parts = [c.dense_attribution.by_part] + [x.attribution["moe"].by_part for x in c.moes]
    stacked_bars(steps, names, parts, PARTS, horizontal=False)
    preds = [c.dense] + [x.prediction for x in c.moes]
    banded = [(n, iv) for n, p in zip(names, preds) if (iv := interval_of(p)).exists]
    if banded:  # each model's whole step with its forecast interval
        interval_bars(steps, [n for n, _ in banded], [iv for _, iv in banded], ecolor="black",
                      capsize=4)
    steps.set_ylabel("step time (s)")
    steps.set_title(f"{c.dense.job.hardware.name} x {c.dense.job.chips}: step time by part",
                    fontsize=10)
    legend(steps, 6)
    width = 0.8 / len(c.moes)
    keys = [k for k in INCREASE_PARTS if any(abs(x.increase.parts_s[k]) > 1e-12 for x in c.moes)]
    for j, x in enumerate(c.moes):
        d = x.increase.dense_step_s
        pos = [i + j * width for i in range(len(keys))]
        inc.bar(pos, [100 * x.increase.parts_s[k] / d for k in keys], width,
                color=[colour(k) for k in keys], edgecolor="black", linewidth=0.3,
                label=f"{x.model.name}: total {100 * x.increase.fraction:+.1f} %")
    inc.axhline(0, color="black", lw=0.5)
    inc.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], keys, rotation=40,
                   ha="right", fontsize=7)
    inc.set_ylabel("% of the dense step")
    inc.set_title("MoE step-time increase over dense, by part", fontsize=10)
    legend(inc)
    xs = range(len(VIEWS))
    scale, unit = token_unit(max([c.budget.tokens, *(x.views[v].tokens for x in c.moes
                                                     for v in VIEWS)]))
    tok.axhline(c.budget.tokens / scale, color="black", ls="--", lw=1,
                label=f"dense: {tokens_text(c.budget.tokens)}")
    for j, x in enumerate(c.moes):
        tok.bar([i + j * width for i in xs], [x.views[v].tokens / scale for v in VIEWS], width,
                label=x.model.name)
    tok.set_xticks([i + 0.4 - width / 2 for i in xs], [VIEW_LABELS[v] for v in VIEWS],
                   rotation=15, fontsize=7)
    tok.set_ylabel(f"training tokens ({unit})" if unit else "training tokens")
    tok.set_title("tokens the MoE may train, per yardstick", fontsize=10)
    legend(tok)
    return fig
