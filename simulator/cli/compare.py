"""``meshcast compare``: MoE vs dense at equal step time (registered by :mod:`simulator.cli.main`)."""

from __future__ import annotations

from simulator.cli import args as cli_args
from simulator.cli.search import (add_batch_args, add_failure_args, add_profiles_arg,
                                  failure_options, with_profiles)
from meshcast.errors import MeshcastError
from simulator.analysis.matched import VIEWS


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="MoE vs dense at equal step time, with a Chinchilla budget")
    p.add_argument("--dense", required=True, help="the dense reference (zoo name or YAML path)")
    p.add_argument("--moe", required=True, help="comma-separated MoE models, e.g. moe-6.4b")
    p.add_argument("--hardware", required=True, help="profile name/alias or YAML path")
    p.add_argument("--chips", required=True, type=cli_args.chips, help="chips in the job")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--mesh", help="run both on this mesh (the dense folds expert into data); "
                   "default: each on its best sharding (--best)")
    g.add_argument("--best", action="store_true",
                   help="each model on its best sharding (the default without --mesh)")
    add_batch_args(p, seq_default="the dense model's")
    p.add_argument("--remat", choices=["none", "selective", "full"],
                   help="with --mesh (default selective; searched otherwise)")
    p.add_argument("--micro-batch", type=cli_args.micro_batch,
                   help="with --mesh (default 1; searched otherwise)")
    p.add_argument("--tokens-per-param", type=cli_args.tokens_per_param, default=20.0,
                   help="Chinchilla ratio over the dense model's parameters")
    p.add_argument("--view", choices=VIEWS, default="step_time",
                   help="the headline yardstick (all three are always reported)")
    add_failure_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=cli_args.output_file("--plot", ".png"),
                   help="write a PNG: step times (with their intervals when the "
                   "profile was fitted), the increase by part, tokens per view (default: no "
                   "plot)")
    add_profiles_arg(p)


@with_profiles
def cmd_compare(a) -> int:
    from simulator.analysis.compare import compare
    from simulator.cli.compare_report import comparison_dict, format_comparison
    from simulator.specs.sharding import parse_mesh

    moes = [m.strip() for m in a.moe.split(",") if m.strip()]
    if not moes:
        raise MeshcastError(f"moe: {a.moe!r} names no model; give e.g. --moe moe-6.4b")
    extra = {k: v for k, v in (("remat", a.remat), ("micro_batch", a.micro_batch)) if v is not None}
    if a.plot:
        from simulator.cli.plots.common import check_png_path

        check_png_path(a.plot)  # before the searches
    c = compare(a.dense, moes, a.hardware, a.chips, mesh=parse_mesh(a.mesh) if a.mesh else None,
                tokens_per_param=a.tokens_per_param, view=a.view, global_batch=a.global_batch,
                global_batch_tokens=a.global_batch_tokens, seq_len=a.seq_len,
                failures=failure_options(a), **extra)
    if a.plot:
        from simulator.cli.plots import plot_comparison, save

        save(plot_comparison(c), a.plot)
    cli_args.emit(comparison_dict(c), "compare", a.json, lambda: format_comparison(c))
    return 0


COMMANDS = {"compare": cmd_compare}
