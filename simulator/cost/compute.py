"""Compute cost: roofline with size-dependent efficiency, plus a fixed launch cost.

``t = max(flops / (peak[dtype] * eff_flops(flops)), bytes / (hbm_bw * eff_mem(bytes))) + launch``
(Williams et al. 2009, "Roofline"). The efficiency curves (``eff(x) = e_max * x / (x + x_half)``)
come from the hardware profile, or from calibration; attention's is further scaled by the
kernel's shape (:func:`attention_shape_factor`).

Every time here takes numbers or numpy arrays (broadcast elementwise, the same values): the graph
path costs one op, the search a column of configurations. A term with no FLOPs (or no bytes)
takes 0 s; the launch cost is added to every op, empty or not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware_profiles.schema import EfficiencyCurve, HardwareProfile

#: A Python number or a numpy array of them.
Num = float | np.ndarray

DTYPE_BYTES = {"fp32": 4, "tf32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "fp4": 0.5, "int8": 1}


def attention_shape_factor(seq: float | np.ndarray | None, head_dim: float | np.ndarray | None,
                           seq_half: float = 0.0,
                           head_dim_half: float = 0.0) -> float | np.ndarray:
    """Fraction of the size-only attention efficiency a kernel of this shape reaches:
    ``s / (s + seq_half) * hd / (hd + head_dim_half)`` (:class:`EfficiencyCurve`'s docstring).

    ``seq`` is the key/value length the kernel sees and ``head_dim`` its head dim, floats or
    numpy arrays (the graph path and the search's columns both call this). A half of 0, or a
    shape of None (not known), drops its factor: both halves 0 give exactly 1.0.
    """
    f = 1.0
    if seq_half > 0 and seq is not None:
        f = f * (seq / (seq + seq_half))
    if head_dim_half > 0 and head_dim is not None:
        f = f * (head_dim / (head_dim + head_dim_half))
    return f


@dataclass(frozen=True, slots=True)
class ComputeModel:
    """The chip numbers a compute op needs, pulled out of the profile once."""

    peak_flops: float  # for the matmul dtype of this job (its curve: matmul_fp8 / _fp4)
    attention_peak_flops: float  # attention runs in bf16 (fp32 when the job is fp32)
    hbm_bw: float
    launch_s: float
    matmul: EfficiencyCurve
    attention: EfficiencyCurve
    memory: EfficiencyCurve
    gather: EfficiencyCurve  # indexed reads / scatter-adds (the memory curve unless calibrated)

    @classmethod
    def from_profile(cls, profile: HardwareProfile, precision: str) -> ComputeModel:
        c = profile.chip
        e = profile.efficiency
        attention_dtype = "fp32" if precision == "fp32" else "bf16"
        matmul = e.curve({"fp8": "matmul_fp8", "fp4": "matmul_fp4"}.get(precision, "matmul"))
        return cls(profile.peak_flops(precision), profile.peak_flops(attention_dtype),
                   c.hbm_bandwidth_bytes_per_s.value, c.launch_overhead_s.value,
                   matmul, e.attention, e.memory, e.curve("gather"))

    def memory_time(self, nbytes: Num, curve: EfficiencyCurve | None = None) -> Num:
        """Memory-bound time ``bytes / (hbm_bw * eff(bytes))`` on ``curve`` (default: memory);
        0 for no bytes. No launch cost."""
        curve = curve or self.memory
        return _if_positive(nbytes, lambda: nbytes / (self.hbm_bw * curve.at(nbytes)))

    def matmul_time(self, flops: Num, nbytes: Num, unit_flops: Num = 0.0) -> Num:
        """Roofline of a GEMM: ``max(flops / (peak * eff(u)), memory_time(bytes)) + launch``.

        ``u`` is the size of one GEMM (``unit_flops``, e.g. one expert's of a grouped GEMM),
        ``flops`` where it is 0; the FLOPs term is 0 for no FLOPs.
        """
        u = np.where(unit_flops != 0, unit_flops, flops) if _any_array(unit_flops, flops) \
            else unit_flops or flops
        t_flops = _if_positive(flops, lambda: flops / (self.peak_flops * self.matmul.at(u)))
        return _maximum(t_flops, self.memory_time(nbytes)) + self.launch_s

    def attention_time(self, flops: Num, nbytes: Num, *, seq: Num | None = None,
                       head_dim: Num | None = None) -> Num:
        """Fused (flash) attention at the attention dtype's peak (bf16, or fp32 for fp32 jobs)
        with the attention curve, scaled by the kernel's shape when the profile's curve sets
        ``seq_half`` / ``head_dim_half`` (``seq``: the key/value length the kernel sees,
        ``head_dim``; None: not known, no factor); memory bound if tiny:
        ``max(flops / (peak_attn * eff(flops) * shape), memory_time(bytes)) + launch``."""
        a = self.attention
        eff = a.at(flops) * attention_shape_factor(seq, head_dim, a.seq_half, a.head_dim_half)
        t_flops = _if_positive(flops, lambda: flops / (self.attention_peak_flops * eff))
        return _maximum(t_flops, self.memory_time(nbytes)) + self.launch_s

    def elementwise_time(self, nbytes: Num) -> Num:
        """Norms, activations, softmax, optimizer updates: ``memory_time(bytes) + launch``."""
        return self.memory_time(nbytes) + self.launch_s

    def gather_time(self, nbytes: Num) -> Num:
        """Gathers and scatter-adds: ``bytes / (hbm_bw * eff_gather(bytes)) + launch``."""
        return self.memory_time(nbytes, self.gather) + self.launch_s


def _any_array(*xs) -> bool:
    return any(isinstance(x, np.ndarray) for x in xs)


def _if_positive(x: Num, value) -> Num:
    """``value()`` where ``x > 0``, else 0: on numbers ``value`` is not called for ``x <= 0``;
    on arrays it is evaluated everywhere and its entries at ``x <= 0`` are dropped."""
    if not isinstance(x, np.ndarray):
        return value() if x > 0 else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, value(), 0.0)


def _maximum(a: Num, b: Num) -> Num:
    return np.maximum(a, b) if _any_array(a, b) else max(a, b)


def gemm_flops_bytes(m: float, k: float, n: float, dtype_bytes: float = 2.0, batch: float = 1.0):
    """FLOPs ``2 m k n`` and HBM bytes ``(m k + k n + m n) * dtype`` of ``batch`` GEMMs."""
    return 2.0 * m * k * n * batch, (m * k + k * n + m * n) * dtype_bytes * batch
