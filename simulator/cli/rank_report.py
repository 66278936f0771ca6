"""Text, JSON and CSV renderings of a RankResult and a PlanResult."""

from __future__ import annotations

import math

import csv
from pathlib import Path

from meshcast.errors import MeshcastError
from simulator.analysis.interval import interval_of
from simulator.cli.report import batch_text, plural, tokens_text
from simulator.cost.goodput import SECONDS_PER_DAY
from simulator.search.space import REMATS, SCHEDULES
from simulator.specs.sharding import AXES

GIB = 2**30


def _mesh(mesh: dict) -> str:
    return " ".join(f"{a}={v}" for a, v in mesh.items())


def _pipeline(row: dict) -> str:
    if row["mesh"].get("pipeline", 1) == 1:
        return "no pipeline"
    v = f", {row['virtual_stages']} virtual stages" if row["virtual_stages"] > 1 else ""
    return f"{row['schedule']} pipeline{v}"


def _model_arg(model) -> str:
    """The ``--model`` argument that loads ``model``: its zoo name when the zoo's spec of that
    name is this one, else a placeholder for the YAML file it came from."""
    from simulator.specs.zoo import load_model

    try:
        if load_model(model.name) == model:
            return model.name
    except MeshcastError:
        pass
    return f"{model.name}.yaml"


def _hardware_args(hw) -> list[str]:
    """``--hardware NAME`` with the ``--profiles`` folders it resolved in: none for predict's
    default (the shipped fit), ``--profiles builtin`` when it resolved to a built-in profile."""
    from hardware_profiles import FITTED_DIR, load_profile
    from hardware_profiles.loader import _EXTRA_DIRS
    from simulator.cli.search import BUILTIN

    args = ["--hardware", hw.name]
    try:  # a price given to plan (--price) does not change the forecast
        same = load_profile(hw.name).model_copy(
            update={"price_per_chip_hour_usd": hw.price_per_chip_hour_usd}) == hw
    except MeshcastError:
        same = False
    dirs = [str(d) for d in _EXTRA_DIRS.get()]
    if same and dirs != [str(FITTED_DIR)]:
        for d in dirs or [BUILTIN]:
            args += ["--profiles", d]
    return args


def predict_argv(job) -> list[str] | None:
    """The ``meshcast predict`` arguments that rebuild ``job`` exactly: the resolved mesh, every
    axis bound to the levels (and factors, in the order) it was placed on, the batch, the
    micro-batch and each execution setting that differs from predict's default. None when the
    job has a setting predict has no option for."""
    from simulator.specs.sharding import OptimizerSpec, ShardingSpec

    s = job.sharding
    default = ShardingSpec()
    if s.flash_attention != default.flash_attention or \
            s.optimizer.master_weights != OptimizerSpec().master_weights:
        return None
    placement = job.topology.placement  # in the order place_axes filled the levels
    mesh = {a: v for a, v in job.mesh.items() if v != 1} or {"data": 1}
    argv = ["predict", "--model", _model_arg(job.model), *_hardware_args(job.hardware),
            "--chips", str(job.chips),
            "--mesh", ",".join(f"{a}={v}" for a, v in mesh.items())]
    if placement:
        argv += ["--bind", ",".join(f"{a}=" + "+".join(p.level.name for p in parts)
                                    for a, parts in placement.items())]
    argv += ["--global-batch", str(job.global_batch), "--seq-len", str(job.seq_len),
             "--micro-batch", str(s.micro_batch), "--remat", s.remat]
    if s.precision != default.precision:
        argv += ["--precision", s.precision]
    if s.pipeline_schedule != default.pipeline_schedule:
        argv += ["--pipeline-schedule", s.pipeline_schedule]
    if s.virtual_stages != default.virtual_stages:
        argv += ["--virtual-stages", str(s.virtual_stages)]
    if s.optimizer.state_dtype != OptimizerSpec().state_dtype:
        argv += ["--optimizer-state", s.optimizer.state_dtype]
    if s.optimizer.grad_dtype != OptimizerSpec().grad_dtype:
        argv += ["--grad-dtype", s.optimizer.grad_dtype]
    for flag in ("distributed_optimizer", "tp_comm_overlap", "ep_comm_overlap",
                 "overlap_param_gather", "fused_loss"):
        if getattr(s, flag):
            argv.append("--" + flag.replace("_", "-"))
    if s.moe_host_issue_s != default.moe_host_issue_s:
        argv += ["--moe-host-issue-s", repr(s.moe_host_issue_s)]
    if s.moe_dispatcher != default.moe_dispatcher:
        argv += ["--moe-dispatcher", s.moe_dispatcher]
    if s.slice_shape is not None:
        argv += ["--slice", "x".join(map(str, s.slice_shape))]
    return argv


def predict_command(job) -> str | None:
    """:func:`predict_argv` as one shell line, ``meshcast predict ...``."""
    import shlex

    argv = predict_argv(job)
    return None if argv is None else shlex.join(["meshcast", *argv])


def finalist_dict(f) -> dict:
    """One top configuration: its row, the graph path's forecast (with its interval and basis)
    and the fast path's."""
    p = f.prediction
    mem = p.memory
    return {"rank": None, **f.row, "axis_order": f.axis_order, "step_time_s": p.step_time_s,
            **interval_of(p).as_dict(), "fast_step_time_s": f.fast_step_s,
            "tokens_per_s": p.tokens_per_s, "mfu": p.mfu, "memory": mem.as_dict(),
            "headroom_bytes": mem.headroom_bytes, "breakdown_s": dict(p.breakdown_s),
            "objective": f.objective, "budget": f.budget.as_dict(), "warnings": list(p.warnings),
            "predict_command": predict_command(p.job)}


def rank_json(res) -> dict:
    sp = res.space
    top = [finalist_dict(f) for f in res.top]
    for i, d in enumerate(top, 1):
        d["rank"] = i
    return {"model": sp.model.name, "hardware": sp.hardware.name, "chips": sp.chips,
            "global_batch_seqs": sp.global_batch, "seq_len": sp.seq_len,
            "objective": res.objective, "budget_tokens": res.tokens, "counts": res.counts,
            "configs_per_s": res.configs_per_s, "seconds": res.seconds, "top": top,
            "failures": res.failures.as_dict() if res.failures else None}


def format_rank(res) -> str:
    sp, c = res.space, res.counts
    lines = [
        f"meshcast rank: {sp.model.name} on {sp.hardware.name} x {sp.chips} chips, "
        f"{batch_text(sp.global_batch, sp.seq_len)} per step, objective {res.objective}",
        f"  {c['candidates'] + c['invalid_total']:,} configurations: {c['evaluated']:,} "
        f"evaluated, {c['out_of_memory']:,} out of memory, {c['invalid_total']:,} invalid "
        f"({res.configs_per_s:,.0f} configs/s on the fast path, "
        f"{sum(res.seconds.values()):.2f} s in all)",
    ]
    if c["invalid"]:
        lines.append("  invalid: " + ", ".join(f"{k} {v:,}" for k, v in c["invalid"].items()))
    if res.objective in ("time_to_train", "cost"):
        lines += failure_lines({sp.hardware.name: res.failures})
    lines.append(f"  top {len(res.top)} (re-evaluated with the graph path):")
    ivs = [interval_of(f.prediction) for f in res.top]
    # what every finalist's interval shares (basis, outside lines) is said once, above them
    shared = set.intersection(*({iv.basis_line(), *iv.outside} for iv in ivs)) if ivs else set()
    if ivs:
        lines += ivs[0].notes("  ", said={ivs[0].basis_line(), *ivs[0].outside} - shared)
    for i, (f, iv) in enumerate(zip(res.top, ivs), 1):
        lines += ["", *_finalist_lines(i, f, res.objective, iv, shared)]
    return "\n".join(lines)


def _finalist_lines(i: int, f, objective: str, iv, said: set[str]) -> list[str]:
    p, row, mem = f.prediction, f.row, f.prediction.memory
    place = row["placement"]
    b = f.budget
    out = [
        f"  #{i}  step {p.step_time_s:.4g} s{iv.band_note()}   MFU {100 * p.mfu:.1f} %   memory "
        f"{mem.per_device_bytes / GIB:.1f} of {mem.capacity_bytes / GIB:.1f} GiB "
        f"(headroom {mem.headroom_bytes / GIB:.1f})",
        f"      mesh {_mesh(row['mesh'])}   ({place})",
        f"      micro-batch {row['micro_batch']} x {row['microbatches']} per step, remat "
        f"{row['remat']}, {_pipeline(row)}",
    ]
    if objective in ("time_to_train", "cost"):
        cost = f", ${b.cost_usd:,.0f}" if b.cost_usd is not None else ""
        g = b.goodput
        wall = (f"{b.days:.1f} days expected (ideal {b.ideal_days:.1f}, p90 "
                f"{g.p90_s / SECONDS_PER_DAY:.1f}, goodput {100 * g.goodput:.1f}%, checkpoint every "
                f"{g.interval_s / 60:.3g} min)" if g and g.p90_s is not None and
                math.isfinite(g.interval_s) else f"{b.days:.1f} days")
        out.append(f"      {tokens_text(b.tokens)} tokens: {plural(b.steps, 'step')}, {wall}, "
                   f"{b.chip_hours:,.0f} chip-hours{cost}")
    total = p.step_time_s
    parts = [f"{k} {v:.3g} ({100 * v / total:.0f}%)" for k, v in p.breakdown_s.items()
             if v >= 0.005 * total]
    out.append("      breakdown: " + ", ".join(parts))
    cmd = predict_command(p.job)
    out.append(f"      reproduce: {cmd}" if cmd else
               "      reproduce: (a setting `meshcast predict` has no option for)")
    return out + iv.notes("      ", said)


CSV_COLUMNS = ("rank", *AXES, "placement", "axis_order", "micro_batch", "microbatches", "remat",
               "schedule", "virtual_stages", "step_time_s", "tokens_per_s", "mfu",
               "memory_gib", "headroom_gib", "compute_s", "exposed_comm_s", "pipeline_bubble_s")


def write_csv(res, path: str | Path) -> None:
    """Every evaluated configuration (fast path), best first, one row each."""
    t = res.table
    sp = res.space
    cap = sp.hardware.chip.hbm_capacity_bytes.value
    times = res.times
    mfu = res.mfu
    m = t.microbatches
    labels = [p.label for p in t.placements]
    orders = [",".join(p.order) for p in t.placements]
    try:
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(CSV_COLUMNS)
            for i in range(len(t)):
                pid = t.placement[i]
                w.writerow([i + 1, *t.mesh[i].tolist(), labels[pid], orders[pid],
                            int(t.micro_batch[i]), int(m[i]), REMATS[t.remat[i]],
                            SCHEDULES[t.schedule[i]] if t.mesh[i, AXES.index("pipeline")] > 1
                            else "-", int(t.virtual[i]), f"{times.step_s[i]:.6g}",
                            f"{sp.tokens_per_step / times.step_s[i]:.6g}", f"{mfu[i]:.4f}",
                            f"{res.memory_bytes[i] / GIB:.3f}",
                            f"{(cap - res.memory_bytes[i]) / GIB:.3f}",
                            f"{times.compute_s[i]:.6g}", f"{times.exposed_comm_s[i]:.6g}",
                            f"{times.bubble_s[i]:.6g}"])
    except OSError as e:
        raise MeshcastError(f"out: cannot write {path}: {e.strerror}") from None


def plan_json(res) -> dict:
    def entry(e) -> dict:
        d = {"hardware": e.hardware, "chips": e.chips, "ok": e.ok}
        if not e.ok:
            return dict(d, reason=e.reason)
        f = finalist_dict(e.best)
        band = interval_of(e.best.prediction).scaled(e.budget.days, e.budget.step_time_s)
        return dict(d, budget=e.budget.as_dict(), days_interval=list(band) if band else None,
                    best=f)

    return {"model": res.model, "tokens": res.tokens, "tokens_per_param": res.tokens_per_param,
            "reference": res.reference, "global_batch_seqs": res.global_batch,
            "seq_len": res.seq_len, "prices_per_chip_hour_usd": res.prices,
            "price_sources": res.price_sources, "unpriced": res.unpriced,
            "entries": [entry(e) for e in res.entries],
            "pareto": [{"hardware": e.hardware, "chips": e.chips, "days": e.budget.days,
                        "cost_usd": e.budget.cost_usd} for e in res.pareto],
            "deadline_days": res.deadline_days, "deadline_chips": res.deadline,
            "failures": {hw: m.as_dict() if m else None for hw, m in res.failures.items()}}


def format_plan(res) -> str:
    why = (f"{res.tokens_per_param:g} tokens per parameter of {res.reference}"
           if res.tokens_per_param is not None else "given")
    lines = [f"meshcast plan: {res.model}, {tokens_text(res.tokens, 4)} training tokens ({why}), "
             f"{batch_text(res.global_batch, res.seq_len)} per step",
             f"  {'hardware':<14}{'chips':>6}{'step s':>9}{'band s':>14}{'MFU %':>7}"
             f"{'ideal d':>9}{'days':>8}{'p90 d':>8}{'goodput':>8}"
             f"{'chip-hours':>12}{'cost $':>13}  best configuration"]
    basis: dict[str, list[str]] = {}  # interval basis and outside lines -> hardware they fit
    for e in res.entries:
        if not e.ok:
            lines.append(f"  {e.hardware:<14}{e.chips:>6}  -- {_short(e.reason)}")
            continue
        b, f = e.budget, e.best
        iv = interval_of(f.prediction)
        for key in [iv.basis_line()] + [f"outside the fit: {o}" for o in iv.outside]:
            hws = basis.setdefault(key, [])
            if e.hardware not in hws:
                hws.append(e.hardware)
        band = f"{iv.lo_s:.3g}-{iv.hi_s:.3g}" if iv.exists else "-"
        cost = f"{b.cost_usd:,.0f}" if b.cost_usd is not None else "unknown"
        g = b.goodput
        p90 = f"{g.p90_s / SECONDS_PER_DAY:.1f}" if g and g.p90_s is not None else "-"
        good = f"{100 * g.goodput:.1f}%" if g else "-"
        lines.append(f"  {e.hardware:<14}{e.chips:>6}{b.step_time_s:>9.3g}{band:>14}"
                     f"{100 * f.prediction.mfu:>7.1f}{b.ideal_days:>9.1f}{b.days:>8.1f}"
                     f"{p90:>8}{good:>8}{b.chip_hours:>12,.0f}"
                     f"{cost:>13}  {_mesh(f.row['mesh'])}, mb {f.row['micro_batch']}, "
                     f"remat {f.row['remat']}, {_pipeline(f.row)}")
    lines += [f"  {', '.join(hws)}: {line}" for line, hws in basis.items()]
    if res.pareto:
        lines.append("  Pareto front (time vs cost): " + "  |  ".join(
            f"{e.hardware} x {e.chips}: {e.budget.days:.1f} days, ${e.budget.cost_usd:,.0f}"
            for e in res.pareto))
    lines += _price_lines(res) + failure_lines(res.failures)
    if res.deadline_days is not None:
        for hw, n in res.deadline.items():
            tried = sorted({e.chips for e in res.entries if e.hardware == hw})
            verdict = (f"needs {n} chips" if n is not None
                       else f"none of {', '.join(map(str, tried))} chips meets it")
            lines.append(f"  deadline {res.deadline_days:g} days: {hw} {verdict}")
    return "\n".join(lines)


def failure_lines(models: dict) -> list[str]:
    """The interruption model each profile's days count (or that none is counted): each input
    with its basis (measured, given, assumed) and a numbered source, each source said once."""
    if all(m is None or m.rate_per_chip_day.value == 0 for m in models.values()):
        return ["  days: the ideal time (steps x step time); no interruptions counted"]
    sources: list[str] = []

    def ref(v) -> str:
        if v.source not in sources:
            sources.append(v.source)
        return f"[{sources.index(v.source) + 1}]"

    out = ["  days: expected wall clock with interruptions, checkpoints and restarts (Daly 2006, "
           "checkpoint interval optimal unless given); p90 from a seeded Monte Carlo; ideal d: "
           "steps x step time"]
    for hw, m in models.items():
        r, rs, bw = m.rate_per_chip_day, m.restart_s, m.storage_bw_per_host
        out.append(f"  {hw}: {r.value:.3g} interruptions per chip-day ({r.basis} {ref(r)}), "
                   f"restart {rs.value / 60:.3g} min {ref(rs)}, checkpoint write "
                   f"{bw.value / 1e9:.3g} GB/s per host {ref(bw)}, "
                   f"{'asynchronous' if m.async_checkpoint else 'synchronous'}"
                   + (f", every {m.interval_s / 60:g} min" if m.interval_s else ""))
    return out + [f"    [{i}] {src}" for i, src in enumerate(sources, 1)]


def _price_lines(res) -> list[str]:
    """Where each price per chip-hour came from, and which profiles had none (their cost is
    unknown, not zero) with the ``--price`` that gives them one."""
    from simulator.analysis.plan import GIVEN_PRICE_SOURCE

    def origin(hw: str) -> str:
        given = res.price_sources[hw].startswith(GIVEN_PRICE_SOURCE)
        return "--price" if given else "list price in the profile"

    priced = [f"{hw} ${p:,.2f} ({origin(hw)})" for hw, p in res.prices.items() if p is not None]
    lines = ["  price per chip-hour: " + ", ".join(priced)] if priced else []
    if res.unpriced:
        lines.append(f"  no price for {', '.join(res.unpriced)}: cost unknown (not zero), so not "
                     f"on the Pareto front; give --price "
                     + ",".join(f"{hw}=USD" for hw in res.unpriced))
    return lines


def _short(reason: str) -> str:
    """The first clause of an error message (before its details and fix)."""
    text = reason.split(";")[0].split(" (")[0]
    return text if len(text) < 100 else text[:97] + "..."
