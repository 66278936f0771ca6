"""``meshcast rank --plot``: every evaluated configuration, and the top ones' breakdowns."""

from __future__ import annotations

from simulator.analysis.interval import interval_of
from simulator.cli.plots.common import figure, interval_bars, legend, stacked_bars

GIB = 2**30


def _label(i: int, f) -> str:
    mesh = " ".join(f"{a}={v}" for a, v in f.row["mesh"].items())
    return f"#{i} {mesh}\nmb {f.row['micro_batch']}, remat {f.row['remat']}"


def plot_rank(res):
    """Left: fast-path step time against memory per device for every configuration that fits
    (the finalists marked). Right: the finalists' graph-path breakdown, stacked by category."""
    fig, (sc, bars) = figure(12, 4.8, 1, 2, width_ratios=[1, 1.2])
    sc.scatter(res.memory_bytes / GIB, res.times.step_s, s=4, alpha=0.35, color="#4e79a7",
               label=f"{len(res.times.step_s):,} configurations that fit")
    sc.scatter([f.prediction.memory.per_device_bytes / GIB for f in res.top],
               [f.prediction.step_time_s for f in res.top], s=40, color="#e15759",
               label="top (graph path)")
    ivs = [interval_of(f.prediction) for f in res.top]
    banded = [(f, iv) for f, iv in zip(res.top, ivs) if iv.exists]
    if banded:
        interval_bars(sc, [f.prediction.memory.per_device_bytes / GIB for f, _ in banded],
                      [iv for _, iv in banded], ecolor="#e15759", capsize=3)
    sc.axvline(res.space.hardware.chip.hbm_capacity_bytes.value / GIB, color="grey", ls="--",
               lw=1, label="HBM capacity")
    sc.set_yscale("log")
    sc.set_xlabel("memory per device (GiB)")
    sc.set_ylabel("step time (s)")
    sp = res.space
    sc.set_title(f"{sp.model.name} on {sp.hardware.name} x {sp.chips}", fontsize=10)
    legend(sc)
    labels = [_label(i, f) for i, f in enumerate(res.top, 1)][::-1]
    parts = [dict(f.prediction.breakdown_s) for f in res.top][::-1]
    cats = sorted({c for d in parts for c in d}, key=lambda c: -sum(d.get(c, 0) for d in parts))
    stacked_bars(bars, labels, parts, cats)
    if banded:  # the whole step's band at the end of each finalist's bar
        rows = [(lab, iv) for lab, iv in zip(labels, ivs[::-1]) if iv.exists]
        interval_bars(bars, [lab for lab, _ in rows], [iv for _, iv in rows], horizontal=True,
                      label=False, ecolor="black", capsize=3)
    bars.set_xlabel("step time (s)")
    bars.tick_params(axis="y", labelsize=7)
    bars.set_title("top configurations: where the step goes", fontsize=10)
    legend(bars, 6)
    return fig
