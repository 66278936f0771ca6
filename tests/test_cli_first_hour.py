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
