"""Every bad combination fails at load, naming the field, the value and what would be valid."""

from __future__ import annotations

import pytest

from meshcast.errors import MeshcastError
from simulator.predict import predict
from simulator.specs.job import resolve_mesh
from simulator.specs.model import ModelSpec, MoESpec
from simulator.specs.sharding import parse_bindings, parse_mesh

DENSE = ModelSpec(name="d", source="test", n_layers=6, d_model=512, n_heads=8, n_kv_heads=4,
                  ffn_hidden=2048, vocab_size=1000, seq_len=256)
MOE = DENSE.model_copy(update={"name": "m", "moe": MoESpec(n_experts=6, top_k=2,
                                                            expert_ffn_hidden=512)})


def run(model=DENSE, chips=8, **kw):
    return predict(model=model, hardware="h100-sxm", chips=chips, **kw)


@pytest.mark.parametrize("kw,pattern", [
    (dict(mesh={"data": 3}), r"mesh: data=3 = 3 devices but chips=8; make the product 8"),
    (dict(mesh={"data": -1, "model": 3}), r"mesh: .*model=3.*does not divide 8"),
    (dict(mesh={"data": 2, "model": 8}, chips=16),
     r"mesh.model=8: must divide n_heads=8 and n_kv_heads=4.*valid model sizes: \[1, 2, 4\]"),
    (dict(mesh={"data": 2, "pipeline": 4}), r"mesh.pipeline=4 .*n_layers=6; valid: \[1, 2, 3, 6\]"),
    (dict(mesh={"data": 8}, global_batch=12),
     r"global_batch=12 sequences: not divisible by .* = 8; use a multiple of 8"),
    (dict(mesh={"data": 8}, global_batch_tokens=1000),
     r"global_batch_tokens=1000: not a multiple of seq_len=256"),
    (dict(mesh={"data": 4, "seq": 2}, seq_len=255), r"mesh.seq=2: must divide seq_len=255"),
    (dict(mesh={"data": 2, "expert": 4}), r"mesh.expert=4: d is dense"),
    (dict(mesh={"data": -1, "pipeline": 2}, pipeline_schedule="interleaved", virtual_stages=3,
          global_batch=12), r"interleaved schedule needs micro-batches \(3\) to be a multiple"),
    (dict(mesh={"data": 8}, virtual_stages=2), r"virtual_stages=2 needs pipeline_schedule='interleaved'"),
    (dict(mesh={"data": 0}), r"sharding.mesh: .*data=0: sizes must be positive"),
    (dict(mesh={"data": -1, "fsdp": -1}), r"at most one axis may be -1"),
    (dict(micro_batch=-2), r"sharding.micro_batch: .*greater than or equal to 1 \(got -2\)"),
    (dict(chips=0), r"chips: .*greater than or equal to 1|chips: 0"),
    (dict(chips=12), r"chips: 12 does not fill whole nvlink groups of 8"),
    (dict(bindings={"model": ["ici_x"]}, mesh={"model": 2, "data": 4}),
     r"bindings.model: unknown level 'ici_x'; this job's levels are nvlink, ib"),
])
def test_bad_job_names_field_value_and_fix(kw, pattern):
    chips = kw.pop("chips", 8)
    with pytest.raises(MeshcastError, match=pattern):
        run(chips=chips, **kw)


def test_experts_not_divisible_by_expert_axis():
    with pytest.raises(MeshcastError, match=r"mesh.expert=4: must divide n_experts=6.*\[1, 2, 3, 6\]"):
        run(model=MOE, mesh={"data": 2, "expert": 4})


def test_bad_model_fields():
    with pytest.raises(ValueError, match="n_heads=6 must be a multiple of n_kv_heads=4"):
        DENSE.model_validate(dict(DENSE.model_dump(), n_heads=6, d_model=768))
    with pytest.raises(ValueError, match="top_k=3 exceeds n_experts=2"):
        MoESpec(n_experts=2, top_k=3, expert_ffn_hidden=8)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(MeshcastError, match="unknown model 'gpt-9'.*llama3-8b"):
        predict(model="gpt-9", hardware="h100-sxm", chips=8)
    with pytest.raises(MeshcastError, match="unknown profile 'x100'.*h100-sxm"):
        predict(model=DENSE, hardware="x100", chips=8)


def test_mesh_parsing():
    assert parse_mesh("data=-1, fsdp=8") == {"data": -1, "fsdp": 8}
    assert parse_bindings("model=nvlink,fsdp=ici_x+ici_y") == {"model": ["nvlink"],
                                                               "fsdp": ["ici_x", "ici_y"]}
    for bad in ("dat=2", "data", "data=x"):
        with pytest.raises(MeshcastError, match="mesh: "):
            parse_mesh(bad)
    assert resolve_mesh({"data": -1, "model": 4}, 32)["data"] == 8


def test_global_batch_tokens_and_defaults():
    p = run(mesh={"data": 8}, global_batch_tokens=256 * 32, micro_batch=2)
    assert p.job.global_batch == 32 and p.microbatches == 2
    assert run(mesh={"data": 8}).job.global_batch == 8
