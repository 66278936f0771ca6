"""Shared plotting pieces: figures without pyplot, one colour per part of a step, PNG output."""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from simulator.analysis.attribution import PARTS
from meshcast.errors import MeshcastError

_PALETTE = ("#4e79a7", "#59a14f", "#f28e2b", "#e15759", "#b07aa1", "#76b7b2", "#edc948",
            "#9c755f", "#bab0ac", "#ff9da7", "#86bcb6", "#d37295", "#8cd17d", "#a0cbe8")
#: One colour per part (attribution.PARTS, plus the decomposition's extra names).
PART_COLOURS = {p: _PALETTE[i % len(_PALETTE)] for i, p in
                enumerate((*PARTS, "capacity_padding", "ffn_size"))}
PART_COLOURS["ffn_size"] = PART_COLOURS["ffn"]


def colour(name: str, index: int | None = None) -> str:
    """A part's own colour; any other label takes the palette's ``index``-th colour (distinct
    within one chart), or one picked by its characters when no index is given."""
    if name in PART_COLOURS:
        return PART_COLOURS[name]
    i = sum(map(ord, name)) if index is None else index
    return _PALETTE[i % len(_PALETTE)]


def figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw):
    """A Figure and its axes (a flat list), laid out with constrained layout."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kw)
    return fig, [ax for row in axes for ax in row]


def token_unit(n: float) -> tuple[float, str]:
    """(divisor, unit) for token counts up to ``n``: the unit
    :func:`simulator.cli.report.tokens_text` writes ``n`` in (``k``, ``M``, ``B``, ``T``, or
    none), so an axis never reads ``0.00B``."""
    from simulator.cli.report import tokens_text

    unit = tokens_text(n)[-1]
    return {"k": (1e3, "k"), "M": (1e6, "M"), "B": (1e9, "B"), "T": (1e12, "T")}.get(unit, (1.0, ""))


def legend(ax, fontsize: float = 7, **kw):
    """``ax``'s legend outside the axes, to their right and top-aligned, so it never covers data
    (constrained layout makes room for it)."""
    return ax.legend(fontsize=fontsize, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                     borderaxespad=0.0, **kw)


def check_png_path(path: str | Path) -> Path:
    """``path`` if it names a PNG; else a MeshcastError (check before the work that draws it)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise MeshcastError(f"plot: {str(path)!r} must end in .png (e.g. step.png)")
    return path


def save(fig: Figure, path: str | Path, dpi: int = 90) -> Path:
    """Write ``fig`` as a PNG; a path that cannot be written is a MeshcastError naming it."""
    path = check_png_path(path)
    try:
        fig.savefig(path, dpi=dpi, format="png")
    except OSError as e:
        raise MeshcastError(f"plot: cannot write {path}: {e.strerror}") from None
    return path


def png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    return buf.getvalue()


def stacked_bars(ax, labels: list[str], parts: list[dict[str, float]], order, horizontal=True):
    """One stacked bar per label, a segment per part in ``order`` (zero parts skipped)."""
    base = [0.0] * len(labels)
    for i, p in enumerate(order):
        vals = [d.get(p, 0.0) for d in parts]
        if not any(vals):
            continue
        if horizontal:
            ax.barh(labels, vals, left=base, color=colour(p, i), label=p)
        else:
            ax.bar(labels, vals, bottom=base, color=colour(p, i), label=p)
        base = [b + v for b, v in zip(base, vals)]
    return base


def interval_bars(ax, at, intervals, horizontal: bool = False, label: bool = True, **kw) -> None:
    """Each forecast interval (a ForecastInterval with a band) as an error bar from ``lo_s`` to
    ``hi_s`` at its position in ``at``, drawn about the band's middle: a band need not contain
    its forecast (``lo_factor`` may exceed 1), so offsets from the forecast could be negative.
    ``label``: a legend entry ``80% interval`` (the first interval's level)."""
    mid = [(iv.lo_s + iv.hi_s) / 2 for iv in intervals]
    half = [(iv.hi_s - iv.lo_s) / 2 for iv in intervals]
    kw = {"fmt": "none", **kw, **({"label": intervals[0].label} if label else {})}
    if horizontal:
        ax.errorbar(mid, at, xerr=half, **kw)
    else:
        ax.errorbar(at, mid, yerr=half, **kw)


def show(fig: Figure, dpi: int = 80) -> None:
    """Display ``fig`` as a PNG in a notebook (works whatever matplotlib backend is active)."""
    from IPython.display import Image, display

    display(Image(png_bytes(fig, dpi)))
