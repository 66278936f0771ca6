"""Bad numbers and bad files at every edge of the CLI and the spec loaders (issue 15): each is one
clear line on stderr naming the flag or field, exit status 2, never a traceback, a hang or exit
0 with nonsense; ``--json`` is strict JSON; output piped into ``head`` stops quietly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hardware_profiles.loader import PROFILE_DIR
from meshcast.errors import MeshcastError
from simulator.cli.args import check_finite, dumps_json
from simulator.cli.main import main
from simulator.published.jobs import Case, Skip, row_to_case
from simulator.specs.zoo import ZOO_DIR
from tests.published_helpers import all_rows, row_at, write_csv

ROOT = Path(__file__).resolve().parents[1]
BAD_NUMBERS = ("nan", "inf", "-inf", "1e400", "1e-320", str(10**24), "-1", "0")


def run_fails(capsys, argv: list[str], *names: str) -> str:
    """Run the CLI in-process on bad input: exit 2, one line on stderr naming each of ``names``,
    no traceback, nothing on stdout."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse-level errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out, err
    assert out == "", out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error:" in lines[0], err
    for name in names:
        assert name in lines[0], (name, err)
    return lines[0]


# --- numbers given to flags ------------------------------------------------------------------

PREDICT = ["predict", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8"]
CALIBRATE = ["calibrate", "--backend", "cpu", "--out", "/nonexistent/cal"]
VALIDATE = ["validate", "--calibration", "/nonexistent/cal"]
PREDICT_MOE = ["predict", "--model", "moe-6.4b", "--hardware", "h100-sxm", "--chips", "8"]
RANK = ["rank", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8"]
PLAN = ["plan", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8"]
COMPARE = ["compare", "--dense", "dense-6.4b", "--moe", "moe-6.4b", "--hardware", "h100-sxm",
           "--chips", "8"]

#: (base command, flag, values that are valid for it and so not tested as bad)
FLAGS = [
    *[(PREDICT, f, ()) for f in ("--chips", "--global-batch", "--global-batch-tokens",
                                 "--micro-batch", "--seq-len", "--virtual-stages")],
    (PREDICT, "--moe-host-issue-s", ("0",)),
    (PREDICT_MOE, "--load-imbalance", ()),
    *[(RANK, f, ()) for f in ("--chips", "--global-batch", "--global-batch-tokens", "--seq-len",
                              "--top", "--tokens", "--tokens-per-param")],
    *[(PLAN, f, ()) for f in ("--chips", "--global-batch", "--seq-len", "--tokens",
                              "--tokens-per-param", "--deadline")],
    *[(COMPARE, f, ()) for f in ("--chips", "--global-batch", "--global-batch-tokens",
                                 "--seq-len", "--micro-batch", "--tokens-per-param")],
    # refused while parsing, before any jax import or measurement
    *[(CALIBRATE, f, ()) for f in ("--devices", "--limit")],
    (VALIDATE, "--devices", ()),
]


def _with_flag(base: list[str], flag: str, value: str) -> list[str]:
    """``base`` with ``flag=value`` (the ``=`` form, so that ``-inf`` is a value, not an option)."""
    argv = list(base)
    if flag in argv:
        i = argv.index(flag)
        del argv[i:i + 2]
    return [*argv, f"{flag}={value}"]


@pytest.mark.parametrize("base, flag, value", [
    (b, f, v) for b, f, valid in FLAGS for v in BAD_NUMBERS if v not in valid],
    ids=lambda x: x[0] if isinstance(x, list) else str(x)[:12])
def test_bad_number_for_a_flag(capsys, base, flag, value):
    line = run_fails(capsys, _with_flag(base, flag, value), flag)
    assert value[:12] in line


def test_bad_number_in_a_chip_list(capsys):
    for value in ("8,nan", "inf", "64,1e400", str(10**24), "8,-1", "0"):
        run_fails(capsys, _with_flag(PLAN, "--chips", value), "--chips")


def test_validate_published_host_seconds(capsys, tmp_path):
    csv = write_csv(tmp_path / "runs.csv", [row_at(117).raw])
    for value in ("nan", "inf", "1e400", "1e-320", "-1", str(10**24)):
        run_fails(capsys, ["validate", "--published", str(csv), "--cv", "none",
                           f"--moe-host-issue-s={value}"], "--moe-host-issue-s")


# --- numbers in a model YAML -----------------------------------------------------------------

def _model_yaml(tmp_path: Path, name: str, field: str, value: str) -> Path:
    text = (ZOO_DIR / f"{name}.yaml").read_text()
    data = yaml.safe_load(text)
    holder = data["moe"] if field.startswith("moe.") else data
    key = field.removeprefix("moe.")
    holder[key] = "@@"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data).replace("'@@'", value))
    return path


YAML_BAD = (".nan", ".inf", "-.inf", "1.0e+400", str(10**24), "-1", "0")
MODEL_INT_FIELDS = ("n_layers", "d_model", "n_heads", "ffn_hidden", "vocab_size", "seq_len",
                    "moe.n_experts", "moe.top_k", "moe.expert_ffn_hidden", "moe.group_size_tokens")
MODEL_FLOAT_FIELDS = ("moe.capacity_factor", "moe.load_imbalance")


@pytest.mark.parametrize("field", MODEL_INT_FIELDS + MODEL_FLOAT_FIELDS)
@pytest.mark.parametrize("value", YAML_BAD + ("1.0e-320",))
def test_bad_number_in_a_model_yaml(capsys, tmp_path, field, value):
    path = _model_yaml(tmp_path, "moe-6.4b", field, value)
    run_fails(capsys, ["predict", "--model", str(path), "--hardware", "h100-sxm", "--chips", "8",
                       "--mesh", "expert=8"], field.split(".")[-1], "m.yaml")


@pytest.mark.parametrize("value", (".nan", ".inf", "1.0e+400", "-1"))
def test_bad_router_flops_in_a_model_yaml(capsys, tmp_path, value):
    path = _model_yaml(tmp_path, "moe-6.4b", "moe.router_flops_per_token", value)
    run_fails(capsys, ["predict", "--model", str(path), "--hardware", "h100-sxm", "--chips", "8"],
              "router_flops_per_token")


# --- numbers in a hardware profile YAML ------------------------------------------------------

PROFILE_FIELDS = [
    ("chip", "hbm_bandwidth_bytes_per_s", "value"),
    ("chip", "hbm_capacity_bytes", "value"),
    ("chip", "peak_flops_per_s", "bf16", "value"),
    ("chip", "launch_overhead_s", "value"),
    ("efficiency", "matmul", "max_efficiency"),
    ("efficiency", "memory", "half_saturation"),
    ("network", 0, "size"),
    ("network", 0, "link_bandwidth_bytes_per_s", "value"),
    ("network", 0, "latency_s", "value"),
    ("network", 0, "efficiency", "value"),
]


@pytest.mark.parametrize("keys", PROFILE_FIELDS, ids=lambda k: ".".join(map(str, k)))
@pytest.mark.parametrize("value", YAML_BAD + ("1.0e-320",))
def test_bad_number_in_a_profile_yaml(capsys, tmp_path, keys, value):
    if keys[-1] == "half_saturation" and value in ("0", "1.0e-320"):
        pytest.skip("0 is a valid half-saturation (no size dependence)")
    data = yaml.safe_load((PROFILE_DIR / "h100-sxm.yaml").read_text())
    holder = data
    for k in keys[:-1]:
        holder = holder[k]
    holder[keys[-1]] = "@@"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False).replace("'@@'", value))
    run_fails(capsys, ["predict", "--model", "llama3-8b", "--hardware", str(path), "--chips", "8"],
              str(keys[-1]), "p.yaml")


# --- numbers in a published-runs row ---------------------------------------------------------

def _a_case_row():
    for r in all_rows():
        if isinstance(row_to_case(r), Case) and r.int("pp", default=1) > 1:
            return r
    raise AssertionError("no pipelined row maps to a case")


ROW_COLUMNS = ("n_layers", "d_model", "n_heads", "ffn_hidden", "vocab", "seq_len", "n_accel",
               "tp", "pp", "micro_batch", "global_batch_seqs", "step_time_s")


@pytest.mark.parametrize("column", ROW_COLUMNS)
@pytest.mark.parametrize("value", ("nan", "inf", "1e400", "1e-320", str(10**24), "-1"))
def test_bad_number_in_a_published_row(column, value):
    row = _a_case_row()
    bad = type(row)(row.line, {**row.raw, column: value})
    got = row_to_case(bad)
    assert isinstance(got, Skip), (column, value, got)
    assert column in got.reason and "\n" not in got.reason, got.reason


@pytest.mark.parametrize("vpp", ("100000", "64", str(10**24)))
def test_published_vpp_beyond_the_layers_is_a_skip(vpp):
    """A published vpp of 100000 would pad the model to 100000 x pp layers (out of memory):
    it is refused as predict refuses pipeline x virtual stages beyond the layers."""
    row = _a_case_row()
    got = row_to_case(type(row)(row.line, {**row.raw, "vpp": vpp}))
    assert isinstance(got, Skip) and "vpp" in got.reason, got


def test_published_file_of_bad_rows_is_one_error(capsys, tmp_path):
    raw = _a_case_row().raw
    csv = write_csv(tmp_path / "runs.csv", [{**raw, "step_time_s": "inf",
                                             "tokens_per_s_per_accel": "", "mfu_pct": "",
                                             "tflops_per_accel": ""},
                                            {**raw, "vpp": "100000"}])
    run_fails(capsys, ["validate", "--published", str(csv), "--cv", "none"], "published")


# --- files ----------------------------------------------------------------------------------

def _deep_yaml(path: Path, depth: int = 5000, flow: bool = True) -> Path:
    if flow:
        path.write_text("n_layers: " + "[" * depth + "]" * depth + "\n")
    else:
        path.write_text("".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth
                        + "x: 1\n")
    return path


@pytest.mark.parametrize("flag", ("--model", "--hardware"))
@pytest.mark.parametrize("kind", ("latin1", "deep_flow", "deep_block", "directory", "long_name",
                                  "binary"))
def test_bad_spec_file(capsys, tmp_path, flag, kind):
    if kind == "latin1":
        path = tmp_path / "x.yaml"
        path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    elif kind == "deep_flow":
        path = _deep_yaml(tmp_path / "x.yaml")
    elif kind == "deep_block":
        path = _deep_yaml(tmp_path / "x.yaml", 2000, flow=False)
    elif kind == "directory":
        path = tmp_path / "x.yaml"
        path.mkdir()
    elif kind == "long_name":
        path = tmp_path / ("a" * 300 + ".yaml")
    else:
        path = tmp_path / "x.yaml"
        path.write_bytes(bytes(range(256)) * 4)
    argv = ["predict", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8"]
    argv[argv.index(flag) + 1] = str(path)
    line = run_fails(capsys, argv)
    assert ("model" if flag == "--model" else "hardware") in line


def test_published_csv_not_utf8_or_a_directory(capsys, tmp_path):
    bad = tmp_path / "runs.csv"
    bad.write_bytes("source_id,model\nx,caf\xe9\n".encode("latin-1"))
    run_fails(capsys, ["validate", "--published", str(bad), "--cv", "none"], "published", "UTF-8")
    d = tmp_path / "dir.csv"
    d.mkdir()
    run_fails(capsys, ["validate", "--published", str(d), "--cv", "none"], "published",
              "directory")
    run_fails(capsys, ["validate", "--published", str(tmp_path / ("a" * 300 + ".csv")), "--cv",
                       "none"], "published")


@pytest.mark.parametrize("base, flag, suffix", [
    (RANK, "--out", ".csv"), (RANK, "--plot", ".png"), (PREDICT, "--trace", ".json"),
    (PREDICT, "--plot", ".png"), (PLAN, "--plot", ".png"), (COMPARE, "--plot", ".png")])
@pytest.mark.parametrize("kind", ("directory", "under_a_file", "long_name"))
def test_bad_output_path(capsys, tmp_path, base, flag, suffix, kind):
    if kind == "directory":
        target = tmp_path / f"d{suffix}"
        target.mkdir()
    elif kind == "under_a_file":
        (tmp_path / "f").write_text("x")
        target = tmp_path / "f" / f"out{suffix}"
    else:
        target = tmp_path / ("a" * 300 + suffix)
    run_fails(capsys, [*base, flag, str(target)], flag)


# --- a closed pipe and strict JSON ------------------------------------------------------------

def test_output_piped_into_head_stops_quietly(tmp_path):
    """``meshcast profiles --json | head -1`` (110 kB, more than a pipe holds): no BrokenPipeError
    traceback."""
    err = tmp_path / "err"
    cmd = f"{sys.executable} -m simulator.cli profiles --json 2>{err} | head -1"
    res = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[", res
    text = err.read_text()
    assert "Traceback" not in text and "BrokenPipe" not in text, text


def test_output_into_a_closed_pipe_exits_quietly():
    """The reader gone before the first write (deterministic): quiet, exit status of SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", "models"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the CLI takes far longer to import than this
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, (proc.returncode, err)
    assert err == b"", err


def _no_constant(name: str):
    raise AssertionError(f"non-strict JSON literal {name}")


@pytest.mark.parametrize("argv", [
    [*PREDICT, "--json"], [*RANK, "--json", "--top", "3"],
    ["plan", "--model", "dense-6.4b", "--hardware", "h100-sxm", "--chips", "8,16", "--json"],
    [*COMPARE, "--mesh", "data=1,expert=8", "--json"]],
    ids=lambda a: a[0])
def test_json_is_strict(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out
    json.loads(out, parse_constant=_no_constant)


def test_dumps_json_refuses_non_finite_values():
    assert json.loads(dumps_json({"a": [1.0, 2]}, "x")) == {"a": [1.0, 2]}
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(MeshcastError, match=r"rank: .*a\.b\[1\]"):
            dumps_json({"a": {"b": [0.0, bad]}}, "rank")
    with pytest.raises(MeshcastError, match="step_time_s"):
        check_finite({"step_time_s": -1.0}, "predict", nonnegative=True)
    check_finite({"step_time_s": -1.0}, "compare")  # a delta may be negative


def test_model_name_too_long_for_a_path(capsys):
    """Not a zoo name and too long to be a file: one line, no OSError traceback."""
    line = run_fails(capsys, ["predict", "--model", "m" * 300, "--hardware", "h100-sxm",
                              "--chips", "8"], "File name too long")
    assert line.startswith("error: model:"), line  # names the option that gave it


# --- found by the fuzz (tests/test_fuzz.py) -----------------------------------------------------

def _alias_bomb(path: Path, levels: int = 9) -> Path:
    """A 'billion laughs' YAML: each anchor ten aliases of the one before (10^9 values)."""
    lines = ['a0: &a0 ["x"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    path.write_text("\n".join(lines) + f"\nn_layers: *a{levels}\n")
    return path


@pytest.mark.parametrize("flag", ("--model", "--hardware"))
def test_yaml_aliases_that_expand_to_billions_are_refused_at_once(capsys, tmp_path, flag):
    """The depth check walked every alias again (10^9 steps: a hang); values are now counted
    as the loader would expand them and the walk stops at the bound."""
    import time

    argv = ["predict", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8"]
    argv[argv.index(flag) + 1] = str(_alias_bomb(tmp_path / "x.yaml"))
    t0 = time.perf_counter()
    line = run_fails(capsys, argv, "x.yaml", "100,000 values")
    assert time.perf_counter() - t0 < 10, line


@pytest.mark.parametrize("argv", [
    [*PREDICT, "--chips=--"], [*PREDICT, "--seq-len=--"], [*PREDICT, "--mesh=--"],
    [*RANK, "--top=--"], [*PLAN, "--deadline=--"], [*COMPARE, "--global-batch=--"],
    ["validate", "--published", "runs.csv", "--moe-host-issue-s=--"]],
    ids=lambda a: a[-1])
def test_an_option_given_double_dash_is_refused(capsys, argv):
    """``--flag=--``: argparse took the ``--`` for the end of options and stored ``[]`` without
    calling the option's type (validate --published: a TypeError traceback; predict: a
    pydantic error about a list)."""
    flag = argv[-1].split("=")[0]
    run_fails(capsys, argv, flag, "'--'")


@pytest.mark.parametrize("flag", ("--model", "--hardware"))
def test_yaml_text_that_is_not_unicode_is_refused(capsys, tmp_path, flag):
    """``name: "caf\\uDCE9"`` (a lone surrogate by escape): read, then a UnicodeEncodeError
    traceback where the report printed the name; now refused at load with the line."""
    src = ZOO_DIR / "llama3-8b.yaml" if flag == "--model" else PROFILE_DIR / "h100-sxm.yaml"
    lines = src.read_text().splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("name:"))
    lines[i] = 'name: "caf\\uDCE9"'
    path = tmp_path / "x.yaml"
    path.write_text("\n".join(lines) + "\n")
    argv = ["predict", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8"]
    argv[argv.index(flag) + 1] = str(path)
    run_fails(capsys, argv, f"x.yaml line {i + 1}", "not valid Unicode")
