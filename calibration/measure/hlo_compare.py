"""XLA's compiled collectives beside meshcast's plan, for one reference case, bytes per step.

Both sides are per device and in :mod:`simulator.cost.collectives` byte conventions (XLA's from
:mod:`calibration.measure.hlo`). meshcast's ops that recur per micro-batch (phases fwd, bwd, recompute)
count ``m`` times, the gradient sync and optimizer once.

Each row of the table pairs a set of XLA collectives with a set of meshcast collectives and says:

- ``match``: same kind and axes, bytes within :data:`TOLERANCE`, same count;
- ``explained``: a named, known difference (a row of :data:`calibration.measure.hlo_rules.RULES`).
  Most predict XLA's bytes from meshcast's (the ``expected`` column) and hold only while the
  prediction is within tolerance; e.g. XLA combining many gradient all-reduces into one (count
  differs, bytes equal), or an all-reduce where meshcast has all-gather + reduce-scatter
  (``AR(S) = RS(S) + AG(S)``). A few are attributed by the JAX source line that produced them (SPMD
  resharding in the MoE layer and the embedding lookup, which meshcast does not model op by op);
  their reason says so and ``expected`` is empty;
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

from calibration.measure.hlo import Buffer, HloCollective
from calibration.measure.hlo_rules import Ctx, Piece, Rule, SimCollective, rules

TOLERANCE = 0.01


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


# --- the two sides ----------------------------------------------------------------------
def sim_collectives(job) -> list[SimCollective]:
    """Every collective of one whole step of meshcast's plan of ``job`` (a
    :class:`calibration.reference.ShapeJob`, single stage): shapes only, no hardware."""
    mesh = job.mesh
    if mesh["pipeline"] > 1:
        raise ValueError("the comparison covers single-stage jobs (the reference has no pipeline)")
    m = job.microbatches
    out = []
    for name, op, _ in job.plan(list(range(job.model.n_layers))).unrolled():
        if op.collective is not None and op.nbytes > 0:
            count = m if op.phase in ("fwd", "bwd", "recompute") else 1
            out.append(SimCollective(op.collective, live_axes(op.axis, mesh), op.nbytes, count, name))
    return out


def live_axes(axis: str, mesh: dict[str, int]) -> str:
    """``data+expert`` as XLA sees it: axes of size 1 dropped (``expert`` when data = 1)."""
    return "+".join(a for a in axis.split("+") if mesh.get(a, 1) > 1)


def ctx_of(job) -> Ctx:
    """The sizes the rules predict XLA's bytes from, for ``job`` (a ShapeJob)."""
    from simulator.cost.formulas import replica_axes
    from simulator.graph.layers import slots_per_token

    model = job.model
    d = job.dims()
    n_moe = model.n_moe_layers
    moe = model.moe
    return Ctx(T=d.T, D=model.d_model, V=model.vocab_size, ab=d.ab, wb=d.wb, gb=d.gb, t=d.t,
               fs=d.fs, e=d.e, m=job.microbatches, n_attn=model.n_layers,
               n_dense=model.n_layers - n_moe, n_moe=n_moe,
               gated=1 if model.ffn_kind == "swiglu" else 0,
               embed_axis=live_axes(replica_axes(d.e, d.cp)[0], job.mesh),
               E=moe.n_experts if moe else 0, Fe=moe.expert_ffn_hidden if moe else 0,
               kf=slots_per_token(model) if moe else 0.0)


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
    from calibration.measure.steps import case_job

    job = case_job(kind, mesh_sizes, global_batch, seq_len)  # the plan's shapes, no hardware
    return compare_collectives(xla_case(kind, mesh_sizes, global_batch, seq_len),
                               sim_collectives(job), ctx_of(job))


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
