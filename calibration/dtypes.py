"""The dtype a calibration run measures in, and its name in meshcast's units (no jax here)."""

from __future__ import annotations


def itemsize(dtype: str) -> int:
    """Bytes per element of a calibration dtype (``float32`` 4, ``bfloat16`` 2)."""
    return 2 if dtype == "bfloat16" else 4


def run_dtype(backend: str) -> str:
    """The dtype a run calibrates in: the one its training steps use. Accelerators train in
    bfloat16; a CPU runs bfloat16 GEMMs through float32 (slower), so a CPU host calibrates and
    validates in float32."""
    return "float32" if backend == "cpu" else "bfloat16"


def precision_of_dtype(dtype: str) -> str:
    """meshcast's ``precision`` (``fp32``, ``bf16``) for a calibration dtype."""
    return "fp32" if dtype == "float32" else "bf16"
