"""Pictures: every plot function draws data from the API result it is given; the CLI writes
PNGs for predict, rank and compare."""

from __future__ import annotations

import re

import pytest
from matplotlib.collections import Collection
from matplotlib.figure import Figure

from simulator import predict
from simulator.analysis.compare import compare
from meshcast.errors import MeshcastError
from simulator.cli.plots import (
    plot_comparison,
    plot_fit,
    plot_plan,
    plot_prediction,
    plot_rank,
    plot_study,
    plot_validation,
    png_bytes,
    save,
)
from simulator.cli.plots.predict import layer_spans
from simulator.analysis.plan import plan
from simulator.search.rank import rank
from simulator.search.space import make_space
from simulator.analysis.study import study_pair
from tests.cli_helpers import ok

PNG = b"\x89PNG\r\n\x1a\n"


def drawn(fig: Figure) -> int:
    """How many data artists (bars, lines, scatter and broken-bar collections) ``fig`` holds."""
    n = 0
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        n += len(ax.patches) + len([ln for ln in ax.lines if len(ln.get_xdata()) > 1])
        n += sum(1 for c in ax.collections if isinstance(c, Collection) and len(c.get_paths()))
    return n


@pytest.fixture(scope="module")
def moe_pred():
    return predict(model="mixtral-8x7b", hardware="h100-sxm", chips=32,
                   mesh={"data": -1, "expert": 8, "model": 2}, global_batch=32, seq_len=2048)


def test_prediction_plot_has_breakdown_and_layer_timeline(moe_pred):
    fig = plot_prediction(moe_pred)
    bars, fwd, bwd = fig.axes[:3]
    assert len(bars.patches) == len(moe_pred.breakdown_s)
    assert {p.get_width() for p in bars.patches} == set(moe_pred.breakdown_s.values())
    spans = layer_spans(moe_pred, 1, ("fwd",))
    assert {s[0] for s in spans} == {"compute", "ep", "tp"}  # MoE layer: all-to-all and TP
    assert len(fwd.collections) == len(spans) and len(bwd.collections) > len(spans)
    assert png_bytes(fig)[:8] == PNG


def test_rank_plan_compare_study_plots_draw_their_results():
    space = make_space("llama3-8b", "h100-sxm", 8, global_batch=16, seq_len=1024)
    res = rank(space, top=3)
    fig = plot_rank(res)
    assert len(fig.axes[0].collections[0].get_offsets()) == len(res.times.step_s)
    assert drawn(fig) > 3
    pl = plan("llama3-8b", ["h100-sxm", "tpu-v5p"], [8, 16], global_batch=16, seq_len=1024)
    assert drawn(plot_plan(pl)) >= 4
    c = compare("dense-6.4b", ["moe-6.4b"], "h100-sxm", 32, mesh={"data": -1, "expert": 8},
                global_batch=64, seq_len=2048)
    assert drawn(plot_comparison(c)) > 5
    rows = study_pair("dense-6.4b", "moe-6.4b", "h100-sxm", 64, "6.4b", global_batch=64,
                      seq_len=2048)
    assert drawn(plot_study(rows)) >= 3


def test_calibration_plots_draw_rows():
    rows = [{"group": g, "size": s, "measured_s": s * 1e-12 * (1.1 if h else 1.0),
             "predicted_s": s * 1e-12, "held_out": h}
            for g in ("matmul", "memory") for s, h in ((1e9, False), (1e10, True), (1e11, False))]
    fig = plot_fit(rows)
    assert sum(len(c.get_offsets()) for c in fig.axes[0].collections) == 6
    assert len(fig.axes[0].lines) == 2
    cases = [{"case": "dense data=8", "measured_s": 0.2, "forecast_s": 0.18}]
    assert len(plot_validation(cases).axes[0].patches) == 2


def test_save_refuses_other_formats_and_unwritable_paths(tmp_path, moe_pred):
    fig = plot_prediction(moe_pred)
    with pytest.raises(MeshcastError, match="plot: .*must end in .png"):
        save(fig, tmp_path / "step.svg")
    with pytest.raises(MeshcastError, match="plot: cannot write"):
        save(fig, tmp_path / "no-such-dir" / "step.png")


def test_cli_predict_and_rank_write_pngs(capsys, tmp_path):
    a, b = tmp_path / "p.png", tmp_path / "r.png"
    ok(capsys, ["predict", "--model", "mixtral-8x7b", "--hardware", "h100-sxm", "--chips", "16",
                "--mesh", "data=-1,expert=8", "--seq-len", "1024", "--plot", str(a)])
    ok(capsys, ["rank", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8",
                "--seq-len", "1024", "--global-batch", "16", "--top", "2", "--plot", str(b)])
    for p in (a, b):
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 20_000


def legend_overlaps(fig: Figure) -> list[str]:
    """Each legend that overlaps its axes (where the data are) or leaves the figure, drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out: constrained layout runs at draw time
    renderer = canvas.get_renderer()
    page = fig.bbox
    bad = []
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is None or not ax.get_visible():
            continue
        box, area = leg.get_window_extent(renderer), ax.get_window_extent(renderer)
        if box.overlaps(area):
            bad.append(f"{ax.get_title()!r}: legend over the data")
        if not (page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1 and page.y0 - 1 <= box.y0
                and box.y1 <= page.y1 + 1):
            bad.append(f"{ax.get_title()!r}: legend outside the figure")
    return bad


def test_no_legend_covers_data(moe_pred):
    """Issue 15: every plot's legends sit beside their axes, never on the bars, points or lines,
    and inside the picture."""
    space = make_space("llama3-8b", "h100-sxm", 8, global_batch=16, seq_len=1024)
    rows = [{"group": g, "size": s, "measured_s": s * 1e-12, "predicted_s": s * 1e-12,
             "held_out": h} for g in ("matmul", "memory") for s, h in ((1e9, False), (1e10, True))]
    figs = {
        "predict": plot_prediction(moe_pred),
        "rank": plot_rank(rank(space, top=2)),
        "plan": plot_plan(plan("llama3-8b", ["h100-sxm", "tpu-v5p"], [8, 16], global_batch=16,
                               seq_len=1024, deadline_days=30)),
        "compare": plot_comparison(compare("dense-6.4b", ["moe-6.4b"], "h100-sxm", 32,
                                           mesh={"data": -1, "expert": 8}, global_batch=64,
                                           seq_len=2048)),
        "study": plot_study(study_pair("dense-6.4b", "moe-6.4b", "h100-sxm", 64, "6.4b",
                                       global_batch=64, seq_len=2048)),
        "fit": plot_fit(rows),
        "validation": plot_validation([{"case": "dense data=8", "measured_s": 0.2,
                                        "forecast_s": 0.18}]),
    }
    for name, fig in figs.items():
        assert sum(ax.get_legend() is not None for ax in fig.axes) >= 1, name
        assert not legend_overlaps(fig), (name, legend_overlaps(fig))


def _texts(fig: Figure) -> list[str]:
    out = []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return out


def test_small_budgets_are_written_in_their_unit_not_zero_billions():
    """Issue 15: no ``0B tokens`` (nor ``0.00M``) for a small budget, no ``1 micro-batches``."""
    from simulator.cli.plots.common import token_unit

    assert token_unit(132e9) == (1e9, "B") and token_unit(5e7) == (1e6, "M")
    assert token_unit(999) == (1.0, "")
    pl = plan("llama3-8b", ["h100-sxm"], [8], tokens=50_000_000, global_batch=16, seq_len=1024)
    c = compare("dense-6.4b", ["moe-6.4b"], "h100-sxm", 32, mesh={"data": -1, "expert": 8},
                global_batch=64, seq_len=2048, tokens_per_param=0.01)
    texts = _texts(plot_plan(pl)) + _texts(plot_comparison(c))
    assert any("50M tokens" in t for t in texts)
    assert any(t.startswith("dense: ") and t.endswith("M") for t in texts)
    assert "training tokens (M)" in texts
    bad = re.compile(r"(?<![\d.])0(\.0+)?\s?[kMBT]\b|\b1 micro-batches")
    assert not [t for t in texts if bad.search(t)]
