"""Plain-text rendering of a StepPrediction and of the profile/model lists."""

from __future__ import annotations

GIB = 2**30


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 micro-batch``, ``8 micro-batches``: ``n`` and the word in its number."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def tokens_text(n: float, digits: int = 3) -> str:
    """A token count in the unit its size calls for, to ``digits`` significant digits:
    ``512``, ``65.5k``, ``4.19M``, ``1.4T``."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.{digits}g}{unit}"
    return f"{n:.{digits}g}"


def batch_text(seqs: int, seq_len: int) -> str:
    """``1,024 seqs x 4096 tokens``: a step's batch as predict, rank, plan and compare all say
    it (the same job, the same words)."""
    return f"{plural(seqs, 'seq')} x {seq_len} tokens"


def _pct(x: float, total: float) -> str:
    return f"{100 * x / total:5.1f}" if total > 0 else "  -  "


def format_prediction(pred, interval=None) -> str:
    """The forecast as text; ``interval`` (a ForecastInterval) defaults to
    :func:`simulator.analysis.interval.interval_of` the prediction."""
    from simulator.analysis.interval import interval_of

    iv = interval if interval is not None else interval_of(pred)
    d = pred.to_dict()
    j = pred.job
    mesh = " ".join(f"{a}={v}" for a, v in d["mesh"].items())
    place = ", ".join(f"{a}->{p}" for a, p in d["placement"].items()) or "single device"
    mem = d["memory"]
    lines = [f"meshcast forecast: {j.model.name} on {j.hardware.name} x "
             f"{plural(j.chips, 'chip')}"]
    if not d["fits"]:  # said before the step time and MFU of a run that cannot happen
        lines.append(f"  DOES NOT FIT IN MEMORY: {d['fit_reason']}")
    lines += [
        f"  mesh         {mesh}   ({place})",
        f"  batch        {batch_text(d['global_batch_seqs'], d['seq_len'])} = "
        f"{tokens_text(j.tokens_per_step)} tokens/step; micro-batch {d['micro_batch']}, "
        f"{plural(d['microbatches'], 'micro-batch', 'micro-batches')} per step",
        f"  execution    {d['precision']}, remat {d['remat']}, "
        f"optimizer adam ({j.sharding.optimizer.state_dtype} state"
        f"{', distributed' if j.sharding.distributed_optimizer else ''}"
        f"{', weight gather overlapped' if j.sharding.overlap_param_gather else ''})"
        + (f", {j.sharding.pipeline_schedule} pipeline" if j.axis("pipeline") > 1 else ""),
        "",
        f"  step time    {d['step_time_s']:.4g} s   ({iv.text()})",
        *(f"  outside the fit: {line}" for line in iv.outside),
        f"  throughput   {d['tokens_per_s']:,.0f} tokens/s ({d['tokens_per_s_per_chip']:,.0f} per chip)",
        f"  MFU          {100 * d['mfu']:.1f} %   (model FLOPs 6*N_active + 6*L*s*heads*head_dim "
        "per token, vs dense bf16 peak)",
        "",
        f"  {'breakdown':<36}{'seconds':>10}{'%':>7}",
    ]
    for k, v in d["breakdown_s"].items():
        lines.append(f"    {k:<34}{v:>10.4g}{_pct(v, d['step_time_s']):>7}")
    fit = "fits" if mem["fits"] else "DOES NOT FIT"
    lines += [
        "",
        f"  memory per device  {mem['per_device_bytes'] / GIB:.1f} GiB of "
        f"{mem['capacity_bytes'] / GIB:.1f} GiB  ({fit})",
        "    " + "  ".join(f"{k.removesuffix('_bytes')} {mem[k] / GIB:.1f}" for k in
                          ("weights_bytes", "gradients_bytes", "optimizer_bytes",
                           "activations_bytes", "transient_bytes")) + " GiB",
    ]
    lines += [f"  warning: {w}" for w in pred.warnings if w not in iv.outside]
    return "\n".join(lines)


def format_profiles(profiles) -> str:
    rows = [f"{'name':<16}{'chip':<26}{'bf16 TFLOP/s':>13}{'HBM GB':>8}{'HBM TB/s':>9}  network"]
    for p in profiles:
        c = p.chip
        net = " > ".join(f"{lv.name}({lv.kind},{lv.size})" for lv in p.network)
        rows.append(f"{p.name:<16}{c.name[:25]:<26}{p.peak_flops('bf16') / 1e12:>13.0f}"
                    f"{c.hbm_capacity_bytes.value / 1e9:>8.0f}"
                    f"{c.hbm_bandwidth_bytes_per_s.value / 1e12:>9.2f}  {net}")
    return "\n".join(rows)


def format_models(models) -> str:
    rows = [f"{'name':<18}{'kind':<6}{'layers':>7}{'d_model':>8}{'total B':>9}{'active B':>9}  source"]
    for m in models:
        kind = "moe" if m.is_moe else "dense"
        rows.append(f"{m.name:<18}{kind:<6}{m.n_layers:>7}{m.d_model:>8}"
                    f"{m.total_params / 1e9:>9.2f}{m.active_params / 1e9:>9.2f}  {m.source[:60]}")
    return "\n".join(rows)
