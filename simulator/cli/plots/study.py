"""The sharding study's pictures: the dense-to-MoE increase per layout, and step time vs scale."""

from __future__ import annotations

from matplotlib.ticker import FormatStrFormatter

from simulator.cli.plots.common import colour, figure, legend
from simulator.analysis.study import LAYOUTS, THRESHOLD

_LAYOUT_COLOURS = {"3d": "#4e79a7", "no_expert": "#f28e2b", "expert_in_data": "#59a14f",
                   "model_only": "#e15759"}


def plot_study(rows):
    """Top: per hardware, the increase ``t(MoE)/t(dense) - 1`` per scale and layout (hatched:
    its ``ffn_size`` part; missing bars: no valid or fitting configuration), the 20 % line of
    Du et al. 2024. Bottom: per
    hardware, the dense step and each layout's MoE step against scale."""
    hws = list(dict.fromkeys(r.hardware for r in rows))
    scales = list(dict.fromkeys(r.scale for r in rows))
    layouts = [lay for lay in LAYOUTS if any(r.layout == lay for r in rows)]
    fig, axes = figure(5.5 * len(hws), 7.5, 2, len(hws))
    width = 0.8 / len(layouts)
    for h, hw in enumerate(hws):
        bars, lines = axes[h], axes[len(hws) + h]
        mine = {(r.scale, r.layout): r for r in rows if r.hardware == hw}
        for j, lay in enumerate(layouts):
            done = [(i, r) for i, sc in enumerate(scales)
                    if (r := mine.get((sc, lay))) is not None and r.increase is not None]
            xs = [i + j * width for i, _ in done]
            bars.bar(xs, [100 * r.increase for _, r in done], width,
                     color=_LAYOUT_COLOURS.get(lay, colour(lay)), label=lay)
            bars.bar(xs, [100 * (r.increase - r.increase_beyond_ffn) for _, r in done], width,
                     fill=False, hatch="//", edgecolor="white", lw=0,
                     label="of which FFN size" if j == 0 else None)
            pts = [(s, mine[(s, lay)].moe_step_s) for s in scales
                   if mine.get((s, lay)) and mine[(s, lay)].moe_step_s is not None]
            lines.plot([scales.index(s) for s, _ in pts], [t for _, t in pts], "o-",
                       color=_LAYOUT_COLOURS.get(lay, colour(lay)), label=f"MoE, {lay}")
        bars.axhline(100 * THRESHOLD, color="black", ls="--", lw=1, label="20 %")
        bars.set_xticks([i + 0.4 - width / 2 for i in range(len(scales))], scales)
        bars.set_ylabel("MoE step-time increase over dense (%)")
        bars.set_title(f"{hw}, {rows[0].chips} chips", fontsize=10)
        legend(bars)
        dense = [(s, mine[(s, layouts[0])].dense_step_s) for s in scales
                 if mine.get((s, layouts[0])) and mine[(s, layouts[0])].dense_step_s]
        lines.plot([scales.index(s) for s, _ in dense], [t for _, t in dense], "ks--",
                   label="dense")
        lines.set_xticks(range(len(scales)), scales)
        lines.set_yscale("log")
        lines.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        lines.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        lines.set_xlabel("dense size class")
        lines.set_ylabel("step time (s)")
        legend(lines)
    return fig
