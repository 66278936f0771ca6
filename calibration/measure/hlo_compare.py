"""XLA's compiled collectives beside meshcast's step graph, for one reference case, bytes per step.

Both sides are per device and in :mod:`simulator.cost.collectives` byte conventions (XLA's from
:mod:`calibration.measure.hlo`). meshcast's ops that recur per micro-batch (phases fwd, bwd, recompute)
count ``m`` times, the gradient sync and optimizer once.

Each row of the table pairs a set of XLA collectives with a set of meshcast collectives and says:

- ``match``: same kind and axes, bytes within :data:`TOLERANCE`, same count;
- ``explained``: a named, known difference. Most predict XLA's bytes from meshcast's (the
  ``expected`` column) and hold only while the prediction is within tolerance; e.g. XLA combining
  many gradient all-reduces into one (count differs, bytes equal), or an all-reduce where meshcast
  has all-gather + reduce-scatter (``AR(S) = RS(S) + AG(S)``). A few are attributed by the JAX
  source line that produced them (SPMD resharding in the MoE layer and the embedding lookup,
  which meshcast does not model op by op); their reason says so and ``expected`` is empty;
- ``mismatch``: anything else, with both sides' numbers.

Tolerance, 1 %: both sides count whole tensors exactly, so the only legitimate residue is
per-token loss scalars (``T x 4`` B against ``T x D x 4`` B activations: ``1/D``, 0.2 % at D=512).
In the reference cases one activation is >= 2.5 % of its row and one attention or FFN weight
>= 1.5 %, so a missing or extra one shows; a router's gradient (``D x E``, 0.03 %) would not.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from calibration.measure.hlo import Buffer, HloCollective
from simulator.cost.collectives import Collective

TOLERANCE = 0.01
AG, RS, AR, A2A = (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_REDUCE,
                   Collective.ALL_TO_ALL)
#: jax functions of calibration/measure/models.py whose collectives belong to the MoE layer / the loss.
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


def pieces(xla: list[HloCollective]) -> list[Piece]:
    """Each collective split into its buffers (one piece if it lists none)."""
    out = []
    for c in xla:
        if c.group_size <= 1 or c.nbytes <= 0:
            continue  # a collective within one device moves nothing
        for b in c.buffers or (Buffer("", c.nbytes, c.op_name, c.stack),):
            out.append(Piece(c.kind, c.axes, b.nbytes, c.count, c.name, b.op_name, b.stack,
                             b.weight))
    return out


@dataclass(frozen=True)
class Row:
    xla: str  # "all_reduce model"
    meshcast: str
    xla_count: int
    xla_bytes: float
    sim_count: int
    sim_bytes: float
    expected_bytes: float | None  # XLA bytes a rule predicts; None: attributed by source site
    status: str  # match | explained | mismatch
    reason: str = ""


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


# --- the two sides ----------------------------------------------------------------------
def sim_collectives(prediction) -> list[SimCollective]:
    """Every collective of one whole step of meshcast's (single-stage) step graph."""
    if prediction.pipeline is not None:
        raise ValueError("the comparison covers single-stage jobs (the reference has no pipeline)")
    m, mesh = prediction.microbatches, prediction.job.mesh
    out = []
    for name, attrs in prediction.critical.graph.nodes.items():
        op = attrs["op"]
        if op.collective is not None and op.nbytes > 0:
            count = m if op.phase in ("fwd", "bwd", "recompute") else 1
            out.append(SimCollective(op.collective, live_axes(op.axis, mesh), op.nbytes, count, name))
    return out


def live_axes(axis: str, mesh: dict[str, int]) -> str:
    """``data+expert`` as XLA sees it: axes of size 1 dropped (``expert`` when data = 1)."""
    return "+".join(a for a in axis.split("+") if mesh.get(a, 1) > 1)


def _site(c: Piece) -> str:
    """The innermost model function on the collective's jax stack (helpers such as ``_c``, the
    sharding-constraint wrapper, skipped)."""
    for frame in c.stack:
        fn = frame.partition(":")[0]
        if not fn.startswith("_"):
            return fn
    return ""


def _primitive(c: Piece) -> str:
    return c.op_name.rsplit("/", 1)[-1]


def _lookup(c: Piece) -> bool:
    """Collectives XLA emitted for the embedding lookup (forward gather, backward scatter-add)."""
    return _site(c) in LOSS_SITES and _primitive(c) in ("gather", "scatter-add")


def ctx_of(prediction) -> Ctx:
    from simulator.graph.dims import Dims
    from simulator.graph.layers import slots_per_token

    job, model = prediction.job, prediction.job.model
    d = Dims.from_job(job)
    n_moe = model.n_moe_layers
    moe = model.moe
    return Ctx(T=d.T, D=model.d_model, V=model.vocab_size, ab=d.ab, wb=d.wb, gb=d.gb, t=d.t,
               fs=d.fs, e=d.e, m=prediction.microbatches, n_attn=model.n_layers,
               n_dense=model.n_layers - n_moe, n_moe=n_moe,
               gated=1 if model.ffn_kind == "swiglu" else 0,
               embed_axis=live_axes("data+expert" if d.e > 1 else "data", job.mesh),
               E=moe.n_experts if moe else 0, Fe=moe.expert_ffn_hidden if moe else 0,
               kf=slots_per_token(model) if moe else 0.0)


# --- the known differences: a table -----------------------------------------------------
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
    return [x for x in xla if x.kind is AG and x.axes == ("fsdp",) and _site(x) in sites
            and x.phase == phase and (nbytes is None or x.nbytes == nbytes)]


def _tied_extra(xla: list[Piece], axis: str, nbytes: float) -> float:
    """One more table per extra reduction of the tied table's partial gradients (lookup
    scatter-add, LM head) that XLA emits separately over ``axis`` (meshcast: one)."""
    n = sum(x.count for x in xla if x.kind is AR and x.axis == axis and x.weight
            and x.nbytes == nbytes and _site(x) in LOSS_SITES)
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
    RuleSpec(lambda x, c: x.kind is A2A and x.axes == ("expert",) and _site(x) in MOE_SITES,
             lambda s, c: s.kind is A2A and s.axis == "expert",
             "MoE dispatch and combine over expert, forward and backward: the T/t x kf x D "
             "slot buffer (XLA moves < 1 % more, not attributed)", lambda s, c, f: s, moe=True),
    RuleSpec(lambda x, c: _site(x) in MOE_SITES, _none,
             "SPMD resharding inside the MoE layer, by source site (tokens gathered over "
             "data, gating masks and combine weights permuted or gathered); meshcast has no "
             "counterpart", split=True, moe=True),
    RuleSpec(lambda x, c: _lookup(x), _none,
             "embedding lookup, by source site: the table is vocab-parallel over model; XLA "
             "moves token ids or looked-up rows between the batch shards to do the lookup "
             "(SPMD); meshcast gathers the table over fsdp (fsdp row) and looks up locally",
             split=True),
    RuleSpec(lambda x, c: x.kind is AR and _site(x) == AUX_SITE, _none,
             "load-balance loss: each MoE layer reduces its per-expert first-choice shares and "
             "mean router probabilities (2 x E fp32) over the batch shards; not in meshcast",
             lambda s, c, f: 2.0 * c.E * 4 * c.n_moe * c.m),
    RuleSpec(lambda x, c: x.kind is AR and _site(x) in LOSS_SITES and x.nbytes <= 8, _none,
             "loss mean over the batch shards: one fp32 scalar per step, not in meshcast",
             lambda s, c, f: 4.0 * c.m),
)


def rules(c: Ctx, xla: list[Piece]) -> list[Rule]:
    """The rows of :data:`RULES` that apply to the case, bound to its sizes and to what ``xla``
    shows of XLA's choices (:func:`facts`)."""
    f = facts(c, xla)
    expert_parallel = c.n_moe > 0 and c.e > 1
    return [spec.bind(c, f) for spec in RULES if expert_parallel or not spec.moe]


# --- pairing ----------------------------------------------------------------------------
def _label(kinds_axes) -> str:
    kinds = "+".join(sorted({k.value for k, _ in kinds_axes}))
    axes = ",".join(sorted({a for _, a in kinds_axes}))
    return f"{kinds} {axes}" if kinds_axes else "-"


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(abs(a), abs(b), 1.0)


def _row(xs: list[Piece], ss: list[SimCollective], rule: Rule | None) -> Row:
    """XLA's count is of instructions (a tuple split over rows counts in each)."""
    xb = sum(x.nbytes * x.count for x in xs)
    sb = sum(s.nbytes * s.count for s in ss)
    xn = sum({x.instr: x.count for x in xs}.values())
    sn = sum(s.count for s in ss)
    xl = _label([(x.kind, x.axis) for x in xs])
    sl = _label([(s.kind, s.axis) for s in ss])
    if rule is None:  # same kind and axes on both sides
        if xs and ss and _close(xb, sb):
            if xn == sn:
                return Row(xl, sl, xn, xb, sn, sb, sb, "match")
            return Row(xl, sl, xn, xb, sn, sb, sb, "explained",
                       f"XLA combines {sn} collectives into {xn}, bytes equal")
        return Row(xl, sl, xn, xb, sn, sb, sb, "mismatch",
                   "no known reason: " + ("only in XLA" if not ss else "only in meshcast"
                                          if not xs else "bytes differ"))
    if rule.expected is None:
        return Row(xl, sl, xn, xb, sn, sb, None, "explained", rule.reason)
    want = rule.expected(sb)
    status = "explained" if _close(xb, want) else "mismatch"
    reason = rule.reason if status == "explained" else (
        f"expected {want:,.0f} B from: {rule.reason}")
    return Row(xl, sl, xn, xb, sn, sb, want, status, reason)


def compare_collectives(xla: list[HloCollective], sim: list[SimCollective], c: Ctx) -> list[Row]:
    """Pair both sides by the known differences, then the rest by (kind, axes)."""
    xla = pieces(xla)
    rows = []
    for rule in rules(c, xla):
        xs = [x for x in xla if rule.xla(x)]
        ss = [s for s in sim if rule.sim(s)]
        if not xs and not ss:
            continue
        taken = {id(x) for x in xs} | {id(s) for s in ss}
        xla = [x for x in xla if id(x) not in taken]
        sim = [s for s in sim if id(s) not in taken]
        if rule.split:
            groups: dict[tuple, list[Piece]] = defaultdict(list)
            for x in xs:
                groups[(x.kind.value, x.axis)].append(x)
            rows += [_row(g, [], rule) for _, g in sorted(groups.items())]
        else:
            rows.append(_row(xs, ss, rule))
    rest: dict[tuple, tuple[list, list]] = defaultdict(lambda: ([], []))
    for x in xla:
        rest[(x.kind.value, x.axis)][0].append(x)
    for s in sim:
        rest[(s.kind.value, s.axis)][1].append(s)
    rows += [_row(xs, ss, None) for _, (xs, ss) in sorted(rest.items())]
    return rows


# --- one reference case end to end ------------------------------------------------------
def xla_case(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int) -> list[HloCollective]:
    """The collectives of the compiled reference train step (jax must see the mesh's devices)."""
    from calibration.measure.hlo import compiled_collectives
    from calibration.measure.steps import reference_step

    step, args, mesh = reference_step(kind, mesh_sizes, global_batch, seq_len)
    return compiled_collectives(step, args, mesh)


def compare_case(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int) -> list[Row]:
    """XLA vs meshcast collectives of one reference case, one row per paired group."""
    from calibration.reference import shape_profile
    from calibration.measure.steps import predict_case

    # only the graph's shapes are used: any profile lays it out
    pred = predict_case(kind, mesh_sizes, global_batch, seq_len,
                        shape_profile(math.prod(mesh_sizes.values())))
    return compare_collectives(xla_case(kind, mesh_sizes, global_batch, seq_len), sim_collectives(pred),
                   ctx_of(pred))


def format_table(rows: list[Row]) -> str:
    """A fixed-width table (bytes per device per step) with the reasons as numbered notes."""
    head = (f"{'XLA':<26} {'n':>3} {'bytes':>12}  {'meshcast':<32} {'n':>3} {'bytes':>12} "
            f"{'expected':>12}  status")
    lines, notes = [head, "-" * len(head)], []
    for r in rows:
        note = ""
        if r.reason:
            if r.reason not in notes:
                notes.append(r.reason)
            note = f" [{notes.index(r.reason) + 1}]"
        exp = "-" if r.expected_bytes is None else f"{r.expected_bytes:,.0f}"
        lines.append(f"{r.xla:<26} {r.xla_count:>3} {r.xla_bytes:>12,.0f}  {r.meshcast:<32} "
                     f"{r.sim_count:>3} {r.sim_bytes:>12,.0f} {exp:>12}  {r.status}{note}")
    lines.append("")
    lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m calibration.measure.hlo_compare moe data=2,model=2 [gb seq]
    import sys

    from calibration.measure.run import configure_backend
    from simulator.specs.sharding import parse_mesh

    mesh_arg = parse_mesh(sys.argv[2])
    configure_backend("cpu", math.prod(mesh_arg.values()))
    gb, seq = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (8, 64)
    print(format_table(compare_case(sys.argv[1], mesh_arg, gb, seq)))
