"""The ``meshcast`` command: one CLI with subcommands.

Bad input prints ``error: <field>: <problem>`` and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from simulator.cli import (args as cli_args, compare as cli_compare, published as cli_published,
                           search as cli_search)
from meshcast.errors import MeshcastError


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default: ``(default: X)`` for a value, ``(default:
    off)`` for a switch, ``(required)`` for a required option; an option whose default is
    None says in its own help text what omitting it does (a test holds every one to it)."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        if not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if "default" in text.lower():
            return text
        if isinstance(action, argparse._StoreTrueAction):
            return f"{text} (default: off)"
        if action.default is None:
            return text
        return f"{text} (default: %(default)s)"


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="forecast one training step")
    p.add_argument("--model", required=True, help="zoo name (see `meshcast models`) or YAML path")
    p.add_argument("--hardware", required=True, help="profile name/alias or YAML path")
    p.add_argument("--chips", required=True, type=cli_args.chips, help="chips in the job")
    p.add_argument("--mesh", default="data=-1", help="e.g. data=-1,fsdp=8,model=4 (-1 = the rest)")
    p.add_argument("--bind", default="", help="axis to network levels, e.g. model=nvlink,data=ib")
    cli_search.add_batch_args(p)
    p.add_argument("--micro-batch", type=cli_args.micro_batch, default=1,
                   help="sequences per batch shard per micro-step")
    p.add_argument("--precision", choices=["bf16", "fp8", "fp4", "fp32"], default="bf16",
                   help="matmul precision")
    p.add_argument("--remat", choices=["none", "selective", "full"], default="selective",
                   help="activation recompute: none, the attention core and elementwise ops "
                   "(selective), or every layer (full)")
    p.add_argument("--pipeline-schedule", choices=["1f1b", "interleaved"], default="1f1b",
                   help="pipeline schedule when the mesh has pipeline > 1")
    p.add_argument("--virtual-stages", type=cli_args.virtual_stages, default=1,
                   help="model chunks per pipeline stage (interleaved schedule)")
    p.add_argument("--optimizer-state", choices=["fp32", "bf16"], default="fp32",
                   help="dtype of Adam's moments")
    p.add_argument("--grad-dtype", choices=["fp32", "bf16"], default="fp32",
                   help="dtype gradients are accumulated and reduced in")
    p.add_argument("--distributed-optimizer", action="store_true",
                   help="shard optimizer state over data (ZeRO-1)")
    p.add_argument("--tp-comm-overlap", action="store_true",
                   help="tensor-parallel collectives pipelined with their GEMMs (Megatron)")
    p.add_argument("--ep-comm-overlap", action="store_true",
                   help="MoE all-to-alls under another micro-batch's compute (Megatron)")
    p.add_argument("--overlap-param-gather", action="store_true",
                   help="the distributed optimizer's weight all-gather under the next step's "
                   "first forward, layer by layer (Megatron; needs --distributed-optimizer)")
    p.add_argument("--fused-loss", action="store_true",
                   help="loss fused in place on the bf16 logits, no fp32 copy (Megatron-Core "
                   "cross_entropy_fusion_impl='te'); default: fp32 logits and their gradient")
    p.add_argument("--moe-host-issue-s", type=cli_args.host_seconds, default=0.0, metavar="SECONDS",
                   help="dropless MoE run eagerly (PyTorch, no CUDA graph for the dispatch): host "
                   "seconds to issue one op of the dispatch-to-combine part (about 3.6e-4 for "
                   "Megatron's dropless runs in published_runs.csv, fitted 2026-11-30)")
    p.add_argument("--moe-dispatcher", choices=("alltoall", "deepep"), default="alltoall",
                   help="MoE token dispatch: one copy per (token, expert) (alltoall), or one per "
                   "destination device and node (deepep: DeepEP/HybridEP, Megatron's flex)")
    p.add_argument("--load-imbalance", type=cli_args.load_imbalance,
                   help="MoE: busiest expert's share / mean (default: the model spec's, 1 = "
                   "balanced)")
    p.add_argument("--slice", help="TPU slice shape, e.g. 4x4x4 (default: the profile's slice of "
                   "--chips chips, else the largest that divides it, joined over DCN)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--trace", type=cli_args.output_file("--trace", ".json"),
                   help="write a Chrome/Perfetto trace JSON here (default: no trace)")
    p.add_argument("--plot", type=cli_args.output_file("--plot", ".png"),
                   help="write a PNG: breakdown bars (with the step's interval when "
                   "the profile was fitted) and a one-layer timeline per stream (default: no "
                   "plot)")
    cli_search.add_profiles_arg(p)


def _add_process_args(p) -> None:
    """How a calibrate/validate process joins others (:mod:`calibration.measure.launch`)."""
    from calibration.measure.launch import (MAX_LOCAL_PROCESSES, MAX_PROCESSES,
                                            coordinator_address)

    g = p.add_argument_group("several processes (JAX's distributed runtime)")
    g.add_argument("--multi-host", action="store_true", help="one process per host: call "
                   "jax.distributed.initialize(), which detects coordinator, process count and "
                   "id on Cloud TPU pods, under SLURM and Open MPI")
    g.add_argument("--coordinator", type=coordinator_address, metavar="HOST:PORT",
                   help="process 0's address, with --num-processes and --process-id (default: "
                   "none; no distributed runtime unless --multi-host)")
    g.add_argument("--num-processes", type=cli_args.positive_int(MAX_PROCESSES, example=2),
                   metavar="N", help="processes in the run, with --coordinator (default: none)")
    g.add_argument("--process-id", type=cli_args.positive_int(MAX_PROCESSES - 1, minimum=0,
                                                              example=0),
                   metavar="I", help="this process, 0 to N-1, with --coordinator (default: "
                   "none)")
    g.add_argument("--local-processes", type=cli_args.positive_int(MAX_LOCAL_PROCESSES,
                                                                   example=2),
                   metavar="N", help="CPU: start N processes of this command here, joined over "
                   "the loopback interface, each with --devices devices; process 0 writes "
                   "(default: one process)")


def build_parser() -> argparse.ArgumentParser:
    ap = cli_args.MeshcastParser(prog="meshcast", description="Forecast sharded dense/MoE "
                                 "LLM training step time on a concrete topology.")
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("meshcast")
    except PackageNotFoundError:  # run from a source tree that was never installed
        ver = "unknown (not installed)"
    ap.add_argument("--version", action="version", version=f"%(prog)s {ver}")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_predict(sub)
    cli_search.add_parsers(sub)
    cli_compare.add_parser(sub)
    pr = sub.add_parser("profiles", help="list the hardware profiles")
    pr.add_argument("--json", action="store_true", help="print one JSON list")
    ca = sub.add_parser("calibrate", help="time kernels and collectives with JAX into raw rows")
    ca.add_argument("--backend", choices=["cpu", "gpu", "tpu"], default="cpu",
                    help="the JAX backend to measure")
    ca.add_argument("--devices", type=cli_args.positive_int(4096),
                    help="CPU: virtual devices per process (default 8)")
    ca.add_argument("--quick", action="store_true", help="a short sweep (about a minute on CPU)")
    ca.add_argument("--out", required=True, help="directory for raw.csv")
    ca.add_argument("--resume", action="store_true", help="continue an interrupted run")
    ca.add_argument("--mesh", help="mesh to calibrate collectives on, e.g. "
                    "data=2,expert=2,model=2 (default: data=2,expert=2,model=-1 when the device "
                    "count is a multiple of 4, else data=-1; over several processes data = the "
                    "processes and expert=2,model=-1 or model=-1 within each)")
    _add_process_args(ca)
    ca.add_argument("--limit", type=cli_args.positive_int(10**6),
                    help="measure at most N new cases, then stop (continue "
                    "later with --resume; default: no limit, every case)")
    fi = sub.add_parser("fit", help="fit a calibrated hardware profile to raw rows")
    fi.add_argument("directory", nargs="?", help="a calibration --out directory (holds "
                    "raw.csv); omit it with --published")
    fi.add_argument("--out", help="where to write the fitted profile YAML (default "
                    "DIR/profile.yaml; fit_report.json and fit_predictions.csv go beside it); "
                    "--published: a directory, or FILE.yaml with --hardware")
    fi.add_argument("--base", help="profile whose datasheet peaks and network to keep "
                    "(default: none; the measured rates are the peaks, a profile of the "
                    "host itself)")
    cli_published.add_fit_args(fi)
    va = sub.add_parser("validate", help="time real sharded train steps vs the forecast")
    va.add_argument("--calibration", help="a calibration directory: validates the profile "
                    "`meshcast fit DIR` wrote there (DIR/profile.yaml), or --profile PATH; "
                    "omitted: give --published instead")
    va.add_argument("--backend", choices=["cpu", "gpu", "tpu"], default="cpu",
                    help="the JAX backend to run the train steps on")
    va.add_argument("--devices", type=cli_args.positive_int(4096),
                    help="CPU: virtual devices per process (default 8)")
    va.add_argument("--quick", action="store_true", help="two cases, short sequences")
    va.add_argument("--hlo", action="store_true", help="also compare the collectives XLA "
                    "compiled with the step graph's, kind by kind")
    va.add_argument("--json", action="store_true", help="print one JSON object")
    _add_process_args(va)
    cli_published.add_validate_args(va)
    mo = sub.add_parser("models", help="list the model zoo")
    mo.add_argument("--json", action="store_true", help="print one JSON list")
    for p in sub.choices.values():
        p.formatter_class = HelpWithDefaults
    return ap


def _job_from_args(a):
    from hardware_profiles import load_profile
    from simulator.specs.job import make_job
    from simulator.specs.sharding import OptimizerSpec, make_sharding, parse_bindings, parse_mesh
    from simulator.specs.zoo import load_model

    model = load_model(a.model)
    if a.load_imbalance is not None:
        if model.moe is None:
            raise MeshcastError(f"load-imbalance: {model.name} is dense; drop --load-imbalance")
        if a.load_imbalance < 1:
            raise MeshcastError(f"load-imbalance: {a.load_imbalance} must be >= 1 (1 = balanced)")
        model = model.model_copy(update={"moe": model.moe.model_copy(
            update={"load_imbalance": a.load_imbalance})})
    hw = load_profile(a.hardware)
    fields = dict(mesh=parse_mesh(a.mesh), bindings=parse_bindings(a.bind),
                  micro_batch=a.micro_batch,
                  remat=a.remat, precision=a.precision, pipeline_schedule=a.pipeline_schedule,
                  virtual_stages=a.virtual_stages, distributed_optimizer=a.distributed_optimizer,
                  tp_comm_overlap=a.tp_comm_overlap, ep_comm_overlap=a.ep_comm_overlap,
                  overlap_param_gather=a.overlap_param_gather, fused_loss=a.fused_loss,
                  moe_host_issue_s=a.moe_host_issue_s, moe_dispatcher=a.moe_dispatcher,
                  optimizer=OptimizerSpec(state_dtype=a.optimizer_state, grad_dtype=a.grad_dtype))
    if a.slice:
        try:
            fields["slice_shape"] = [int(x) for x in a.slice.lower().split("x")]
        except ValueError:
            raise MeshcastError(f"slice: {a.slice!r} is not like 4x4x4") from None
    if a.global_batch is None and a.global_batch_tokens is None:
        return _default_batch_job(model, fields, hw, a.chips, a.seq_len)
    return make_job(model, make_sharding(**fields, global_batch=a.global_batch,
                                         global_batch_tokens=a.global_batch_tokens,
                                         seq_len=a.seq_len), hw, a.chips)


def _default_batch_job(model, fields: dict, hw, chips: int, seq_len: int | None):
    """The job with the default global batch and sequence length of every command
    (:func:`simulator.search.space.job_batch`: rank, plan and compare use it too). A default
    batch the mesh's batch shards do not divide is an error that says so and what to give; any
    other problem of the job is its own error (checked without the batch)."""
    from simulator.search.space import DEFAULT_BATCH_TOKENS, job_batch
    from simulator.specs.job import make_job
    from simulator.specs.sharding import make_sharding

    gb, seq = job_batch(model, seq_len=seq_len)
    try:
        return make_job(model, make_sharding(**fields, global_batch=gb, seq_len=seq), hw, chips)
    except MeshcastError as e:
        # the job's own problem, if any, before the batch's
        job = make_job(model, make_sharding(**fields, seq_len=seq), hw, chips)
        unit = fields["micro_batch"] * job.batch_shards
        if gb % unit == 0:
            raise e
        near = max(unit, round(gb / unit) * unit)
        raise MeshcastError(
            f"global-batch: the default batch, {gb:,} sequences (2^"
            f"{DEFAULT_BATCH_TOKENS.bit_length() - 1} tokens / seq_len {seq}, as in rank, plan "
            f"and compare), is not a multiple of micro-batch {fields['micro_batch']} x data x "
            f"fsdp x expert {job.batch_shards} = {unit}; give --global-batch {near} (or another "
            f"multiple of {unit})") from None


@cli_search.with_profiles
def _cmd_predict(a) -> int:
    from simulator.analysis.interval import interval_of
    from simulator.predict import predict_job
    from simulator.cli.report import format_prediction

    if a.plot:
        from simulator.cli.plots.common import check_png_path

        check_png_path(a.plot)  # before the forecast
    pred = predict_job(_job_from_args(a))
    iv = interval_of(pred)
    if a.trace:
        from simulator.cli.trace import write_chrome_trace

        try:
            write_chrome_trace(pred, a.trace)
        except OSError as e:
            raise MeshcastError(f"trace: cannot write {a.trace}: {e.strerror}") from None
    if a.plot:
        from simulator.cli.plots import plot_prediction, save

        save(plot_prediction(pred, iv), a.plot)
    result = {**pred.to_dict(), **iv.as_dict()}
    cli_args.emit(result, "predict", a.json, lambda: format_prediction(pred, iv),
                  nonnegative=True)  # no NaN/inf/negative forecast
    return 0


def _cmd_profiles(a) -> int:
    from hardware_profiles import list_profiles
    from simulator.cli.report import format_profiles

    profiles = list_profiles()
    if a.json:
        print(json.dumps([p.model_dump(mode="json") for p in profiles], indent=2))
    else:
        print(format_profiles(profiles))
    return 0


def _cmd_models(a) -> int:
    from simulator.cli.report import format_models
    from simulator.specs.zoo import list_models

    models = list_models()
    if a.json:
        print(json.dumps([dict(m.model_dump(mode="json"), total_params=m.total_params,
                               active_params=m.active_params) for m in models], indent=2))
    else:
        print(format_models(models))
    return 0


def _cmd_calibrate(a) -> int:
    from calibration.measure.launch import (LOCAL_ENV, processes_from_args,
                                            run_local_processes)
    from simulator.specs.sharding import parse_mesh

    procs = processes_from_args(a)
    mesh = parse_mesh(a.mesh) if a.mesh else None  # a bad --mesh fails here, not in N processes
    if procs.mode == "local":
        from calibration.plan_file import plan_path

        return run_local_processes(a.argv, procs.local_processes, lambda crashed: (
            f"continue with `meshcast {' '.join(a.argv)}"
            f"{'' if a.resume else ' --resume'}`" if crashed and plan_path(a.out).exists()
            else ""))
    from calibration.measure.run import calibrate

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    path = calibrate(a.out, backend=a.backend, devices=a.devices, quick=a.quick, resume=a.resume,
                     mesh=mesh, multi_host=a.multi_host, limit=a.limit, log=log,
                     mesh_text=a.mesh, processes=procs,
                     local_processes=int(os.environ.get(LOCAL_ENV, 0)) or None)
    if path is not None:
        print(path)
    return 0


def _cmd_fit(a) -> int:
    if a.published:
        if not a.out:
            raise MeshcastError("out: fit --published writes into --out DIR (or --out FILE.yaml "
                                "with --hardware)")
        return cli_published.cmd_fit(a)
    if not a.directory:
        raise MeshcastError("fit: give a calibration directory, or --published FILE.csv --out DIR")
    from calibration.fitting.fit_cli import run_fit

    print(run_fit(a.directory, a.out, a.base))
    return 0


def _cmd_validate(a) -> int:
    if a.published:
        return cli_published.cmd_validate(a)
    if not a.calibration:
        raise MeshcastError("validate: give --calibration DIR (JAX train steps) or --published "
                            "FILE.csv (published runs)")
    if len(a.profile) > 1:
        raise MeshcastError(f"profile: --calibration validates one profile; got {len(a.profile)}")
    from calibration.fitting.files import fitted_profile_path
    from calibration.measure.launch import (processes_from_args, run_local_processes,
                                            start_runtime, stop_runtime)
    from calibration.measure.run import configure_backend, require_backend

    procs = processes_from_args(a)
    profile = fitted_profile_path(a.calibration, a.profile[0] if a.profile else None)
    if procs.mode == "local":
        return run_local_processes(a.argv, procs.local_processes)
    configure_backend(a.backend, a.devices)
    start_runtime(procs, a.backend)
    require_backend(a.backend)
    import jax

    from calibration.measure.validate import validate

    first = jax.process_index() == 0  # process 0 speaks for the run

    def log(msg: str) -> None:
        if first:
            print(msg, file=sys.stderr if a.json else sys.stdout, flush=True)

    result = validate(a.calibration, profile, quick=a.quick, hlo=a.hlo, log=log)
    stop_runtime()
    if a.json and first:
        print(json.dumps(result, indent=2))
    return 0


COMMANDS = {"predict": _cmd_predict, "calibrate": _cmd_calibrate, "fit": _cmd_fit,
            "validate": _cmd_validate,
            "profiles": _cmd_profiles, "models": _cmd_models, **cli_search.COMMANDS,
            **cli_compare.COMMANDS}


def main(argv: list[str] | None = None) -> int:
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = build_parser().parse_args(argv)
        args.argv = argv  # --local-processes starts this command line again
        try:
            code = COMMANDS[args.command](args)
        except MeshcastError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's final flush
        return code
    except BrokenPipeError:  # `meshcast ... | head`: stop quietly, as Unix tools do
        return cli_args.quiet_broken_pipe()
    except OSError as e:  # a file the loaders did not check (name too long, ...): one line
        print(f"error: {cli_args.os_error_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
