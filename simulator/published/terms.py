"""The profile values a published-runs fit estimates ("quantities"), read from and written to a
profile.

Compute quantities are the ``max_efficiency`` of the profile's curves, fractions of the chip's own
peak (FLOP/s, or HBM bytes/s for ``memory`` and ``gather``):

- ``matmul`` (bf16/fp16 GEMMs), ``matmul_fp8``, ``matmul_fp4``: each precision its own value, of
  that format's peak (an absent fp4 curve starts from fp8's, an absent fp8 one from bf16's);
- ``attention`` (the fused attention kernels; recompute is the job's input, never absorbed here);
- ``memory`` (norms, activations, residuals, optimizer: streaming elementwise work);
- ``gather`` (MoE token permutation and the embedding lookup: the memory curve when absent).

Shape quantities are the attention curve's ``seq_half`` and ``head_dim_half`` (tokens, head
width: ``eff = max_eff * x/(x + half) * s/(s + seq_half) * hd/(hd + head_dim_half)``), fitted
from :data:`SHAPE_START` when a profile has none (0: the flat curve): FlashAttention-2's causal
forward+backward on A100 (Dao 2023, Fig. 5) runs about 0.7x as fast at 512 tokens as at 16k and
0.87x as fast at head dim 64 as at 128, which ``seq_half ~ 256``, ``head_dim_half ~ 16`` give.

Network quantities are the large-message ``efficiency`` of every network level of one kind
(``net_switch``: NVLink/xGMI, ``net_torus``: TPU ICI, ``net_fat_tree``: InfiniBand/DCN); per-kind
collective overrides, where a calibrated profile has them, are scaled by the same factor.

Every efficiency is a fraction in (0, 1], every shape a positive size; the fit works on their
natural logs.
"""

from __future__ import annotations

from hardware_profiles.schema import EfficiencyCurve, Fraction, HardwareProfile

CURVES = ("matmul", "matmul_fp8", "matmul_fp4", "attention", "memory", "gather")
SHAPES = ("attention_seq_half", "attention_head_dim_half")
NETWORK = ("net_switch", "net_torus", "net_fat_tree")
QUANTITIES = CURVES + SHAPES + NETWORK
#: Where the fit starts a shape the profile leaves at 0 (module docstring).
SHAPE_START = {"attention_seq_half": 256.0, "attention_head_dim_half": 16.0}


def matmul_quantity(precision: str) -> str:
    """The matmul quantity a job of ``precision`` runs its GEMMs at."""
    return {"fp8": "matmul_fp8", "fp4": "matmul_fp4"}.get(precision, "matmul")


def _curve(profile: HardwareProfile, q: str) -> EfficiencyCurve:
    """The curve ``q`` as the compute model uses it (:meth:`Efficiency.curve`)."""
    return profile.efficiency.curve(q)


def quantities_of(profile: HardwareProfile) -> tuple[str, ...]:
    """The quantities ``profile`` has: every curve, and a network term per level kind present."""
    kinds = {f"net_{lv.kind}" for lv in profile.network}
    return CURVES + SHAPES + tuple(q for q in NETWORK if q in kinds)


def value_of(profile: HardwareProfile, q: str) -> float:
    """The profile's current value of quantity ``q`` (a network kind: its first level's; a
    shape: 0 when the curve is flat)."""
    if q in CURVES:
        return _curve(profile, q).max_efficiency
    if q in SHAPES:
        return getattr(profile.efficiency.attention, _shape_field(q))
    return next(lv.efficiency.value for lv in profile.network if f"net_{lv.kind}" == q)


def start_value(profile: HardwareProfile, q: str) -> float:
    """Where a fit starts ``q``: the profile's value, or :data:`SHAPE_START` for a flat shape."""
    v = value_of(profile, q)
    return v if v > 0 else SHAPE_START[q]


def is_fraction(q: str) -> bool:
    """Whether ``q`` is an efficiency (at most 1) rather than a shape."""
    return q not in SHAPES


def _shape_field(q: str) -> str:
    return q.removeprefix("attention_")


def with_values(profile: HardwareProfile, values: dict[str, float], source: str) -> HardwareProfile:
    """``profile`` with each quantity in ``values`` set (efficiencies clipped to 1), ``source``
    recorded."""
    eff = profile.efficiency
    curves, network = {}, list(profile.network)
    for q, v in values.items():
        v = float(min(v, 1.0)) if is_fraction(q) else float(v)
        if q in CURVES:
            curves[q] = (curves.get(q) or _curve(profile, q)).model_copy(update={
                "max_efficiency": v, "source": source, "calibrated_range": None})
        elif q in SHAPES:
            base = curves.get("attention", eff.attention)
            curves["attention"] = base.model_copy(update={_shape_field(q): v, "source": source})
        elif q in NETWORK:
            network = [_with_level(lv, v, source) if f"net_{lv.kind}" == q else lv for lv in network]
        else:
            raise ValueError(f"unknown quantity {q!r}; known: {QUANTITIES}")
    update: dict = {}
    if curves:
        update["efficiency"] = eff.model_copy(update=curves)
    if network != list(profile.network):
        update["network"] = network
    return profile.model_copy(update=update) if update else profile


def _with_level(lv, v: float, source: str):
    """A network level at efficiency ``v``; its per-kind overrides scaled by the same factor."""
    scale = v / lv.efficiency.value
    over = {k: o.model_copy(update={"efficiency": Fraction(
        value=min(o.efficiency.value * scale, 1.0), source=source)})
        for k, o in lv.collectives.items()}
    return lv.model_copy(update={"efficiency": Fraction(value=v, source=source),
                                 "collectives": over})
