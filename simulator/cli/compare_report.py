"""``meshcast compare`` output: one JSON-ready dict and the text report."""

from __future__ import annotations

from simulator.analysis.decompose import INCREASE_PARTS
from simulator.analysis.interval import interval_of
from simulator.analysis.matched import VIEW_LABELS, VIEWS
from simulator.analysis.study import THRESHOLD
from simulator.cli.report import batch_text
from simulator.cost.goodput import SECONDS_PER_DAY


def _mesh(pred) -> str:
    mesh = {a: v for a, v in pred.job.mesh.items() if v != 1} or {"data": 1}
    return " ".join(f"{a}={v}" for a, v in mesh.items())


def _same_sharding(moe_job, dense_job) -> bool:
    """Whether the dense job runs the MoE job's sharding (its ``expert`` axis folded into
    ``data``, as ``compare.dense_mesh`` does), micro-batch and remat."""
    from simulator.analysis.compare import dense_mesh

    def sizes(mesh):
        return {a: v for a, v in mesh.items() if v != 1}

    a, b = moe_job.sharding, dense_job.sharding
    return (sizes(dense_mesh(moe_job.mesh)) == sizes(dense_job.mesh)
            and (a.micro_batch, a.remat) == (b.micro_batch, b.remat))


def _run(pred) -> dict:
    d = pred.to_dict()
    keep = ("model", "mesh", "placement", "micro_batch", "microbatches", "remat", "step_time_s",
            "tokens_per_s", "mfu", "breakdown_s", "warnings")
    out = {k: d[k] for k in keep}
    out.update(interval_of(pred).as_dict())
    m = pred.job.model
    out.update(total_params=m.total_params, active_params=m.active_params,
               memory_fits=d["memory"]["fits"], memory_per_device_bytes=d["memory"]["per_device_bytes"])
    return out


def comparison_dict(c) -> dict:
    """Everything ``compare`` computed, as plain data (``--json``)."""
    dense = _run(c.dense)
    dense["parts_s"] = dict(c.dense_attribution.by_part) if c.dense_attribution else {}
    return {
        "hardware": c.dense.job.hardware.name, "chips": c.dense.job.chips,
        "seq_len": c.dense.job.seq_len, "global_batch_seqs": c.dense.job.global_batch,
        "tokens_per_step": c.budget.tokens_per_step, "sharding": c.sharding,
        "tokens_per_param": c.tokens_per_param, "view": c.view,
        "dense": dict(dense, budget=c.budget.as_dict()),
        "moe": [dict(_run(x.prediction), parts_s=dict(x.attribution["moe"].by_part),
                     increase=x.increase.as_dict(),
                     views={v: x.views[v].as_dict() for v in VIEWS},
                     headline=x.headline.as_dict(),
                     goodput=x.goodput.as_dict() if x.goodput else None) for x in c.moes],
    }


def _fmt_tokens(n: float) -> str:
    return f"{n / 1e9:,.1f}B"


def format_comparison(c) -> str:
    b, dp = c.budget, c.dense
    how = "each on its best sharding" if c.sharding == "best" else "given mesh"
    div = interval_of(dp)
    head = [
        f"meshcast compare: {dp.job.model.name} vs {', '.join(x.model.name for x in c.moes)} "
        f"on {dp.job.hardware.name} x {dp.job.chips} chips, "
        f"{batch_text(dp.job.global_batch, dp.job.seq_len)} per step ({how})",
        f"  dense budget  {_fmt_tokens(b.tokens)} tokens ({c.tokens_per_param:g} per parameter of "
        f"{dp.job.model.total_params / 1e9:.2f}B) = {b.steps:,} steps x {dp.step_time_s:.4g} s = "
        f"{b.ideal_days:.2f} days" + (
            f"; {b.days:.2f} days expected with interruptions (p90 "
            f"{b.goodput.p90_s / SECONDS_PER_DAY:.2f}, goodput {100 * b.goodput.goodput:.1f}%)"
            if b.goodput else ""),
        f"  dense         step {dp.step_time_s:.4g} s{div.band_note()}, MFU {100 * dp.mfu:.1f} %, "
        f"mesh {_mesh(dp)}, remat {dp.job.sharding.remat}, micro-batch "
        f"{dp.job.sharding.micro_batch}",
        *div.notes("    "),
    ] + [f"    warning: {w}" for w in dp.warnings if w not in div.outside]
    said = {div.basis_line(), *div.outside}  # each MoE says again only where it differs
    return "\n".join(head + [line for x in c.moes for line in _moe_lines(c, x, said)])


def _moe_lines(c, x, said: set[str]) -> list[str]:
    p, inc = x.prediction, x.increase
    iv = interval_of(p)
    lines = ["", f"  {x.model.name}  ({x.model.total_params / 1e9:.1f}B total, "
             f"{x.model.active_params / 1e9:.2f}B active)",
             f"    step {p.step_time_s:.4g} s{iv.band_note()}, MFU {100 * p.mfu:.1f} %, mesh "
             f"{_mesh(p)}, remat {p.job.sharding.remat}, micro-batch {p.job.sharding.micro_batch}",
             *iv.notes("    ", said),
             f"    step-time increase over dense: {inc.total_s:+.4g} s ({100 * inc.fraction:+.1f} %)"
             + ("  [under 20 %]" if inc.fraction < THRESHOLD else "  [20 % or more]")]
    if not _same_sharding(p.job, c.dense.job):
        lines.append("    (the two run on different shardings: the parts include that difference)")
    small = 0.0
    for k in INCREASE_PARTS:
        v = inc.parts_s[k]
        if abs(v) >= 5e-4 * max(inc.dense_step_s, 1e-30):
            lines.append(f"      {k:<18}{v:>+10.4g} s {100 * v / inc.dense_step_s:>+7.1f} % of dense")
        else:
            small += v
    if small:
        lines.append(f"      {'(smaller parts)':<18}{small:>+10.4g} s "
                     f"{100 * small / inc.dense_step_s:>+7.1f} % of dense")
    lines.append(f"    {'yardstick':<34}{'steps':>10}{'tokens':>10}{'days':>8}  wall clock vs dense")
    for v in VIEWS:
        mv = x.views[v]
        mark = " <" if v == c.view else ""
        lines.append(f"    {VIEW_LABELS[v]:<34}{mv.steps:>10,}{_fmt_tokens(mv.tokens):>10}"
                     f"{mv.seconds / SECONDS_PER_DAY:>8.2f}  x{mv.wall_clock_ratio:.3f}{mark}")
    if x.goodput:
        g = x.goodput
        lines.append(f"    with interruptions ({VIEW_LABELS[c.view]}): "
                     f"{g.expected_s / SECONDS_PER_DAY:.2f} days expected, p90 "
                     f"{g.p90_s / SECONDS_PER_DAY:.2f}, goodput {100 * g.goodput:.1f}% "
                     f"(dense {100 * c.budget.goodput.goodput:.1f}%; checkpoint "
                     f"{g.checkpoint_bytes / 1e9:,.0f} GB)")
    lines += [f"    warning: {w}" for w in p.warnings if w not in iv.outside]
    return lines
