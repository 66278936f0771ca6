"""``meshcast predict --plot``: the step's breakdown and one layer's timeline per stream."""

from __future__ import annotations

import re

from simulator.analysis.attribution import part_of
from simulator.cli.plots.common import colour, figure, interval_bars, legend


def _layer(pred) -> int:
    """The layer to draw: the first MoE layer of the critical stage, else its middle layer."""
    names = pred.critical.graph.nodes
    layers = sorted({int(m.group(1)) for n in names if (m := re.match(r"L(\d+)\.", n))})
    moe = [i for i in layers if pred.job.model.is_moe_layer(i)]
    return moe[0] if moe else layers[len(layers) // 2]


def layer_spans(pred, layer: int, phases: tuple[str, ...]) -> list[tuple[str, str, float, float, str]]:
    """(stream, op name, start s, end s, part) of layer ``layer``'s nodes in ``phases``."""
    crit = pred.critical
    out = []
    for name, attrs in crit.graph.nodes.items():
        op = attrs["op"]
        if name.startswith(f"L{layer}.") and op.phase in phases:
            t0, t1 = crit.sched.start[name], crit.sched.end[name]
            if t1 > t0:
                out.append((op.stream, name, t0, t1, part_of(op)))
    return out


def _timeline(ax, spans, title: str) -> None:
    if not spans:
        ax.set_visible(False)
        return
    t0 = min(s[2] for s in spans)
    streams = sorted({s[0] for s in spans}, key=lambda s: (s != "compute", s))
    seen = set()
    for stream, _, a, b, part in spans:
        y = streams.index(stream)
        ax.broken_barh([((a - t0) * 1e3, (b - a) * 1e3)], (y - 0.4, 0.8), color=colour(part),
                       label=None if part in seen else part)
        seen.add(part)
    ax.set_yticks(range(len(streams)), streams)
    ax.invert_yaxis()
    ax.set_xlabel("ms from the layer's first op")
    ax.set_title(title, fontsize=9)
    legend(ax, 6)


def plot_prediction(pred, interval=None):
    """Breakdown bars (seconds per category; with an interval, the whole step on top with its
    band as an error bar) and layer ``i``'s forward and backward (with recompute) as a timeline
    per stream, coloured by part (:mod:`simulator.analysis.attribution`). ``interval``: a
    ForecastInterval, by default :func:`simulator.analysis.interval.interval_of` the prediction."""
    from simulator.analysis.interval import interval_of

    iv = interval if interval is not None else interval_of(pred)
    fig, (bars, fwd, bwd) = figure(11, 6.5, 3, 1, height_ratios=[1.2, 1, 1])
    cats = list(pred.breakdown_s)[::-1]
    bars.barh(cats, [pred.breakdown_s[c] for c in cats], color=[colour(c, i) for i, c in enumerate(cats)])
    t = pred.step_time_s
    if iv.exists:
        bars.barh(["step (total)"], [t], color="#bab0ac")
        interval_bars(bars, ["step (total)"], [iv], horizontal=True, ecolor="black", capsize=4)
        legend(bars)
    bars.set_xlabel("seconds per step")
    j = pred.job
    mesh = " ".join(f"{a}={v}" for a, v in j.mesh.items() if v != 1) or "data=1"
    band = f" ({iv.band_text()}{': efficiencies not fitted' if iv.basis == 'assumed' else ''})"
    bars.set_title(f"{j.model.name} on {j.hardware.name} x {j.chips} ({mesh}): step "
                   f"{t:.3g} s{band}, MFU {100 * pred.mfu:.1f} %", fontsize=10)
    i = _layer(pred)
    kind = "MoE" if j.model.is_moe_layer(i) else "dense"
    _timeline(fwd, layer_spans(pred, i, ("fwd",)), f"layer {i} ({kind}) forward, one micro-batch")
    _timeline(bwd, layer_spans(pred, i, ("recompute", "bwd")),
              f"layer {i} ({kind}) recompute + backward, one micro-batch")
    return fig
