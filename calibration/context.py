"""In-context cases: the reference model's own layer and its embedding + LM head, timed whole.

A compiler fuses elementwise work into and around the GEMMs it feeds (layout copies for the
backward GEMMs, the tied table's gradient accumulation, the loss over the logits), so the
elementwise ops a step really runs can only be observed in context. A ``block`` case times one
dense decoder layer (:func:`calibration.measure.models.dense_block`) forward and backward on ``m``
sequences of ``k`` tokens per device; a ``head`` case the embedding lookup, final norm, tied LM
head and cross-entropy (:func:`calibration.measure.models.head_loss`), forward and backward. All devices
run at once, as in a step; :func:`calibration.measure.in_context.jax_case` builds them in jax.

:func:`context_ops` lays the same work out as meshcast's plan does (compute ops only,
forward and backward; shapes, no hardware), so the fit (:mod:`calibration.fitting.fit_context`) can hold the GEMM and
attention terms at their own sweeps' curves and fit what the elementwise ops achieve.
"""

from __future__ import annotations

from functools import lru_cache

from calibration.dtypes import precision_of_dtype
from calibration.reference import ShapeJob, reference_model

CONTEXT_KINDS = ("block", "head")


def context_job(b: int, s: int, dtype: str = "float32"):
    """The in-context cases' job shapes: one reference layer, ``b`` sequences of ``s`` tokens
    on one device, no remat, in ``dtype`` (float32 or bfloat16 activations)."""
    from simulator.specs.sharding import ShardingSpec

    m = reference_model("dense", s).model_copy(update={"n_layers": 1})
    return ShapeJob(m, ShardingSpec(mesh={"data": 1}, micro_batch=b, global_batch=b, remat="none",
                                    precision=precision_of_dtype(dtype)), 1)


@lru_cache(maxsize=64)
def context_ops(kind: str, b: int, s: int, dtype: str = "float32") -> tuple:
    """The plan's compute ops (forward and backward) of one reference layer (``block``)
    or of the embedding and head (``head``) for ``b`` sequences of ``s`` tokens per device, in
    ``dtype`` (:func:`context_job`); shapes only, no durations."""
    from simulator.graph.ops import COMPUTE

    in_block = lambda name: name.startswith("L0.")  # noqa: E731
    return tuple(op for name, op, _ in context_job(b, s, dtype).plan([0]).unrolled()
                 if op.stream == COMPUTE and op.phase in ("fwd", "bwd")
                 and in_block(name) == (kind == "block"))


def fitted_elementwise(op) -> bool:
    """Whether the in-context fit prices ``op`` on the memory curve: elementwise, not a gather
    (gathers keep their own sweep's curve)."""
    from simulator.graph.ops import OpKind

    return op.kind is OpKind.ELEMENTWISE and not op.gather


def elementwise_bytes(kind: str, b: int, s: int, dtype: str = "float32") -> float:
    """Bytes the case's :func:`fitted_elementwise` ops move (its size on the fit's axis)."""
    return sum(op.nbytes for op in context_ops(kind, b, s, dtype) if fitted_elementwise(op))


def context_sizes(quick: bool) -> list[tuple[int, int]]:
    """(sequences, tokens per sequence) per device: 128..1024 tokens, covering the validation
    steps' 512..1024."""
    return [(1, 128), (2, 128), (2, 256)] if quick else [(1, 128), (2, 128), (2, 256), (4, 256),
                                                          (2, 512)]
