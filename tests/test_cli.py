"""The ``meshcast`` CLI: predict (text, --json, --trace), profiles, models, and bad input.

Runs ``simulator.cli.main.main(argv)`` in-process with capsys, plus one run of the installed console
script. Bad input must exit 2 with an ``error:`` message naming the field, never a traceback.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from hardware_profiles import load_profile
from tests.cli_helpers import fails, ok

ROOT = Path(__file__).resolve().parents[1]
MESHCAST = ROOT / ".venv" / "bin" / "meshcast"
BASE = ["predict", "--model", "llama3-8b", "--hardware", "h100-sxm"]

MEMORY_KEYS = {"weights_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes",
               "transient_bytes", "per_device_bytes", "capacity_bytes", "fits"}


# --- predict -----------------------------------------------------------------------------------
def test_predict_json_is_one_object_with_the_documented_keys(capsys):
    out = ok(capsys, [*BASE, "--chips", "16", "--mesh", "fsdp=8,data=-1", "--global-batch", "32",
                      "--json"])
    d = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(d, dict)
    for key in ("step_time_s", "tokens_per_s", "mfu", "breakdown_s", "memory"):
        assert key in d, key
    assert d["step_time_s"] > 0 and d["tokens_per_s"] > 0 and 0 < d["mfu"] < 1
    assert d["breakdown_s"] and all(isinstance(k, str) and isinstance(v, float)
                                    for k, v in d["breakdown_s"].items())
    assert math.isclose(sum(d["breakdown_s"].values()), d["step_time_s"], rel_tol=1e-9)
    mem = d["memory"]
    assert MEMORY_KEYS <= set(mem)
    assert isinstance(mem["fits"], bool)
    assert mem["fits"] == (mem["per_device_bytes"] <= mem["capacity_bytes"])
    assert mem["capacity_bytes"] == load_profile("h100-sxm").chip.hbm_capacity_bytes.value
    assert d["chips"] == 16 and d["mesh"] == {"data": 2, "fsdp": 8}
    assert d["global_batch_seqs"] == 32
    assert d["tokens_per_s"] == pytest.approx(32 * d["seq_len"] / d["step_time_s"])


def test_predict_text_mentions_step_time_mfu_breakdown_and_memory(capsys):
    out = ok(capsys, [*BASE, "--chips", "8"])
    low = out.lower()
    for word in ("step time", "mfu", "breakdown", "memory", "llama3-8b", "h100-sxm"):
        assert word in low, word
    d = json.loads(ok(capsys, [*BASE, "--chips", "8", "--json"]))
    for name in d["breakdown_s"]:  # every breakdown entry is listed
        assert name in out


def test_predict_text_warns_when_it_does_not_fit(capsys):
    out = ok(capsys, [*BASE, "--chips", "8", "--micro-batch", "16", "--remat", "none"])
    assert "DOES NOT FIT" in out and "warning:" in out


@pytest.mark.parametrize("mesh", ["data=-1", "pipeline=2,data=-1"])
def test_trace_is_a_chrome_trace(capsys, tmp_path, mesh):
    path = tmp_path / "step.json"
    ok(capsys, [*BASE, "--chips", "16", "--mesh", mesh, "--global-batch", "32",
                "--trace", str(path)])
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert complete
    for e in complete:
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0
        assert {"pid", "tid", "name"} <= set(e)
    assert all(e["ph"] in ("X", "M") for e in events)
    if mesh.startswith("pipeline"):  # the pipeline schedule is its own process
        assert any(e["pid"] == 2 for e in complete)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_trace_to_an_unwritable_path_is_an_error(capsys, tmp_path):
    fails(capsys, [*BASE, "--chips", "8", "--trace", str(tmp_path / "no" / "such" / "t.json")],
          "trace")


def test_installed_console_script(tmp_path):
    r = subprocess.run([str(MESHCAST), *BASE, "--chips", "8", "--json"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["model"] == "llama3-8b" and d["step_time_s"] > 0
    bad = subprocess.run([str(MESHCAST), *BASE, "--chips", "8", "--mesh", "data=3"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error:") and "Traceback" not in bad.stderr
    assert "mesh" in bad.stderr and bad.stdout == ""


# --- profiles / models -------------------------------------------------------------------------

def test_profiles_lists_h100(capsys):
    assert "h100-sxm" in ok(capsys, ["profiles"])
    names = [p["name"] for p in json.loads(ok(capsys, ["profiles", "--json"]))]
    assert "h100-sxm" in names


def test_models_lists_llama3_8b(capsys):
    assert "llama3-8b" in ok(capsys, ["models"])
    models = json.loads(ok(capsys, ["models", "--json"]))
    llama = next(m for m in models if m["name"] == "llama3-8b")
    assert 7e9 < llama["total_params"] < 9e9
    assert llama["active_params"] == llama["total_params"]


# --- bad input ---------------------------------------------------------------------------------

MOE_YAML = """\
name: tiny-moe
source: "inline test model"
n_layers: 4
d_model: 256
n_heads: 4
ffn_hidden: 512
vocab_size: 512
seq_len: 256
moe: {n_experts: 6, top_k: 2, expert_ffn_hidden: 256}
"""


@pytest.fixture
def moe_yaml(tmp_path) -> Path:
    p = tmp_path / "tiny-moe.yaml"
    p.write_text(MOE_YAML)
    return p


def test_moe_yaml_model_runs(capsys, moe_yaml):
    d = json.loads(ok(capsys, ["predict", "--model", str(moe_yaml), "--hardware", "h100-sxm",
                               "--chips", "8", "--mesh", "expert=2,data=-1", "--json"]))
    assert d["model"] == "tiny-moe" and d["mesh"] == {"data": 4, "expert": 2}


@pytest.mark.parametrize("args, names", [
    (["--chips", "8", "--mesh", "data=4"], ["mesh", "chips=8"]),
    (["--chips", "8", "--mesh", "data=2,fsdp=2,model=4"], ["mesh", "16"]),
    (["--chips", "8", "--mesh", "pipeline=3,data=-1"], ["mesh", "does not divide 8"]),
    (["--chips", "8", "--mesh", ",,,"], ["mesh"]),
], ids=["product-lt-chips", "product-gt-chips", "rest-not-whole", "empty-mesh"])
def test_mesh_product_must_equal_chips(capsys, args, names):
    fails(capsys, [*BASE, *args], *names)


def test_minus_one_twice(capsys):
    fails(capsys, [*BASE, "--chips", "8", "--mesh", "data=-1,fsdp=-1"], "mesh", "-1")


def test_heads_not_divisible_by_model(capsys):
    msg = fails(capsys, [*BASE, "--chips", "24", "--mesh", "data=-1,model=3"],
                "mesh.model=3", "n_heads=32")
    assert "[1, 2, 4, 8]" in msg  # the valid sizes


def test_expert_axis_on_a_dense_model(capsys):
    fails(capsys, [*BASE, "--chips", "8", "--mesh", "expert=2,data=-1"], "mesh.expert=2", "dense")


def test_experts_not_divisible_by_expert(capsys, moe_yaml):
    msg = fails(capsys, ["predict", "--model", str(moe_yaml), "--hardware", "h100-sxm",
                         "--chips", "8", "--mesh", "expert=4,data=-1"],
                "mesh.expert=4", "n_experts=6")
    assert "[1, 2, 3, 6]" in msg


def test_layers_not_divisible_by_pipeline(capsys):
    fails(capsys, [*BASE, "--chips", "24", "--mesh", "pipeline=3,data=-1"],
          "mesh.pipeline=3", "n_layers=32")


def test_layers_not_divisible_by_interleaved_stages(capsys):
    fails(capsys, [*BASE, "--chips", "16", "--mesh", "pipeline=8,data=-1", "--global-batch", "16",
                   "--pipeline-schedule", "interleaved", "--virtual-stages", "3"],
          "pipeline", "virtual_stages=3")


def test_virtual_stages_need_interleaved(capsys):
    fails(capsys, [*BASE, "--chips", "8", "--virtual-stages", "2"], "virtual_stages")


@pytest.mark.parametrize("args, names", [
    (["--chips", "8", "--global-batch", "12"], ["global_batch=12", "8"]),
    (["--chips", "8", "--global-batch", "8", "--micro-batch", "2"], ["global_batch=8", "16"]),
    (["--chips", "8", "--global-batch-tokens", "100"], ["global_batch_tokens=100", "seq_len"]),
], ids=["batch-vs-data", "batch-vs-micro-batch", "tokens-vs-seq"])
def test_batch_not_divisible_by_batch_axes(capsys, args, names):
    fails(capsys, [*BASE, *args], *names)


def test_unknown_hardware_lists_known_profiles(capsys):
    msg = fails(capsys, ["predict", "--model", "llama3-8b", "--hardware", "tpu-v9",
                         "--chips", "8"], "hardware", "tpu-v9")
    assert "h100-sxm" in msg


def test_unknown_model_lists_known_models(capsys):
    msg = fails(capsys, ["predict", "--model", "gpt-17", "--hardware", "h100-sxm",
                         "--chips", "8"], "model", "gpt-17")
    assert "llama3-8b" in msg


def test_missing_profile_and_model_files(capsys, tmp_path):
    fails(capsys, ["predict", "--model", "llama3-8b", "--hardware",
                   str(tmp_path / "nothere.yaml"), "--chips", "8"], "hardware", "nothere.yaml")
    fails(capsys, ["predict", "--model", str(tmp_path / "nothere.yaml"), "--hardware",
                   "h100-sxm", "--chips", "8"], "model", "nothere.yaml")


def test_broken_yaml_profile(capsys, tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [broken\n  chip: {\n")
    fails(capsys, ["predict", "--model", "llama3-8b", "--hardware", str(p), "--chips", "8"],
          "hardware profile", "not valid YAML")


def test_profile_that_is_not_a_mapping(capsys, tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    fails(capsys, ["predict", "--model", "llama3-8b", "--hardware", str(p), "--chips", "8"],
          "hardware profile", "mapping")


def test_profile_with_negative_bandwidth(capsys, tmp_path):
    text = (ROOT / "hardware_profiles" / "h100-sxm.yaml").read_text()
    assert "value: 50.0e9" in text
    p = tmp_path / "neg.yaml"
    p.write_text(text.replace("value: 50.0e9", "value: -50.0e9"))
    fails(capsys, ["predict", "--model", "llama3-8b", "--hardware", str(p), "--chips", "8"],
          "network.1.link_bandwidth_bytes_per_s.value", "greater than 0")


def test_broken_yaml_model(capsys, tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("n_layers: [1,\n")
    fails(capsys, ["predict", "--model", str(p), "--hardware", "h100-sxm", "--chips", "8"],
          "model", "not valid YAML")


def test_model_yaml_with_a_bad_field(capsys, tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text(MOE_YAML.replace("n_heads: 4", "n_heads: 0"))
    fails(capsys, ["predict", "--model", str(p), "--hardware", "h100-sxm", "--chips", "8"],
          "n_heads")


@pytest.mark.parametrize("args, names", [
    (["--chips", "0"], ["chips"]),
    (["--chips", "-8"], ["chips"]),
    (["--chips", "8", "--micro-batch", "0"], ["micro_batch"]),
    (["--chips", "8", "--micro-batch", "-1"], ["micro_batch"]),
    (["--chips", "8", "--global-batch", "0"], ["global_batch"]),
    (["--chips", "8", "--global-batch", "-4"], ["global_batch"]),
    (["--chips", "8", "--global-batch-tokens", "-1"], ["global_batch_tokens"]),
    (["--chips", "8", "--seq-len", "0"], ["seq_len"]),
    (["--chips", "8", "--virtual-stages", "0"], ["virtual_stages"]),
    (["--chips", "8", "--mesh", "data=0"], ["mesh", "data=0"]),
    (["--chips", "8", "--mesh", "data=-2"], ["mesh", "data=-2"]),
    (["--chips", "8", "--mesh", "data=-1,model=0"], ["mesh", "model=0"]),
], ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0].startswith("--") else None)
def test_zero_or_negative_sizes(capsys, args, names):
    fails(capsys, [*BASE, *args], *names)


@pytest.mark.parametrize("mesh, names", [
    ("data:8", ["mesh", "'data:8'", "AXIS=SIZE"]),
    ("tensor=8", ["mesh", "'tensor=8'", "data, fsdp"]),
    ("data", ["mesh", "'data'"]),
    ("data=x", ["mesh", "'x'", "data"]),
    ("data=2.5", ["mesh", "'2.5'"]),
    ("data=", ["mesh", "data"]),
    ("=8", ["mesh", "'=8'"]),
])
def test_bad_mesh_syntax(capsys, mesh, names):
    fails(capsys, [*BASE, "--chips", "8", "--mesh", mesh], *names)


@pytest.mark.parametrize("bind, names", [
    ("data", ["bind", "'data'"]),
    ("data=foo", ["bindings.data", "'foo'", "nvlink"]),
    ("tensor=nvlink", ["bind", "'tensor=nvlink'"]),
])
def test_bad_bindings(capsys, bind, names):
    fails(capsys, [*BASE, "--chips", "8", "--bind", bind], *names)


def test_chips_that_do_not_fill_nvlink_groups(capsys):
    fails(capsys, [*BASE, "--chips", "12"], "chips", "12", "nvlink")


def test_chips_beyond_the_largest_system(capsys):
    fails(capsys, [*BASE, "--chips", str(8 * 4096 * 2)], "chips")


@pytest.mark.parametrize("value, names", [("0.5", ["load-imbalance", ">= 1"])])
def test_load_imbalance_below_one(capsys, moe_yaml, value, names):
    fails(capsys, ["predict", "--model", str(moe_yaml), "--hardware", "h100-sxm", "--chips", "8",
                   "--mesh", "expert=2,data=-1", "--load-imbalance", value], *names)


def test_load_imbalance_on_a_dense_model(capsys):
    fails(capsys, [*BASE, "--chips", "8", "--load-imbalance", "1.5"], "load-imbalance", "dense")


def test_bad_slice_syntax(capsys):
    fails(capsys, [*BASE, "--chips", "8", "--slice", "axb"], "slice", "'axb'")


@pytest.mark.parametrize("argv", [
    [*BASE, "--chips", "x"],
    [*BASE],
    [*BASE, "--chips", "8", "--remat", "some"],
    [*BASE, "--chips", "8", "--global-batch", "8", "--global-batch-tokens", "8192"],
    ["frobnicate"],
], ids=["chips-not-int", "chips-missing", "bad-choice", "both-batches", "bad-command"])
def test_argparse_errors_exit_2(capsys, argv):
    fails(capsys, argv)


def test_repeated_mesh_axis_is_an_error(capsys):
    fails(capsys, [*BASE, "--chips", "8", "--mesh", "data=4,data=-1"], "mesh", "data")


def test_slice_on_a_gpu_profile_is_an_error(capsys):
    fails(capsys, [*BASE, "--chips", "8", "--slice", "4x4x4"], "slice")


def test_optimizer_dtypes_shrink_memory(capsys):
    import json as _json

    from simulator.cli.main import main as _main

    base = ["predict", "--model", "llama3-8b", "--hardware", "h100-sxm", "--chips", "8",
            "--mesh", "fsdp=8", "--json"]
    assert _main(base) == 0
    full = _json.loads(capsys.readouterr().out)["memory"]
    assert _main(base + ["--optimizer-state", "bf16", "--grad-dtype", "bf16"]) == 0
    half = _json.loads(capsys.readouterr().out)["memory"]
    assert half["optimizer_bytes"] < full["optimizer_bytes"]
    assert half["gradients_bytes"] == full["gradients_bytes"] / 2


def test_predict_comm_overlap_flags_and_fp4_reach_the_forecast(capsys):
    import json

    base = ["predict", "--model", "mixtral-8x7b", "--hardware", "b200", "--chips", "64",
            "--mesh", "data=-1,expert=8,model=2", "--seq-len", "4096", "--global-batch", "256",
            "--json"]

    def step(*extra):
        return json.loads(ok(capsys, base + list(extra)))

    plain = step()
    tp, ep = step("--tp-comm-overlap"), step("--ep-comm-overlap")
    assert tp["step_time_s"] < plain["step_time_s"] and ep["step_time_s"] < plain["step_time_s"]
    assert (tp["breakdown_s"]["comm.all_gather.model"]
            < plain["breakdown_s"]["comm.all_gather.model"])  # hidden under the GEMMs
    fp4, fp8 = step("--precision", "fp4"), step("--precision", "fp8")
    assert fp4["precision"] == "fp4" and fp4["step_time_s"] < fp8["step_time_s"]


def test_predict_fused_loss_flag_counts_the_logits_in_place(capsys):
    """--fused-loss: the last rank's logits in bf16 with the gradient written in place
    (2 B per element) instead of fp32 logits and gradient (8 B): the transient drops by
    ``6 T V / t`` and the step time does not move."""
    base = [*BASE, "--chips", "8", "--mesh", "data=4,model=2", "--seq-len", "4096",
            "--global-batch", "8", "--json"]
    plain, fused = json.loads(ok(capsys, base)), json.loads(ok(capsys, [*base, "--fused-loss"]))
    T, t, V = 4096, 2, 128256  # one sequence per data shard; llama3-8b's vocabulary
    assert plain["memory"]["transient_bytes"] - fused["memory"]["transient_bytes"] == \
        pytest.approx(6 * T * V / t)
    assert fused["step_time_s"] == plain["step_time_s"]
