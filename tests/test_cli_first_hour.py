"""A newcomer's first hour (issue 15, part 4): --version, a forecast that does not fit says so
in its headline and JSON, no "1 micro-batches" or "0.00M tokens", rank's reproducing predict
commands, and the capacity-factor warning."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from simulator.cli.main import main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"meshcast {version('meshcast')}"


# --- a job that does not fit says so first -----------------------------------------------------
BASE = ["predict", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8"]
TOO_BIG = [*BASE, "--global-batch", "8", "--remat", "none"]  # 176 GiB of 80 GiB per device


def test_forecast_that_does_not_fit_says_so_before_step_time_and_mfu(capsys):
    from tests.cli_helpers import ok

    out = ok(capsys, TOO_BIG)
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if "DOES NOT FIT IN MEMORY" in line)
    step = next(i for i, line in enumerate(lines) if "step time" in line)
    mfu = next(i for i, line in enumerate(lines) if line.strip().startswith("MFU"))
    assert head == 1 < step < mfu  # right under the title
    assert "176.4 GiB" in lines[head] and "79.6 GiB" in lines[head]


def test_forecast_json_says_whether_it_fits_and_why(capsys):
    import json

    from tests.cli_helpers import ok

    d = json.loads(ok(capsys, [*TOO_BIG, "--json"]))
    assert d["fits"] is False and d["fits"] == d["memory"]["fits"]
    assert "needs 176.4 GiB per device" in d["fit_reason"] and "79.6 GiB" in d["fit_reason"]
    d = json.loads(ok(capsys, [*BASE, "--mesh", "fsdp=8", "--global-batch", "8", "--json"]))
    assert d["fits"] is True and d["memory"]["fits"] is True
    assert "DOES NOT FIT" not in ok(capsys, [*BASE, "--mesh", "fsdp=8", "--global-batch", "8"])


# --- no "1 micro-batches", no "0.00M tokens" ---------------------------------------------------
def test_batch_line_has_numbers_in_words_and_sensible_units(capsys):
    from tests.cli_helpers import ok

    out = ok(capsys, [*BASE, "--mesh", "fsdp=8", "--global-batch", "8"])
    batch = next(line for line in out.splitlines() if line.strip().startswith("batch"))
    assert "8 seqs x 8192 tokens = 65.5k tokens/step" in batch
    assert batch.endswith("micro-batch 1, 1 micro-batch per step")
    out = ok(capsys, [*BASE, "--mesh", "fsdp=8", "--global-batch", "64", "--seq-len", "16"])
    batch = next(line for line in out.splitlines() if line.strip().startswith("batch"))
    assert "64 seqs x 16 tokens = 1.02k tokens/step" in batch and "8 micro-batches per step" in batch
    assert "0.00M" not in out


@pytest.mark.parametrize("n, text", [(1, "1"), (512, "512"), (1024, "1.02k"), (65536, "65.5k"),
                                     (4194304, "4.19M"), (2.5e9, "2.5B"), (1.4e12, "1.4T")])
def test_tokens_text_picks_the_unit_by_size(n, text):
    from simulator.cli.report import tokens_text

    assert tokens_text(n) == text


def test_plural():
    from simulator.cli.report import plural

    assert plural(1, "chip") == "1 chip" and plural(8, "chip") == "8 chips"
    assert plural(1, "micro-batch", "micro-batches") == "1 micro-batch"
    assert plural(2, "micro-batch", "micro-batches") == "2 micro-batches"


# --- capacity factor below top-k ---------------------------------------------------------------
def _moe(capacity_factor):
    from simulator.specs.zoo import load_model

    m = load_model("moe-6.4b")
    return m.model_copy(update={"moe": m.moe.model_copy(
        update={"capacity_factor": capacity_factor})})


def test_capacity_factor_below_top_k_warns_what_it_drops():
    from simulator.predict import predict

    kw = dict(hardware="tpu-v5p", chips=64, mesh={"data": -1, "expert": 4, "model": 4},
              global_batch=256, remat="full")
    pred = predict(model=_moe(1.25), **kw)  # top-2: 1.25 slots per token for 2 choices
    [w] = [w for w in pred.warnings if w.startswith("capacity_factor")]
    assert "capacity_factor 1.25 < top_k 2" in w and "includes top-k" in w
    assert "37.5% of token-expert assignments are dropped" in w
    assert "capacity_factor = f x top_k (here 2.5 for f = 1.25)" in w
    for cf in (2.0, 3.0, None):  # at top-k or above, or dropless: no such warning
        assert not any("top_k" in w for w in predict(model=_moe(cf), **kw).warnings), cf


def test_capacity_warning_reaches_the_cli(capsys, tmp_path):
    import yaml

    from tests.cli_helpers import ok

    path = tmp_path / "moe-cf1.yaml"
    path.write_text(yaml.safe_dump(_moe(1.0).model_dump(mode="json")))
    out = ok(capsys, ["predict", "--model", str(path), "--hardware", "tpu-v5p", "--chips", "64",
                      "--mesh", "data=-1,expert=4,model=4", "--global-batch", "256",
                      "--remat", "full"])
    assert "warning: capacity_factor 1 < top_k 2" in out and "50% of token-expert" in out


# --- rank prints the predict command that reproduces each top row ------------------------------
@pytest.mark.parametrize("argv", [
    ["--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "16", "--seq-len", "1024",
     "--global-batch", "16"],
    ["--model", "switch-base", "--hardware", "tpu-v5p", "--chips", "16", "--seq-len", "1024",
     "--global-batch", "32", "--moe-dispatcher", "deepep", "--precision", "fp8"],
], ids=["dense-h100-pipeline", "moe-tpu-deepep"])
def test_rank_prints_predict_commands_that_reproduce_each_top_row(capsys, argv):
    import json
    import shlex

    from tests.cli_helpers import ok

    d = json.loads(ok(capsys, ["rank", *argv, "--top", "3", "--json"]))
    text = ok(capsys, ["rank", *argv, "--top", "3"])
    assert len(d["top"]) == 3
    for row in d["top"]:
        cmd = row["predict_command"]
        assert cmd.startswith("meshcast predict ") and "--bind" in cmd and "--mesh" in cmd
        assert f"      reproduce: {cmd}" in text.splitlines()
        words = shlex.split(cmd)
        assert words[words.index("--micro-batch") + 1] == str(row["micro_batch"])
        assert words[words.index("--remat") + 1] == row["remat"]
        got = json.loads(ok(capsys, [*words[1:], "--json"]))
        assert got["step_time_s"] == row["step_time_s"]  # exactly the same forecast
        assert got["memory"] == row["memory"] and got["breakdown_s"] == row["breakdown_s"]
        assert got["mesh"] == row["mesh"] and got["microbatches"] == row["microbatches"]


def test_predict_argv_rebinds_every_placed_axis_in_placement_order():
    from simulator.cli.rank_report import predict_argv
    from simulator.predict import predict

    # fsdp=16 spills over nvlink (8) into ib (2): the binding names both levels, in that order
    job = predict(model="llama3-8b", hardware="h100-sxm", chips=32, global_batch=64,
                  mesh={"data": -1, "fsdp": 16}, axis_order=["fsdp", "data", "model", "seq",
                                                            "expert", "pipeline"]).job
    argv = predict_argv(job)
    bind = argv[argv.index("--bind") + 1]
    assert bind == "fsdp=nvlink+ib,data=ib", bind


def test_rank_never_proposes_a_configuration_the_graph_path_says_does_not_fit(monkeypatch):
    """The fast path's memory equals the graph path's, so this forces a disagreement: the
    graph path calls the fast path's best row too big; rank must leave it out."""
    import dataclasses
    import importlib

    from simulator.search.rank import rank
    from simulator.search.space import make_space

    space = make_space("llama3-8b", "h100-sxm", 8, seq_len=1024, global_batch=16)
    best = rank(space, top=3).top
    predict_mod = importlib.import_module("simulator.predict")
    real = predict_mod.predict_job
    victim = best[0].prediction.job.sharding

    def predict_job(job):
        pred = real(job)
        if job.sharding == victim:
            pred.memory = dataclasses.replace(pred.memory, capacity_bytes=1.0)
        return pred

    monkeypatch.setattr(predict_mod, "predict_job", predict_job)
    top = rank(space, top=3).top
    assert len(top) == 3 and all(f.prediction.memory.fits for f in top)
    assert victim not in [f.prediction.job.sharding for f in top]


def test_rank_and_plan_budget_tokens_in_sized_units(capsys):
    from tests.cli_helpers import ok

    job = ["--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8", "--seq-len", "1024",
           "--global-batch", "16", "--tokens", "5e6"]
    out = ok(capsys, ["rank", *job, "--top", "1", "--objective", "time_to_train"])
    assert "5M tokens: 306 steps" in out and "0B tokens" not in out  # ceil(5e6 / 16384) steps
    out = ok(capsys, ["plan", *job])
    assert out.startswith("meshcast plan: llama3-8b, 5M training tokens (given)")
