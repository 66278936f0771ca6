"""``meshcast rank`` and ``meshcast plan``: search every sharding of a job; what to buy.

Registered by :mod:`simulator.cli.main` through :func:`add_parsers` and :data:`COMMANDS`.
"""

from __future__ import annotations

import functools

from simulator.cli import args as cli_args
from simulator.cli.progress import Progress
from meshcast.errors import MeshcastError

#: ``--profiles builtin``: the built-in profiles alone, their efficiencies as assumed from
#: datasheets (no interval), instead of the shipped fit.
BUILTIN = "builtin"


def add_profiles_arg(p, shipped_fit: bool = True) -> None:
    """``--profiles DIR`` (repeatable): profile names resolve to DIR's YAML files first. Without
    it, a command with ``shipped_fit`` forecasts with :data:`~hardware_profiles.FITTED_DIR`
    (efficiencies fitted on, or transferred from, published runs), the others with the built-in
    profiles."""
    default = ("the fit of published runs shipped in hardware_profiles/fitted; `--profiles "
               f"{BUILTIN}`: the datasheet profiles, efficiencies assumed" if shipped_fit
               else "the built-in profiles only")
    p.add_argument("--profiles", action="append", metavar="DIR",
                   help="a folder of fitted profiles (`meshcast fit --published FILE --out DIR`) "
                   "searched before the built-in ones; their fit gives the forecast its interval "
                   f"(repeatable; default: {default})")
    p.set_defaults(profiles_shipped_fit=shipped_fit)


def add_batch_args(p, seq_default: str = "the model's") -> None:
    """``--global-batch`` / ``--global-batch-tokens`` and ``--seq-len``, with the one default
    of predict, rank, plan and compare (:func:`simulator.search.space.job_batch`)."""
    from simulator.search.space import DEFAULT_BATCH_TOKENS

    g = p.add_mutually_exclusive_group()
    g.add_argument("--global-batch", type=cli_args.sequences,
                   help=f"sequences per step (default: {DEFAULT_BATCH_TOKENS:,} tokens / "
                   "--seq-len, as in predict, rank, plan and compare)")
    g.add_argument("--global-batch-tokens", type=cli_args.batch_tokens,
                   help="tokens per step, a multiple of --seq-len (default: see --global-batch)")
    p.add_argument("--seq-len", type=cli_args.seq_len,
                   help=f"tokens per sequence (default: {seq_default})")


def profile_folders(a) -> list:
    """The folders searched before the built-in profiles: ``--profiles`` as given (``builtin``
    asks for none), else the shipped fit where the command defaults to it."""
    from hardware_profiles import FITTED_DIR

    if a.profiles is None:
        return [FITTED_DIR] if getattr(a, "profiles_shipped_fit", False) else []
    return [d for d in a.profiles if d != BUILTIN]


def profiles_of(a):
    """The context in which the command's profile names resolve (:func:`profile_folders`)."""
    from hardware_profiles import profile_dirs

    return profile_dirs(*profile_folders(a))


def with_profiles(cmd):
    """``cmd(a)`` run inside :func:`profiles_of` ``a`` (a command that takes ``--profiles``)."""
    @functools.wraps(cmd)
    def run(a) -> int:
        with profiles_of(a):
            return cmd(a)
    return run


def _job_args(p, chips_help: str, chips_type) -> None:
    p.add_argument("--model", required=True, help="zoo name (see `meshcast models`) or YAML path")
    p.add_argument("--chips", required=chips_type is cli_args.chips, type=chips_type,
                   help=chips_help)
    add_batch_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_profiles_arg(p)


def _budget_args(p) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tokens", type=cli_args.tokens, help="training tokens (default: Chinchilla)")
    g.add_argument("--tokens-per-param", type=cli_args.tokens_per_param,
                   help="Chinchilla ratio over the reference's parameters (default 20)")
    p.add_argument("--reference", help="dense reference model whose parameters set the budget "
                   "(Du et al. 2024); default: the model itself (an MoE's total parameters)")


def add_failure_args(p) -> None:
    """The interruption model's options (:mod:`simulator.cost.goodput`); each omitted one is
    the profile's sourced default."""
    p.add_argument("--failure-rate", type=cli_args.finite_float(0, 1, "4.7e-4"),
                   help="unexpected interruptions per chip-day (default: the profile's "
                   "architecture's published rate, e.g. Llama 3's 4.74e-4 for H100; 0 counts "
                   "no interruptions: the ideal time)")
    p.add_argument("--restart-min", type=cli_args.finite_float(0, 10080, "6.5"),
                   help="minutes from an interruption to training again (default 6.47, "
                   "TrainMover's measure of an automated restart)")
    p.add_argument("--checkpoint-bw", type=cli_args.finite_float(0, 1e5, "1.0", strict_min=True),
                   help="checkpoint write GB/s per host (default 0.98, Llama 3's storage: 2 "
                   "TB/s over 2,048 hosts)")
    p.add_argument("--async-checkpoint", action="store_true",
                   help="checkpoints pause only for the copy to host memory; the write goes on "
                   "in the background")
    p.add_argument("--checkpoint-every", type=cli_args.finite_float(0, 1e6, "60",
                                                                   strict_min=True),
                   help="minutes between checkpoints (default: the optimum, Young/Daly)")


def failure_options(a) -> dict:
    """The :func:`simulator.cost.goodput.failure_model` options of a parsed command line."""
    return {"rate": a.failure_rate, "restart_min": a.restart_min,
            "checkpoint_gb_s": a.checkpoint_bw, "async_checkpoint": a.async_checkpoint,
            "every_min": a.checkpoint_every}


def add_parsers(sub) -> None:
    """Add the ``rank`` and ``plan`` subcommands to an argparse subparsers object."""
    r = sub.add_parser("rank", help="rank every feasible sharding of a job")
    r.add_argument("--hardware", required=True, help="profile name/alias or YAML path")
    _job_args(r, "chips in the job", cli_args.chips)
    from simulator.search.space import OBJECTIVES

    r.add_argument("--objective", choices=OBJECTIVES, default="step_time",
                   help="what the configurations are ranked by")
    r.add_argument("--top", type=cli_args.top, default=5, help="configurations to show")
    r.add_argument("--out", type=cli_args.output_file("--out", ".csv"),
                   help="write every evaluated configuration to this CSV file (default: none "
                   "written)")
    r.add_argument("--plot", type=cli_args.output_file("--plot", ".png"),
                   help="write a PNG: every configuration and the top ones' breakdowns "
                   "(default: no plot)")
    r.add_argument("--precision", choices=["bf16", "fp8", "fp4", "fp32"], default="bf16",
                   help="matmul precision")
    r.add_argument("--moe-dispatcher", choices=("alltoall", "deepep"), default="alltoall",
                   help="MoE token dispatch (see `predict --help`): deepep sends a token once per "
                   "destination device and node")
    _budget_args(r)
    add_failure_args(r)
    p = sub.add_parser("plan", help="best configuration, time and cost per hardware and chip count")
    p.add_argument("--hardware", required=True, help="comma-separated profiles, e.g. h100-sxm,tpu-v5p")
    _job_args(p, "comma-separated chip counts (default 64,...,4096)", cli_args.chip_list)
    _budget_args(p)
    p.add_argument("--deadline", type=cli_args.days,
                   help="days: the smallest chip count that meets it (default: no deadline)")
    p.add_argument("--price", type=price_list, metavar="HW=USD,...",
                   help="price per chip-hour in USD, e.g. h200=3.50,h100=2.10 (names as in "
                   "--hardware); default: each profile's sourced list price, where it has one "
                   "(`meshcast profiles`); a profile with neither has an unknown cost")
    add_failure_args(p)
    p.add_argument("--plot", type=cli_args.output_file("--plot", ".png"),
                   help="write a PNG: days against chips per hardware (with the "
                   "forecast band where the profiles were fitted), and the cost front "
                   "(default: no plot)")


_PRICE = cli_args.finite_float(0, 1000, "3.50", strict_min=True)


def price_list(text: str) -> dict[str, float]:
    """An argparse type: ``NAME=USD,...`` prices per chip-hour; a name is any name ``--hardware``
    takes (checked against the profiles when the plan runs)."""
    import argparse

    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, usd = part.partition("=")
        if not eq or not name.strip():
            raise argparse.ArgumentTypeError(f"{part!r} is not HARDWARE=USD; give e.g. "
                                             "h200=3.50,h100=2.10")
        try:
            out[name.strip()] = _PRICE(usd)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{name.strip()}: {e} (USD per chip-hour)") from None
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} names no price; give e.g. h200=3.50,h100=2.10")
    return out


def _tokens(a, model, reference) -> int | None:
    from simulator.cost.budget import chinchilla_tokens

    if a.tokens is not None:
        if a.tokens < 1:
            raise MeshcastError(f"tokens: {a.tokens:g} must be a positive number of tokens")
        return int(a.tokens)
    return chinchilla_tokens(model, a.tokens_per_param or 20.0, reference)


@with_profiles
def cmd_rank(a) -> int:
    from simulator.cost.goodput import failure_model
    from simulator.search.rank import rank
    from simulator.cli.rank_report import format_rank, rank_json, write_csv
    from simulator.search.space import make_space
    from simulator.specs.zoo import load_model

    space = make_space(a.model, a.hardware, a.chips, global_batch=a.global_batch,
                       global_batch_tokens=a.global_batch_tokens, seq_len=a.seq_len,
                       precision=a.precision, moe_dispatcher=a.moe_dispatcher)
    ref = load_model(a.reference) if a.reference else None
    progress = Progress("rank")
    try:
        res = rank(space, a.objective, a.top, tokens=_tokens(a, space.model, ref),
                   progress=progress,
                   failures=failure_model(space.hardware, **failure_options(a)))
    finally:
        progress.done()
    if a.out:
        write_csv(res, a.out)
    if a.plot:
        from simulator.cli.plots import plot_rank, save

        save(plot_rank(res), a.plot)
    cli_args.emit(rank_json(res), "rank", a.json, lambda: format_rank(res))
    return 0


def _chip_list(chips: list[int] | str | None) -> list[int] | None:
    """``--chips`` of plan: parsed by :func:`simulator.cli.args.chip_list` (a string when the
    namespace was built by hand)."""
    if chips is None or isinstance(chips, list):
        return chips
    import argparse

    try:
        return cli_args.chip_list(chips)
    except argparse.ArgumentTypeError as e:
        raise MeshcastError(f"chips: {e}") from None


@with_profiles
def cmd_plan(a) -> int:
    from simulator.analysis.plan import plan
    from simulator.cli.rank_report import format_plan, plan_json

    if a.plot:
        from simulator.cli.plots.common import check_png_path

        check_png_path(a.plot)  # before the searches
    progress = Progress("plan")
    try:
        res = plan(a.model, [h for h in a.hardware.split(",") if h.strip()], _chip_list(a.chips),
                   tokens=int(a.tokens) if a.tokens is not None else None,
                   tokens_per_param=a.tokens_per_param, reference=a.reference,
                   deadline_days=a.deadline, global_batch=a.global_batch,
                   global_batch_tokens=a.global_batch_tokens, seq_len=a.seq_len,
                   prices=a.price, progress=lambda what: progress(what),
                   failures=failure_options(a))
    finally:
        progress.done()
    if a.plot:
        from simulator.cli.plots import plot_plan, save

        save(plot_plan(res), a.plot)
    cli_args.emit(plan_json(res), "plan", a.json, lambda: format_plan(res))
    return 0


COMMANDS = {"rank": cmd_rank, "plan": cmd_plan}
