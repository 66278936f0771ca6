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
    ["--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8", "--seq-len", "1024",
     "--global-batch", "16", "--profiles", "builtin"],
], ids=["dense-h100-pipeline", "moe-tpu-deepep", "builtin-profiles"])
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
        # predict's default profiles (the shipped fit) need no flag; the built-in ones do
        assert ("--profiles builtin" in cmd) == ("builtin" in argv) and cmd.count("--profiles") <= 1
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


# --- one default batch and sequence length for predict, rank, plan and compare -----------------
def _strip(words: list[str], *flags: str) -> list[str]:
    """``words`` without each of ``flags`` and the value after it."""
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
        elif w in flags:
            skip = True
        else:
            out.append(w)
    return out


def test_one_default_batch_function_for_every_command():
    from simulator.search.space import DEFAULT_BATCH_TOKENS, job_batch, make_space
    from simulator.specs.zoo import load_model

    m = load_model("llama3-8b")
    assert job_batch(m) == (DEFAULT_BATCH_TOKENS // 8192, 8192) == (512, 8192)
    assert job_batch(m, seq_len=1024) == (4096, 1024)
    assert job_batch(m, global_batch_tokens=2**20) == (128, 8192)
    assert job_batch(m, global_batch=7, seq_len=16) == (7, 16)
    space = make_space(m, "h100-sxm", 16)
    assert (space.global_batch, space.seq_len) == job_batch(m)


def test_same_job_same_batch_and_step_time_in_predict_rank_plan_and_compare(capsys):
    """No batch given: rank, plan and compare print the one default batch (512 sequences of
    llama3-8b's 8192 tokens), and predict of rank's best row, given only its mesh, binding,
    micro-batch and remat (no batch, no sequence length), forecasts exactly rank's step time."""
    import json
    import shlex

    from tests.cli_helpers import ok

    job = ["--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "16"]
    words = "512 seqs x 8192 tokens"
    rank = json.loads(ok(capsys, ["rank", *job, "--top", "1", "--json"]))
    assert (rank["global_batch_seqs"], rank["seq_len"]) == (512, 8192)
    assert words in ok(capsys, ["rank", *job, "--top", "1"]).splitlines()[0]
    best = rank["top"][0]
    argv = _strip(shlex.split(best["predict_command"])[1:], "--global-batch", "--seq-len")
    assert "--global-batch" not in argv and "--seq-len" not in argv
    pred = json.loads(ok(capsys, [*argv, "--json"]))
    assert (pred["global_batch_seqs"], pred["seq_len"]) == (512, 8192)
    assert pred["step_time_s"] == best["step_time_s"]  # exactly rank's forecast
    assert pred["mesh"] == best["mesh"] and pred["microbatches"] == best["microbatches"]
    text = ok(capsys, argv)
    assert f"batch        {words} = 4.19M tokens/step" in text

    plan = json.loads(ok(capsys, ["plan", *job, "--json"]))
    assert (plan["global_batch_seqs"], plan["seq_len"]) == (512, 8192)
    [entry] = plan["entries"]
    assert entry["budget"]["tokens_per_step"] == 512 * 8192
    argv = _strip(shlex.split(entry["best"]["predict_command"])[1:], "--global-batch",
                  "--seq-len")
    assert json.loads(ok(capsys, [*argv, "--json"]))["step_time_s"] == \
        entry["best"]["step_time_s"]
    assert words in ok(capsys, ["plan", *job]).splitlines()[0]

    # compare: dense-6.4b's 4096 tokens, so 2^22 / 4096 = 1,024 sequences
    cmp = ["compare", "--dense", "dense-6.4b", "--moe", "moe-6.4b", "--hardware", "h100-sxm",
           "--chips", "16", "--mesh", "data=-1,expert=2", "--remat", "full"]
    c = json.loads(ok(capsys, [*cmp, "--json"]))
    assert (c["global_batch_seqs"], c["seq_len"]) == (1024, 4096)
    assert "1,024 seqs x 4096 tokens per step" in ok(capsys, cmp).splitlines()[0]
    pred = json.loads(ok(capsys, ["predict", "--model", "dense-6.4b", "--hardware", "h100-sxm",
                                  "--chips", "16", "--mesh", "data=-1", "--remat", "full",
                                  "--json"]))
    assert pred["global_batch_seqs"] == 1024
    assert pred["step_time_s"] == c["dense"]["step_time_s"]  # same job, same answer


def test_predict_default_batch_the_mesh_cannot_split_says_what_to_give(capsys):
    from tests.cli_helpers import fails

    msg = fails(capsys, [*BASE[:-1], "48"], "global-batch", "default batch", "512 sequences")
    assert "is not a multiple of micro-batch 1 x data x fsdp x expert 48 = 48" in msg
    assert "give --global-batch 528" in msg
    # a job that is wrong before its batch is still that error (chips, here)
    fails(capsys, [*BASE[:-1], "12"], "chips", "nvlink")


# --- plan --price ------------------------------------------------------------------------------
PLAN = ["plan", "--model", "llama3-8b", "--chips", "16", "--seq-len", "1024",
        "--global-batch", "16", "--tokens", "1e9"]


def test_plan_price_overrides_the_list_price_and_names_profiles_without_one(capsys, tmp_path):
    import json

    import yaml

    from hardware_profiles import load_profile
    from tests.cli_helpers import ok

    # a profile with no price: h100-sxm's data under another name, its price removed
    raw = load_profile("h100-sxm").model_dump(mode="json", exclude_none=True)
    raw.pop("price_per_chip_hour_usd", None)
    raw.update(name="nopricechip", aliases=[])
    path = tmp_path / "nopricechip.yaml"
    path.write_text(yaml.safe_dump(raw))
    argv = [*PLAN, "--hardware", f"H100,{path}", "--price", "h100=2.10"]
    d = json.loads(ok(capsys, [*argv, "--json"]))
    assert d["prices_per_chip_hour_usd"] == {"h100-sxm": 2.10, "nopricechip": None}
    assert d["unpriced"] == ["nopricechip"]
    assert d["price_sources"]["h100-sxm"].startswith("given with --price")
    by_hw = {e["hardware"]: e for e in d["entries"]}
    h100, none = by_hw["h100-sxm"]["budget"], by_hw["nopricechip"]["budget"]
    assert h100["cost_usd"] == __import__("pytest").approx(h100["chip_hours"] * 2.10)
    assert none["cost_usd"] is None and none["price_per_chip_hour_usd"] is None  # unknown, not 0
    assert [p["hardware"] for p in d["pareto"]] == ["h100-sxm"]
    text = ok(capsys, argv)
    row = next(line for line in text.splitlines() if line.strip().startswith("nopricechip"))
    assert "unknown" in row and " 0 " not in row
    assert "h100-sxm $2.10 (--price)" in text
    assert ("no price for nopricechip: cost unknown (not zero), so not on the Pareto front; "
            "give --price nopricechip=USD") in text


def test_plan_without_price_uses_the_profile_list_price(capsys):
    import json

    from hardware_profiles import load_profile
    from tests.cli_helpers import ok

    d = json.loads(ok(capsys, [*PLAN, "--hardware", "h100-sxm", "--json"]))
    listed = load_profile("h100-sxm").price_per_chip_hour_usd
    assert d["prices_per_chip_hour_usd"] == {"h100-sxm": listed.value}
    assert d["price_sources"]["h100-sxm"] == listed.source
    assert "list price in the profile" in ok(capsys, [*PLAN, "--hardware", "h100-sxm"])


@pytest.mark.parametrize("price, names", [
    ("h200=abc", ["--price", "h200", "'abc' is not a number"]),
    ("h200=0", ["--price", "h200", "out of range"]),
    ("h200=nan", ["--price", "h200", "not a finite number"]),
    ("h200=1e400", ["--price", "h200", "not a finite number"]),
    ("h200", ["--price", "not HARDWARE=USD", "h200=3.50"]),
    ("=3", ["--price", "not HARDWARE=USD"]),
    (",", ["--price", "names no price"]),
    ("tpu-v5p=3", ["price", "tpu-v5p", "not one of the profiles planned", "--hardware"]),
    ("tpu-v9=3", ["tpu-v9"]),
])
def test_plan_price_errors_name_the_field_the_value_and_the_fix(capsys, price, names):
    from tests.cli_helpers import fails

    fails(capsys, [*PLAN, "--hardware", "h200", "--price", price], *names)


# --- every option's help shows its default or what omitting it does ----------------------------
def _subcommands():
    import argparse

    from simulator.cli.main import build_parser

    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("command", list(_subcommands()))
def test_every_option_help_shows_its_default_or_what_omitting_it_does(capsys, command):
    """Each option's entry in ``meshcast COMMAND --help`` says its default (``default``), that
    it is required, or what happens when it is omitted."""
    import re

    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    body = text[text.index("options:"):] if "options:" in text else text
    # one entry per option: from its flag at the start of a line to the next flag
    entries = re.split(r"\n  (?=-)", body)[1:]
    parser = _subcommands()[command]
    flags = [a.option_strings[-1] for a in parser._actions
             if a.option_strings and a.option_strings[-1] != "--help"]
    assert len(flags) >= 1
    for flag in flags:
        [entry] = [e for e in entries if re.match(rf"(-\w, )?{re.escape(flag)}(?=[\s,]|$)", e)]
        words = " ".join(entry.split()).lower()
        assert re.search(r"\bdefault\b|\(required\)|\bomit", words), (command, flag, entry)
    for a in parser._actions:  # the positional arguments too
        if not a.option_strings and a.help:
            assert re.search(r"default|omit", a.help.lower()), (command, a.dest, a.help)
