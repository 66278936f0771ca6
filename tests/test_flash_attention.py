"""The flash-attention switch (ShardingSpec.flash_attention): without it the attention score
matrices are written, soft-maxed, dropped out and read back in HBM and stored for the backward
(Korthikanti et al. 2022 sec. 4.1: 5 a s^2 b bytes per layer), by one formula
(simulator.graph.layers.unfused_score_bytes) on the graph and the search paths."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.graph.layers import unfused_score_bytes
from simulator.predict import predict
from simulator.search import enumerate_candidates, make_space
from simulator.search.fast import memory_per_device
from simulator.specs.zoo import load_model
from tests.test_search_agreement import assert_sample_agrees

LONG = dict(model="llama3-8b", hardware="h100-sxm", chips=8, mesh={"data": 8}, global_batch=8,
            seq_len=8192)


def test_score_bytes_per_element():
    sb = unfused_score_bytes(2.0)
    assert (sb.gemm_fwd + sb.softmax_fwd, 2 * sb.gemm_fwd + sb.softmax_bwd, sb.stored) == (
        13.0, 19.0, 5.0)  # bf16: forward, backward, stored (Korthikanti's 5 a s^2 b)


def test_unfused_attention_is_slower_and_stores_the_scores():
    flash = predict(remat="none", **LONG)
    plain = predict(remat="none", flash_attention=False, **LONG)
    assert plain.step_time_s > 1.3 * flash.step_time_s
    assert plain.memory.activations_bytes > flash.memory.activations_bytes
    # the difference is the scores alone: L layers x N heads x s^2 x 5 bytes per sequence
    m = load_model("llama3-8b")
    extra = m.n_layers * m.n_heads * 8192 * 8192 * 5.0
    assert plain.memory.activations_bytes - flash.memory.activations_bytes == pytest.approx(
        extra, rel=1e-12)


def test_selective_recompute_recomputes_the_scores():
    """Korthikanti's selective recompute: the score path is recomputed, not stored."""
    flash = predict(remat="selective", **LONG)
    plain = predict(remat="selective", flash_attention=False, **LONG)
    assert plain.memory.activations_bytes == flash.memory.activations_bytes
    assert plain.step_time_s > flash.step_time_s
    full = predict(remat="full", flash_attention=False, **LONG)
    # full remat holds one layer's scores while it recomputes
    assert full.memory.transient_bytes > predict(remat="full", **LONG).memory.transient_bytes


@pytest.mark.parametrize("pipelined", [False, True], ids=["no-pipeline", "pipeline"])
def test_search_path_agrees_without_flash_attention(pipelined):
    space = make_space(model="llama3-8b", hardware="h100-sxm", chips=32, seq_len=4096,
                       global_batch=64, flash_attention=False)
    mem, sub = assert_sample_agrees(space, pipelined, 4, seed=7)
    assert not any(sub.sharding(i).flash_attention for i in range(len(sub)))
    # and the unfused search ranks memory above the fused one's for the same candidates
    fused = make_space(model="llama3-8b", hardware="h100-sxm", chips=32, seq_len=4096,
                       global_batch=64)
    assert np.all(memory_per_device(enumerate_candidates(fused)) <= mem + 1e-6)
