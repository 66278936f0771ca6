"""The known differences between XLA's compiled collectives and meshcast's, as a table.

Each row of :data:`RULES` claims some XLA collectives (:class:`Piece`) and some meshcast ones
(:class:`SimCollective`) of one reference case (sizes in :class:`Ctx`), says why they differ, and
predicts XLA's bytes from meshcast's ``S`` (or attributes them by the JAX source line, for SPMD
resharding meshcast does not model op by op). :func:`rules` binds the table to a case;
:mod:`calibration.measure.hlo_compare` pairs and checks both sides with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from simulator.cost.collectives import Collective

AG, RS, AR, A2A = (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE,
                   Collective.ALL_TO_ALL)
#: jax functions of calibration/measure/models.py whose collectives belong to the MoE layer /
#: the loss.
MOE_SITES = ("moe_mlp", "top_k_dispatch")
LOSS_SITES = ("loss_fn", "head_loss")  # the embedding lookup; the LM head and loss
AUX_SITE = "load_balance_loss"


@dataclass(frozen=True)
class SimCollective:
    """One collective node of meshcast's step graph, ``count`` times per step."""

    kind: Collective
    axis: str
    nbytes: float
    count: int
    name: str


@dataclass(frozen=True)
class Piece:
    """One buffer of one XLA collective instruction (tuple-combined ones split by buffer)."""

    kind: Collective
    axes: tuple[str, ...] | None
    nbytes: float
    count: int
    instr: str
    op_name: str
    stack: tuple[str, ...]
    weight: bool

    @property
    def axis(self) -> str:
        return "+".join(self.axes) if self.axes is not None else "?"

    @property
    def phase(self) -> str:
        return "bwd" if "transpose(" in self.op_name else "fwd"


@dataclass(frozen=True)
class Ctx:
    """Per-device sizes of the case, in the symbols of :mod:`simulator.graph.layers`."""

    T: int  # noqa: N815 - tokens per device per micro-batch
    D: int  # noqa: N815
    V: int  # noqa: N815
    ab: float
    wb: float
    gb: float
    t: int
    fs: int
    e: int
    m: int  # micro-batches per step
    n_attn: int
    n_dense: int
    n_moe: int
    gated: int  # 1 for SwiGLU (gate and up projections), 0 for GELU
    embed_axis: str  # where meshcast reduces the embedding (non-expert) gradients
    E: int = 0  # noqa: N815
    Fe: int = 0  # noqa: N815
    kf: float = 0.0


@dataclass(frozen=True)
class Rule:
    """Claims XLA and meshcast collectives; ``expected(sim_bytes)`` predicts XLA's bytes, or is
    None for a difference attributed by source site. ``split``: one row per XLA (kind, axes)."""

    xla: Callable[[Piece], bool]
    sim: Callable[[SimCollective], bool]
    reason: str
    expected: Callable[[float], float] | None = None
    split: bool = False


def site_of(c: Piece) -> str:
    """The innermost model function on the collective's jax stack (helpers such as ``_c``, the
    sharding-constraint wrapper, skipped)."""
    for frame in c.stack:
        fn = frame.partition(":")[0]
        if not fn.startswith("_"):
            return fn
    return ""


def _primitive(c: Piece) -> str:
    return c.op_name.rsplit("/", 1)[-1]


def is_lookup(c: Piece) -> bool:
    """Collectives XLA emitted for the embedding lookup (forward gather, backward scatter-add)."""
    return site_of(c) in LOSS_SITES and _primitive(c) in ("gather", "scatter-add")


# --- the table --------------------------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    """What the rules' bytes depend on beyond the case's sizes (:func:`facts`)."""

    partials: float  # unsummed partial input-gradients XLA all-reduces over model, bytes
    kept_sites: tuple[str, ...]  # layer sites whose forward FSDP gathers XLA keeps for backward
    kept: float  # bytes of those kept forward gathers
    lookup_table: float  # the table meshcast gathers for the lookup and XLA does not (0 or one)
    kept_head: float  # the LM head's forward gather XLA keeps for its backward (0 or one table)
    tied_fsdp: float  # extra tied-table gradient reductions XLA emits over fsdp, bytes
    tied_dp: float  # the same over the embedding axis


def _fsdp_gathered(xla: list[Piece], sites: tuple[str, ...], phase: str,
                   nbytes: float | None = None) -> list[Piece]:
    """XLA's FSDP all-gathers from ``sites`` in ``phase`` (of ``nbytes`` each, if given)."""
    return [x for x in xla if x.kind is AG and x.axes == ("fsdp",) and site_of(x) in sites
            and x.phase == phase and (nbytes is None or x.nbytes == nbytes)]


def _tied_extra(xla: list[Piece], axis: str, nbytes: float) -> float:
    """One more table per extra reduction of the tied table's partial gradients (lookup
    scatter-add, LM head) that XLA emits separately over ``axis`` (meshcast: one)."""
    n = sum(x.count for x in xla if x.kind is AR and x.axis == axis and x.weight
            and x.nbytes == nbytes and site_of(x) in LOSS_SITES)
    return nbytes * max(0, n - 1)


def facts(c: Ctx, xla: list[Piece]) -> Facts:
    """``xla`` only tells which of two strategies XLA took where it has a choice (re-gather FSDP
    weights for the backward or keep the forward's; gather the tied table or not). With one
    activation ``A = T D ab`` and one vocabulary table ``V D / t`` elements per device:
    ``partials = m (2 n_attn A + gated (n_dense A + n_moe kf A))``."""
    act = c.T * c.D * c.ab
    table = c.V * c.D / c.t
    kept_sites = tuple(st for st in ("attention", "dense_mlp", "moe_mlp")
                       if _fsdp_gathered(xla, (st,), "fwd")
                       and not _fsdp_gathered(xla, (st,), "bwd"))
    one = table * c.wb
    return Facts(
        partials=c.m * (2 * c.n_attn * act + c.gated * (c.n_dense * act + c.n_moe * c.kf * act)),
        kept_sites=kept_sites,
        kept=sum(x.nbytes * x.count for st in kept_sites
                 for x in _fsdp_gathered(xla, (st,), "fwd")),
        lookup_table=one if c.fs > 1 and len(_fsdp_gathered(xla, LOSS_SITES, "fwd", one)) < 2
        else 0.0,
        kept_head=one if c.fs > 1 and not _fsdp_gathered(xla, LOSS_SITES, "bwd", one) else 0.0,
        tied_fsdp=_tied_extra(xla, "fsdp", table * c.gb),
        tied_dp=_tied_extra(xla, c.embed_axis, table / c.fs * c.gb))


@dataclass(frozen=True)
class RuleSpec:
    """One row of :data:`RULES`: which XLA pieces and meshcast collectives it claims, why (a
    string, or built from the case), and the XLA bytes it predicts from meshcast's ``S`` (None:
    attributed by source site). ``moe``: only where experts are sharded (``n_moe > 0, e > 1``)."""

    xla: Callable[[Piece, Ctx], bool]
    sim: Callable[[SimCollective, Ctx], bool]
    reason: str | Callable[[Ctx, Facts], str]
    expected: Callable[[float, Ctx, Facts], float] | None = None
    split: bool = False
    moe: bool = False

    def bind(self, c: Ctx, f: Facts) -> Rule:
        """This rule for one case."""
        exp = self.expected
        return Rule(lambda x: self.xla(x, c), lambda s: self.sim(s, c),
                    self.reason if isinstance(self.reason, str) else self.reason(c, f),
                    None if exp is None else (lambda s: exp(s, c, f)), self.split)


def _none(s: SimCollective, c: Ctx) -> bool:
    return False


def _tp_reason(c: Ctx, f: Facts) -> str:
    return ("tensor parallel: meshcast runs Megatron sequence parallelism (all-gather before, "
            "reduce-scatter after each block, the embedding and the LM head), XLA plain tensor "
            "parallelism (one all-reduce per block per pass): AR(S) = RS(S) + AG(S), so XLA = "
            "(AG + RS) / 2. XLA also all-reduces unsummed partial input-gradients: q, k, v "
            f"separately (+2 x T x D per attention layer, {c.n_attn} layers) and the SwiGLU gate "
            "and up projections separately (+1 x T x D per dense MLP, +1 x T x kf x D per MoE "
            "layer); and the vocab-parallel softmax's per-token scalars (max, sum, target "
            "logit; < 0.1 %). Counts differ: XLA combines several all-reduces into tuples")


def _fsdp_ag_reason(c: Ctx, f: Facts) -> str:
    return ("FSDP weight all-gathers of each layer and of the LM head, forward and backward"
            + (f" (XLA keeps the forward gathers of {', '.join(f.kept_sites)} for the backward "
               "instead of gathering again: - those bytes)" if f.kept_sites else "")
            + (" (XLA keeps the LM head's forward gather for its backward: - one table)"
               if f.kept_head else "")
            + (". meshcast also gathers the embedding table (V/t x D) for the lookup; XLA "
               "gathers the int32 token ids instead (b x s x 4 B each) and reshards the "
               "looked-up rows (see the embedding-lookup rows), so - one table"
               if f.lookup_table else ""))


def _fsdp_rs_reason(c: Ctx, f: Facts) -> str:
    return ("gradient reduce-scatter over fsdp: XLA:CPU emits it as an all-reduce of the full "
            "gradient and a dynamic-slice (the same S bytes in meshcast's convention, twice a "
            "reduce-scatter's wire traffic), all layers combined into one tuple all-reduce"
            + (". The embedding is tied: XLA reduces its two partial gradients (lookup "
               "scatter-add, LM head) separately: + V x D / t x 4 B" if f.tied_fsdp else ""))


def _dp_ar_reason(c: Ctx, f: Facts) -> str:
    return (f"gradient all-reduce over {c.embed_axis}, combined by XLA into one tuple all-reduce"
            + (". The embedding is tied: XLA reduces its two partial gradients (lookup "
               "scatter-add, LM head) separately: + V x D / (t x fs) x 4 B" if f.tied_dp else ""))


#: The explained differences of the reference step, in the order they claim collectives.
RULES: tuple[RuleSpec, ...] = (
    RuleSpec(lambda x, c: x.kind is AR and x.axes == ("model",),
             lambda s, c: s.kind in (AG, RS) and s.axis == "model",
             _tp_reason, lambda s, c, f: s / 2 + f.partials),
    RuleSpec(lambda x, c: x.kind is AG and x.axes == ("fsdp",),
             lambda s, c: s.kind is AG and s.axis == "fsdp",
             _fsdp_ag_reason, lambda s, c, f: s - f.lookup_table - f.kept - f.kept_head),
    RuleSpec(lambda x, c: x.kind is AR and x.axes == ("fsdp",) and x.weight,
             lambda s, c: s.kind is RS and s.axis == "fsdp",
             _fsdp_rs_reason, lambda s, c, f: s + f.tied_fsdp),
    RuleSpec(lambda x, c: x.kind is AR and x.axis == c.embed_axis and x.weight,
             lambda s, c: s.kind is AR and s.axis == c.embed_axis,
             _dp_ar_reason, lambda s, c, f: s + f.tied_dp),
    RuleSpec(lambda x, c: x.kind is AR and x.axes == ("data",) and x.weight,
             lambda s, c: s.kind is AR and s.axis == "data",
             "expert-weight gradient all-reduce over data, combined by XLA",
             lambda s, c, f: s, moe=True),
    RuleSpec(lambda x, c: x.kind is A2A and x.axes == ("expert",) and site_of(x) in MOE_SITES,
             lambda s, c: s.kind is A2A and s.axis == "expert",
             "MoE dispatch and combine over expert, forward and backward: the T/t x kf x D "
             "slot buffer (XLA moves < 1 % more, not attributed)", lambda s, c, f: s, moe=True),
    RuleSpec(lambda x, c: site_of(x) in MOE_SITES, _none,
             "SPMD resharding inside the MoE layer, by source site (tokens gathered over "
             "data, gating masks and combine weights permuted or gathered); meshcast has no "
             "counterpart", split=True, moe=True),
    RuleSpec(lambda x, c: is_lookup(x), _none,
             "embedding lookup, by source site: the table is vocab-parallel over model; XLA "
             "moves token ids or looked-up rows between the batch shards to do the lookup "
             "(SPMD); meshcast gathers the table over fsdp (fsdp row) and looks up locally",
             split=True),
    RuleSpec(lambda x, c: x.kind is AR and site_of(x) == AUX_SITE, _none,
             "load-balance loss: each MoE layer reduces its per-expert first-choice shares and "
             "mean router probabilities (2 x E fp32) over the batch shards; not in meshcast",
             lambda s, c, f: 2.0 * c.E * 4 * c.n_moe * c.m),
    RuleSpec(lambda x, c: x.kind is AR and site_of(x) in LOSS_SITES and x.nbytes <= 8, _none,
             "loss mean over the batch shards: one fp32 scalar per step, not in meshcast",
             lambda s, c, f: 4.0 * c.m),
)


def rules(c: Ctx, xla: list[Piece]) -> list[Rule]:
    """The rows of :data:`RULES` that apply to the case, bound to its sizes and to what ``xla``
    shows of XLA's choices (:func:`facts`)."""
    f = facts(c, xla)
    expert_parallel = c.n_moe > 0 and c.e > 1
    return [spec.bind(c, f) for spec in RULES if expert_parallel or not spec.moe]
