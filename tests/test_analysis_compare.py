"""MoE vs dense at equal step time (issue 6): the budgeting, the exact decomposition of the MoE
step-time increase, and the yardstick views."""

from __future__ import annotations

import math

import pytest

from simulator import predict
from simulator.analysis.attribution import PARTS, attribute
from simulator.cost.budget import Budget, chinchilla_tokens
from simulator.analysis.compare import compare, dense_mesh
from simulator.cli.compare_report import comparison_dict
from simulator.analysis.decompose import INCREASE_PARTS, decompose_predictions, unpadded
from meshcast.errors import MeshcastError
from simulator.cost.flops import model_flops_per_token
from simulator.analysis.matched import equal_time_steps, matched
from simulator.specs.zoo import load_model

B = 64 * 2048  # tokens per step in the end-to-end cases: 64 sequences of 2,048
JOB = dict(hardware="h100-sxm", chips=32, global_batch=64, seq_len=2048, remat="selective")
MESH = {"data": -1, "expert": 8, "model": 2}


def test_equal_step_time_budget_hand_worked():
    # A 1B-parameter dense model, 20 tokens per parameter: 20e9 tokens in steps of 2^22 tokens.
    # Steps: ceil(20e9 / 4,194,304) = ceil(4768.37) = 4769; at 2.0 s a step the wall clock is
    # 9,538 s. An MoE step of 2.5 s fits floor(9538 / 2.5) = floor(3815.2) = 3815 steps in it:
    # 3815 x 4,194,304 = 16,001,269,760 tokens in 9,537.5 s.
    dense = Budget(20_000_000_000, 4_194_304, 2.0, 64, None)
    assert dense.steps == 4769 and dense.seconds == 9538.0
    assert equal_time_steps(4769, 2.0, 2.5) == 3815
    m = matched("step_time", 4769, 4_194_304, None, None, 4096, 2.0, 2.5)
    assert (m.steps, m.tokens, m.seconds) == (3815, 16_001_269_760, 9537.5)
    assert m.wall_clock_ratio == pytest.approx(9537.5 / 9538.0, rel=1e-15)
    # The same step time keeps every step; a faster MoE gets more.
    assert equal_time_steps(4769, 2.0, 2.0) == 4769
    assert equal_time_steps(4769, 2.0, 1.0) == 9538


def test_equal_step_time_budget_on_forecasts():
    c = compare("dense-6.4b", ["moe-6.4b"], mesh=MESH, **JOB)
    dense, moe = load_model("dense-6.4b"), load_model("moe-6.4b")
    # The forecasts are predict's own, on the same mesh (the dense folds expert into data).
    t_d = predict(model=dense, mesh={"data": -1, "model": 2}, **JOB).step_time_s
    t_m = predict(model=moe, mesh=MESH, **JOB).step_time_s
    assert (c.dense.step_time_s, c.moes[0].prediction.step_time_s) == (t_d, t_m)
    steps_d = math.ceil(chinchilla_tokens(dense, 20.0) / B)
    assert (c.budget.tokens, c.budget.steps) == (chinchilla_tokens(dense, 20.0), steps_d)
    view = c.moes[0].views["step_time"]
    assert view.steps == math.floor(steps_d * t_d / t_m)
    assert view.tokens == view.steps * B
    assert view.seconds <= c.budget.seconds < view.seconds + t_m


def _padded(cf: float):
    m = load_model("moe-6.4b")
    return m.model_copy(update={"name": "moe-6.4b-cf", "moe": m.moe.model_copy(
        update={"capacity_factor": cf})})


def _imbalanced(x: float):
    m = load_model("mixtral-8x7b")
    return m.model_copy(update={"moe": m.moe.model_copy(update={"load_imbalance": x})})


CASES = {
    "moe-6.4b, no slack (cf = top-k)": ("dense-6.4b", "moe-6.4b", MESH, {}),
    "cf 2.5 over top-2": ("dense-6.4b", _padded(2.5), MESH, {}),
    "cf 1.5 under top-2 (drops tokens)": ("dense-6.4b", _padded(1.5), {"fsdp": -1, "expert": 4}, {}),
    "dropless, imbalance 1.3": ("llama3-8b", _imbalanced(1.3), {"data": -1, "expert": 8}, {}),
    "pipeline": ("dense-6.4b", "moe-6.4b", {"data": -1, "expert": 4, "pipeline": 2}, {}),
    "TP and EP comm overlap": ("dense-6.4b", "moe-6.4b", MESH,
                               {"tp_comm_overlap": True, "ep_comm_overlap": True}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_moe_increase_decomposes_exactly_into_its_parts(case):
    dense, moe, mesh, extra = CASES[case]
    dpred = predict(model=load_model(dense), mesh=dense_mesh(mesh), **JOB, **extra)
    mpred = predict(model=moe if not isinstance(moe, str) else load_model(moe), mesh=mesh, **JOB,
                    **extra)
    inc, att = decompose_predictions(dpred, mpred)
    assert set(inc.parts_s) == set(INCREASE_PARTS)
    assert sum(inc.parts_s.values()) == pytest.approx(mpred.step_time_s - dpred.step_time_s,
                                                      rel=1e-9, abs=1e-12)
    for a, p in ((att["dense"], dpred), (att["moe"], mpred)):
        assert set(a.by_part) == set(PARTS)
        assert sum(a.by_part.values()) == pytest.approx(p.step_time_s, rel=1e-12)
    # The dense model has no router, dispatch or all-to-all: those parts are the MoE's own.
    assert att["dense"].by_part["router"] == att["dense"].by_part["all_to_all"] == 0.0
    base = att["moe_unpadded"] or att["moe"]
    assert inc.parts_s["router"] == base.by_part["router"] > 0
    assert inc.parts_s["all_to_all"] == base.by_part["all_to_all"]


def test_capacity_padding_is_the_forecast_of_the_unpadded_moe():
    dpred = predict(model=load_model("dense-6.4b"), mesh=dense_mesh(MESH), **JOB)
    for cf in (2.0, 2.5, 1.5):
        mpred = predict(model=_padded(cf), mesh=MESH, **JOB)
        inc, _ = decompose_predictions(dpred, mpred)
        m0 = predict(model=_padded(2.0), mesh=MESH, **JOB)  # exactly top-2 slots per token
        assert inc.parts_s["capacity_padding"] == pytest.approx(
            mpred.step_time_s - m0.step_time_s, rel=1e-12, abs=1e-15)
        pad = inc.parts_s["capacity_padding"]
        assert {2.0: pad == 0.0, 2.5: pad > 0, 1.5: pad < 0}[cf], (cf, pad)
    assert unpadded(load_model("moe-6.4b")) is None  # cf 2.0 with top-2: nothing to remove
    assert inc.parts_s["all_to_all"] == pytest.approx(
        m0.breakdown_s["comm.all_to_all.expert"], rel=1e-12)


def test_attribution_agrees_with_the_breakdown_on_a_sharded_dense_job():
    p = predict(model="llama3-8b", hardware="h100-sxm", chips=16, mesh={"fsdp": 8, "seq": 2},
                global_batch=16, seq_len=4096)
    a = attribute(p)  # raises if its categories disagree with p.breakdown_s
    assert a.by_part["cp_comm"] > 0 and a.by_part["weight_sync"] > 0
    assert sum(a.by_tag.values()) == pytest.approx(p.step_time_s, rel=1e-12)


def _flat(d, prefix=""):
    if isinstance(d, dict):
        return {k2: v2 for k, v in d.items() for k2, v2 in _flat(v, f"{prefix}{k}.").items()}
    if isinstance(d, list):
        return {k2: v2 for i, v in enumerate(d) for k2, v2 in _flat(v, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): d}


def test_flop_matched_view_changes_the_headline_and_nothing_else():
    runs = {v: comparison_dict(compare("dense-6.4b", ["moe-6.4b", "mixtral-8x7b"], mesh=MESH,
                                       view=v, **JOB)) for v in ("step_time", "flops")}
    a, b = _flat(runs["step_time"]), _flat(runs["flops"])
    assert a.keys() == b.keys()
    changed = {k for k in a if a[k] != b[k]}
    assert "view" in changed
    assert changed - {"view"} <= {k for k in a if ".headline." in k}
    dense, seq = load_model("dense-6.4b"), 2048
    steps_d = runs["flops"]["dense"]["budget"]["steps"]
    for i, name in enumerate(["moe-6.4b", "mixtral-8x7b"]):
        head = runs["flops"]["moe"][i]["headline"]
        ratio = model_flops_per_token(dense, seq) / model_flops_per_token(load_model(name), seq)
        assert head["steps"] == math.floor(steps_d * ratio)
        assert head == runs["flops"]["moe"][i]["views"]["flops"]
        assert head["tokens"] != runs["step_time"]["moe"][i]["headline"]["tokens"]
        assert f"moe.{i}.headline.tokens" in changed


def test_activated_parameter_view_uses_active_parameters():
    c = compare("dense-6.4b", "moe-6.4b", mesh=MESH, view="active_params", **JOB)
    dense, moe = load_model("dense-6.4b"), load_model("moe-6.4b")
    assert c.moes[0].headline.steps == math.floor(c.budget.steps * dense.total_params
                                                  / moe.active_params)


def test_dense_mesh_folds_expert_into_data():
    assert dense_mesh({"data": -1, "expert": 8, "model": 2}) == {"data": -1, "model": 2}
    assert dense_mesh({"data": 2, "expert": 8}) == {"data": 16}
    assert dense_mesh({"expert": 8, "model": 4}) == {"model": 4, "data": 8}


@pytest.mark.parametrize("dense,moe,field", [("moe-6.4b", "moe-6.4b", "dense: moe-6.4b"),
                                             ("dense-6.4b", "dense-6.4b", "moe: dense-6.4b"),
                                             ("dense-6.4b", "no-such-model", "no-such-model")])
def test_bad_models_name_the_field(dense, moe, field):
    with pytest.raises(MeshcastError, match=field):
        compare(dense, [moe], mesh=MESH, **JOB)


def test_bad_view_and_ratio_name_the_field():
    with pytest.raises(MeshcastError, match="view: 'tokens'"):
        compare("dense-6.4b", ["moe-6.4b"], mesh=MESH, view="tokens", **JOB)
    with pytest.raises(MeshcastError, match="tokens-per-param"):
        compare("dense-6.4b", ["moe-6.4b"], mesh=MESH, tokens_per_param=0, **JOB)


def test_interruptions_at_equal_interruption_rate():
    """With failures counted, the dense budget's wall clock grows past its ideal, and the MoE
    (its checkpoint holds all experts) keeps a lower goodput on the same chips at the same
    rate; without them nothing changes."""
    from simulator.cli.compare_report import comparison_dict

    plain = compare("dense-6.4b", ["moe-6.4b"], mesh=MESH, **JOB)
    c = compare("dense-6.4b", ["moe-6.4b"], mesh=MESH, failures={"rate": 0.05}, **JOB)
    assert plain.budget.goodput is None and plain.moes[0].goodput is None
    assert c.budget.ideal_days == pytest.approx(plain.budget.days)
    assert c.budget.days > c.budget.ideal_days
    g = c.moes[0].goodput
    assert g.checkpoint_bytes > c.budget.goodput.checkpoint_bytes
    assert g.goodput < c.budget.goodput.goodput < 1
    assert g.ideal_s == pytest.approx(c.moes[0].headline.seconds)
    d = comparison_dict(c)
    assert d["moe"][0]["goodput"]["goodput"] == g.goodput
    assert d["dense"]["budget"]["goodput"]["expected_days"] == pytest.approx(c.budget.days)
