"""Reference model shapes for calibration, and a neutral profile used only to lay out a graph."""

from __future__ import annotations

from hardware_profiles.schema import HardwareProfile
from simulator.specs.model import ModelSpec, MoESpec

_SRC = "calibration reference model (meshcast), sized for a CPU host"


def reference_model(kind: str = "dense", seq_len: int | None = None) -> ModelSpec:
    """A small decoder: 4 layers, d_model 512, 8 heads, SwiGLU 1408, vocab 4096, seq 512; the
    embedding table is also the LM head (as in calibration.measure.models); the MoE variant puts 8
    experts (top-2, capacity factor 2) in every other layer. ``seq_len`` overrides 512."""
    moe = MoESpec(n_experts=8, top_k=2, capacity_factor=2.0, expert_ffn_hidden=1408,
                  layer_interval=2, group_size_tokens=512) if kind == "moe" else None
    return ModelSpec(name=f"reference-{kind}", source=_SRC, n_layers=4, d_model=512, n_heads=8,
                     ffn_hidden=1408, vocab_size=4096, seq_len=seq_len or 512, moe=moe,
                     tied_embeddings=True)


def shape_profile(n_devices: int) -> HardwareProfile:
    """One flat switch of ``n_devices``: the graph's shapes do not depend on the numbers (a bf16
    and an fp32 peak, so jobs of either precision can be laid out)."""
    s = {"value": 1.0, "source": "placeholder: only the graph's shapes are used"}
    curve = {"max_efficiency": 1.0, "half_saturation": 0.0, "source": s["source"]}
    return HardwareProfile.model_validate({
        "name": "calibration-host", "display_name": "calibration host (shapes only)",
        "chip": {"name": "host", "vendor": "other", "peak_flops_per_s": {"bf16": s, "fp32": s},
                 "hbm_capacity_bytes": s, "hbm_bandwidth_bytes_per_s": s, "launch_overhead_s": s},
        "efficiency": {"matmul": curve, "attention": curve, "memory": curve},
        "network": [{"name": "host", "kind": "switch", "size": n_devices,
                     "link_bandwidth_bytes_per_s": s, "latency_s": s,
                     "efficiency": {"value": 1.0, "source": s["source"]}}],
    })
