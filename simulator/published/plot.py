"""Predicted vs measured step time, log-log, one colour per hardware, one marker per kind."""

from __future__ import annotations

from pathlib import Path

from meshcast.errors import MeshcastError
from simulator.published.evaluate import RowResult


def plot_predicted_vs_measured(results: list[RowResult], path: str | Path, title: str = "",
                               bands: list | None = None) -> None:
    """Write the plot to ``path`` (PNG/SVG/PDF by suffix): the diagonal and a +-25% band; with
    ``bands`` (an IntervalBand or None per row) each forecast's 80% interval as a vertical bar
    (the row is covered when its bar crosses the diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise MeshcastError("plot: no forecast rows to plot")
    fig, ax = plt.subplots(figsize=(6.5, 6))
    hardware = sorted({r.hardware for r in results})
    markers = {"dense": "o", "moe": "^"}
    for i, hw in enumerate(hardware):
        for kind, mk in markers.items():
            pts = [r for r in results if r.hardware == hw and r.kind == kind]
            with_band = [(r, b) for r, b in zip(results, bands or [])
                         if b is not None and r.hardware == hw and r.kind == kind]
            if with_band:  # a band need not contain its forecast (held-out runs ran slower)
                ax.vlines([r.measured_step_time_s for r, _ in with_band],
                          [r.predicted_step_time_s * b.lo_factor for r, b in with_band],
                          [r.predicted_step_time_s * b.hi_factor for r, b in with_band],
                          color=f"C{i}", alpha=0.35, lw=0.8)
            if pts:
                ax.scatter([r.measured_step_time_s for r in pts],
                           [r.predicted_step_time_s for r in pts], marker=mk, color=f"C{i}",
                           label=f"{hw} {kind}", alpha=0.8, s=28)
    lo = min(min(r.measured_step_time_s, r.predicted_step_time_s) for r in results) / 1.5
    hi = max(max(r.measured_step_time_s, r.predicted_step_time_s) for r in results) * 1.5
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.75, hi * 0.75], [lo * 1.25, hi * 1.25], color="0.9", zorder=0,
                    label="+-25%")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel="measured step time (s)", ylabel="forecast step time (s)",
           title=title or "meshcast forecast vs published runs")
    ax.legend(fontsize=7, loc="upper left")
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except (OSError, ValueError) as e:
        raise MeshcastError(f"plot: cannot write {path}: {e}") from None
    finally:
        plt.close(fig)
