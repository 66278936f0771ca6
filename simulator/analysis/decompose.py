"""The MoE step-time increase over its dense reference, split exactly into where it comes from.

With ``t(x)`` a forecast step and ``p(x)`` its seconds in part ``p`` (:mod:`simulator.analysis.attribution`,
``sum_p p(x) = t(x)``), and ``M0`` the MoE with exactly ``top_k`` expert slots per token (capacity
factor ``cf = top_k``; dropless: ``load_imbalance = 1``), on the MoE's own sharding:

    t(MoE) - t(dense) = [t(MoE) - t(M0)]  +  sum_p [p(M0) - p(dense)]
                        capacity_padding     all_to_all, dispatch_combine, router, ffn_size, ...

which telescopes, so the parts add up to the increase exactly. ``capacity_padding`` is what the
capacity factor's slack over top-k costs, in every op it touches (the expert FFN rows, dispatch
and combine, the all-to-all bytes); negative when ``cf < top_k`` drops tokens. ``ffn_size`` is
the FFN compute of the MoE at top-k slots minus the dense FFN's (k experts of ``Fe`` vs one of
``F``, grouped-GEMM efficiency). When the two models run on different shardings, the parts also
carry that difference (e.g. ``weight_sync`` for FSDP gathers one of them avoids).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.analysis.attribution import PARTS, Attribution, attribute
from simulator.specs.job import make_job
from simulator.specs.model import ModelSpec

#: The increase's parts in report order; ``ffn`` of the attribution is reported as ``ffn_size``.
INCREASE_PARTS = ("all_to_all", "dispatch_combine", "capacity_padding", "router", "ffn_size",
                  "tp_comm", "weight_sync", "optimizer", "attention", "cp_comm",
                  "embedding_head", "pipeline_bubble", "other")


@dataclass(frozen=True)
class Increase:
    """``total_s = t(MoE) - t(dense)`` and its parts (every INCREASE_PARTS key; they sum to it)."""

    dense_step_s: float
    moe_step_s: float
    parts_s: dict[str, float]

    @property
    def total_s(self) -> float:
        return self.moe_step_s - self.dense_step_s

    @property
    def fraction(self) -> float:
        """``t(MoE) / t(dense) - 1``."""
        return self.total_s / self.dense_step_s

    def as_dict(self) -> dict:
        d = self.dense_step_s
        return {"dense_step_s": d, "moe_step_s": self.moe_step_s, "increase_s": self.total_s,
                "increase_fraction": self.fraction, "parts_s": dict(self.parts_s),
                "parts_fraction_of_dense": {k: v / d for k, v in self.parts_s.items()}}


def unpadded(model: ModelSpec) -> ModelSpec | None:
    """The MoE with exactly ``top_k`` slots per token (``M0``), or None if it already has."""
    moe = model.moe
    if moe.dropless:
        if moe.load_imbalance == 1.0:
            return None
        update = {"load_imbalance": 1.0}
    else:
        if moe.capacity_factor == moe.top_k:
            return None
        update = {"capacity_factor": float(moe.top_k)}
    return model.model_copy(update={"moe": moe.model_copy(update=update)})


def unpadded_prediction(moe_pred):
    """Forecast ``M0`` on the MoE's own job (same sharding, hardware, chips), or None."""
    from simulator.predict import predict_job

    job = moe_pred.job
    m0 = unpadded(job.model)
    if m0 is None:
        return None
    return predict_job(make_job(m0, job.sharding, job.hardware, job.chips))


def decompose(dense: Attribution, moe: Attribution, m0: Attribution | None = None) -> Increase:
    """Split ``t(MoE) - t(dense)`` into INCREASE_PARTS (see the module docstring); ``m0`` is
    the unpadded MoE's attribution (None: the MoE has no slack, so ``M0`` is the MoE)."""
    base = m0 or moe
    parts = dict.fromkeys(INCREASE_PARTS, 0.0)
    parts["capacity_padding"] = moe.step_time_s - base.step_time_s
    for p in PARTS:
        parts["ffn_size" if p == "ffn" else p] += base.by_part[p] - dense.by_part[p]
    return Increase(dense.step_time_s, moe.step_time_s, parts)


def decompose_predictions(dense_pred, moe_pred, dense_att: Attribution | None = None
                          ) -> tuple[Increase, dict]:
    """:func:`decompose` from two forecasts (it forecasts ``M0`` itself; ``dense_att``, the
    dense forecast's attribution, when one reference serves several MoEs); also returns each
    model's attribution: ``{"dense": ..., "moe": ..., "moe_unpadded": ... or None}``."""
    m0_pred = unpadded_prediction(moe_pred)
    att = {"dense": attribute(dense_pred) if dense_att is None else dense_att, "moe": attribute(moe_pred),
           "moe_unpadded": attribute(m0_pred) if m0_pred is not None else None}
    return decompose(att["dense"], att["moe"], att["moe_unpadded"]), att
