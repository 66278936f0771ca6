"""``meshcast compare`` on the command line: text, --json, --best, --plot and bad input."""

from __future__ import annotations

import json

import pytest

from hardware_profiles import FITTED_DIR, profile_dirs
from simulator.search import make_space, rank
from tests.cli_helpers import fails, ok

JOB = ["--hardware", "h100-sxm", "--chips", "32", "--seq-len", "2048", "--global-batch", "64"]
CMP = ["compare", "--dense", "dense-6.4b", *JOB]
MESH = ["--mesh", "data=-1,expert=8,model=2"]


def test_compare_text_shows_budget_increase_parts_and_views(capsys):
    out = ok(capsys, [*CMP, "--moe", "moe-6.4b,mixtral-8x7b", *MESH])
    for word in ("dense budget", "tokens", "days", "step-time increase over dense",
                 "all_to_all", "dispatch_combine", "ffn_size", "router",
                 "equal step time (wall clock)", "FLOP-matched", "activated-parameter-matched"):
        assert word in out, word
    assert out.count("step-time increase over dense") == 2
    # with --mesh the dense model runs the same sharding, expert folded into data
    assert "different shardings" not in out


def test_compare_json_parts_sum_to_the_increase(capsys):
    d = json.loads(ok(capsys, [*CMP, "--moe", "moe-6.4b", *MESH, "--tokens-per-param", "10",
                               "--json"]))
    assert d["tokens_per_param"] == 10 and d["view"] == "step_time"
    m = d["moe"][0]
    inc = m["increase"]
    assert inc["increase_s"] == pytest.approx(m["step_time_s"] - d["dense"]["step_time_s"])
    assert sum(inc["parts_s"].values()) == pytest.approx(inc["increase_s"], rel=1e-9)
    assert set(m["views"]) == {"step_time", "flops", "active_params"}
    assert m["headline"] == m["views"]["step_time"]
    assert d["dense"]["budget"]["tokens"] == round(10 * d["dense"]["total_params"])


def test_compare_best_searches_each_model(capsys):
    d = json.loads(ok(capsys, ["compare", "--dense", "llama3-8b", "--moe", "mixtral-8x7b",
                               "--hardware", "h100-sxm", "--chips", "16", "--seq-len", "1024",
                               "--global-batch", "32", "--best", "--json"]))
    assert d["sharding"] == "best"
    for key, model in (("dense", "llama3-8b"), ("moe", "mixtral-8x7b")):
        with profile_dirs(FITTED_DIR):  # compare's default profiles: the shipped fit
            best = rank(make_space(model, "h100-sxm", 16, global_batch=32, seq_len=1024),
                        top=1).top[0]
        run = d["dense"] if key == "dense" else d["moe"][0]
        assert run["step_time_s"] == best.prediction.step_time_s
        assert run["mesh"] == best.row["mesh"] and run["memory_fits"]


def test_compare_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "cmp.png"
    ok(capsys, [*CMP, "--moe", "moe-6.4b", *MESH, "--plot", str(path)])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


@pytest.mark.parametrize("argv,names", [
    (["--moe", "dense-6.4b", *MESH], ["moe:", "dense-6.4b", "--moe"]),
    (["--moe", "moe-6.4b,nope", *MESH], ["moe:", "nope", "known models"]),
    (["--moe", ",", *MESH], ["moe:", "names no model"]),
    (["--moe", "moe-6.4b", "--mesh", "data=-1,experts=8"], ["mesh:", "experts=8"]),
    (["--moe", "moe-6.4b", *MESH, "--tokens-per-param", "-1"], ["tokens-per-param", "-1"]),
    (["--moe", "moe-6.4b", *MESH, "--plot", "x.jpg"], ["plot:", "x.jpg", ".png"]),
    (["--moe", "moe-6.4b", *MESH, "--view", "tokens"], ["--view", "tokens"]),
])
def test_compare_bad_input_exits_2_naming_it(capsys, argv, names):
    fails(capsys, [*CMP, *argv], *names)


def test_compare_moe_given_as_dense_exits_2_naming_it(capsys):
    fails(capsys, ["compare", "--dense", "moe-6.4b", "--moe", "moe-6.4b", *JOB, *MESH],
          "dense:", "moe-6.4b", "--dense")


def test_compare_text_shows_the_dense_models_warnings(capsys):
    out = ok(capsys, ["compare", "--dense", "dense-6.4b", "--moe", "moe-6.4b", "--hardware",
                      "h100-sxm", "--chips", "8", "--mesh", "data=-1,expert=8",
                      "--global-batch", "16", "--seq-len", "2048"])
    dense_part = out.split("moe-6.4b  (")[0]
    assert "warning:" in dense_part and "does not fit" in dense_part


def test_compare_printed_parts_add_up_to_the_increase(capsys):
    out = ok(capsys, [*CMP, "--moe", "moe-6.4b", *MESH])
    lines = out.split("step-time increase over dense: ")[1].splitlines()
    total = float(lines[0].split(" s ")[0])
    parts = [float(x.split()[-6]) for x in lines[1:] if x.strip().endswith("% of dense")]
    assert sum(parts) == pytest.approx(total, rel=2e-3, abs=2e-3 * abs(total))


@pytest.mark.parametrize("extra, names", [
    (["--tokens-per-param", "nan"], ["tokens-per-param", "nan"]),
    (["--remat", "full"], ["remat", "--mesh"]),
    (["--micro-batch", "2"], ["micro-batch", "--mesh"]),
])
def test_compare_bad_options_are_clear_errors(capsys, extra, names):
    fails(capsys, [*CMP, "--moe", "moe-6.4b", *extra], *names)
