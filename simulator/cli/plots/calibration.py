"""Calibration pictures: fitted curves with residuals, and measured vs forecast train steps.

They take plain data read from a calibration directory (``fit_predictions.csv``: group, size,
measured_s, predicted_s, held_out; ``validate --json`` output: cases with measured_s and
forecast_s), so this module needs neither jax nor the calibration package.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from meshcast.errors import MeshcastError
from simulator.cli.plots.common import colour, figure, legend


def read_fit_predictions(directory: str | Path) -> list[dict]:
    """Rows of ``<dir>/fit_predictions.csv`` with numbers parsed (written by ``meshcast fit``)."""
    path = Path(directory) / "fit_predictions.csv"
    if not path.is_file():
        raise MeshcastError(f"calibration: {path} is missing; run meshcast fit {directory} first")
    with path.open() as fh:
        return [{"group": r["group"], "size": float(r["size"]), "measured_s": float(r["measured_s"]),
                 "predicted_s": float(r["predicted_s"]), "held_out": r["held_out"] in ("True", "1")}
                for r in csv.DictReader(fh)]


def read_validation(path: str | Path) -> list[dict]:
    """The cases of a ``meshcast validate --json`` output file."""
    try:
        return json.loads(Path(path).read_text())["cases"]
    except (OSError, ValueError, KeyError) as e:
        raise MeshcastError(f"calibration: {path} is not a validate --json output ({e})") from None


def plot_fit(rows: list[dict], groups: list[str] | None = None):
    """Left: measured (dots; held-out sizes hollow) and fitted (line) seconds against size per
    group. Right: residual ``predicted / measured - 1`` per group."""
    groups = groups or list(dict.fromkeys(r["group"] for r in rows))
    fig, (curves, resid) = figure(12, 4.8, 1, 2)
    for i, g in enumerate(groups):
        mine = sorted((r for r in rows if r["group"] == g), key=lambda r: r["size"])
        c = colour(g, i)
        curves.plot([r["size"] for r in mine], [r["predicted_s"] for r in mine], "-", color=c,
                    lw=1, label=g)
        for held in (False, True):
            pts = [r for r in mine if r["held_out"] == held]
            curves.scatter([r["size"] for r in pts], [r["measured_s"] for r in pts], s=14,
                           facecolors="none" if held else c, edgecolors=c)
            resid.scatter([i] * len(pts), [100 * (r["predicted_s"] / r["measured_s"] - 1)
                                           for r in pts], s=14, facecolors="none" if held else c,
                          edgecolors=c)
    curves.set_xscale("log")
    curves.set_yscale("log")
    curves.set_xlabel("size (FLOPs or bytes, as the step graph counts them)")
    curves.set_ylabel("seconds")
    curves.set_title("fitted curves (hollow: held-out sizes)", fontsize=10)
    legend(curves, 6)
    resid.axhline(0, color="black", lw=0.5)
    resid.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize=6)
    resid.set_ylabel("predicted / measured - 1 (%)")
    resid.set_title("residuals per group", fontsize=10)
    return fig


def plot_validation(cases: list[dict]):
    """Measured and forecast step per validation case, with the relative error written on."""
    fig, (ax,) = figure(8, 4)
    xs = range(len(cases))
    ax.bar([x - 0.2 for x in xs], [1e3 * c["measured_s"] for c in cases], 0.4, label="measured")
    ax.bar([x + 0.2 for x in xs], [1e3 * c["forecast_s"] for c in cases], 0.4, label="forecast")
    for x, c in zip(xs, cases):
        err = c["forecast_s"] / c["measured_s"] - 1
        ax.annotate(f"{100 * err:+.0f}%", (x, 1e3 * max(c["measured_s"], c["forecast_s"])),
                    ha="center", fontsize=8, xytext=(0, 3), textcoords="offset points")
    ax.set_xticks(list(xs), [c["case"] for c in cases], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("ms per train step")
    ax.set_title("reference train steps: measured vs forecast", fontsize=10)
    legend(ax, 8)
    return fig
