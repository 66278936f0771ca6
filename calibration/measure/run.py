"""`meshcast calibrate`: plan the cases, time them, write raw rows as the run goes, resume.

The backend is configured before jax initialises (``--xla_force_host_platform_device_count``
must be set first, else a CPU run silently gets one device). Multi-host runs call
``jax.distributed.initialize()``; only process 0 writes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sys
from pathlib import Path

from calibration.cases import BenchCase, plan_cases
from calibration.dtypes import run_dtype
from calibration.levels import calibration_mesh
from calibration.lock import directory_lock
from calibration.measure.launch import (Processes, agree, digest, share_from_zero, start_runtime,
                                       stop_runtime)
from calibration.plan_file import incomplete_tail, read_plan, resume_command, write_plan
from calibration.raw import (REPS_FULL, REPS_QUICK, check_kinds, ensure_room, raw_path,
                            read_raw_file, write_raw_rows)
from meshcast.errors import MeshcastError
from meshcast.out_dir import output_dir
from simulator.specs.sharding import ShardingSpec

PLATFORM = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}
INSTALL = {"gpu": 'pip install -U "jax[cuda12]" (NVIDIA GPU with a CUDA 12 driver)',
           "tpu": 'pip install -U "jax[tpu]" (on a Cloud TPU VM)'}


def configure_backend(backend: str, devices: int | None) -> None:
    """Set JAX_PLATFORMS (and the CPU device count) before jax starts."""
    if backend not in PLATFORM:
        raise MeshcastError(f"backend: {backend!r} is not one of cpu, gpu, tpu")
    if "jax" in sys.modules:
        import jax

        have = len(jax.devices())
        if devices and have != devices:
            raise MeshcastError(f"devices: jax already started with {have} devices; "
                                f"run calibration in a fresh process to get {devices}")
        return
    os.environ.setdefault("JAX_PLATFORMS", PLATFORM[backend])
    if backend == "cpu":
        n = devices or 8
        flags = os.environ.get("XLA_FLAGS", "")
        flags = " ".join(f for f in flags.split() if "host_platform_device_count" not in f)
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def require_backend(backend: str):
    """``jax.devices()`` of the configured backend, or one MeshcastError line saying there is
    no such device or jax plugin here and how to install one."""
    import jax

    try:
        devices = jax.devices()
    except Exception as e:  # noqa: BLE001 - jax raises RuntimeError, or asserts, by version
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        why = why.split(" (set JAX_PLATFORMS")[0][:160]
        why = "it found none" if why == type(e).__name__ else why
        install = INSTALL.get(backend, "")
        raise MeshcastError(
            f"backend: no {backend} device or jax plugin for it here (jax: {why}); "
            + (f"install one with `{install}`, or " if install else "") + "use --backend cpu"
        ) from None
    if backend != "cpu" and devices and devices[0].platform == "cpu":
        raise MeshcastError(f"backend: jax found no {backend} device, only the CPU; install "
                            f"`{INSTALL[backend]}`, or use --backend cpu")
    return devices


def run_metadata() -> dict:
    import jax
    import jaxlib

    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device_kind": dev.device_kind,
            "n_devices": len(jax.devices()), "n_hosts": jax.process_count(),
            "jax_version": jax.__version__, "jaxlib_version": jaxlib.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "host": socket.gethostname(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def shape_job(sharding: ShardingSpec, n_devices: int):
    """The reference job whose plan gives the matmul shapes to sweep (shapes only: a
    :class:`calibration.reference.ShapeJob`, no hardware)."""
    from calibration.reference import ShapeJob, reference_model

    return ShapeJob(reference_model("moe"), sharding, n_devices)


def calibrate(out: str | Path, backend: str = "cpu", devices: int | None = None,
              quick: bool = False, resume: bool = False, mesh: dict[str, int] | None = None,
              multi_host: bool = False, limit: int | None = None, log=print,
              mesh_text: str | None = None, processes: Processes | None = None,
              local_processes: int | None = None) -> Path:
    """Measure every planned case into ``out/raw.csv``; returns its path.

    ``limit`` stops after that many new cases (a long run in chunks; ``resume`` continues).
    The directory is locked for the run (:mod:`calibration.lock`), its plan written to
    ``plan.json`` (:mod:`calibration.plan_file`); ``resume`` first drops a last case cut short
    and measures it again. ``mesh_text`` is ``mesh`` as typed, for the resume command.

    Several processes (``processes``, :mod:`calibration.measure.launch`; ``multi_host`` alone
    means JAX's auto-detection) each run this with the same options: they check that they
    planned the same cases with the same jax (:func:`~calibration.measure.launch.agree`), then
    process 0 alone locks and reads the directory and hands every process the cases still to
    measure; all measure them in the same order (the collectives span every process), and
    process 0 alone writes rows, timed on its own clock. ``devices`` is per process;
    ``local_processes`` is recorded only so the resume command can start them again."""
    procs = processes or Processes("auto" if multi_host else "single")
    configure_backend(backend, devices)
    import jax

    start_runtime(procs, backend)
    require_backend(backend)
    out = Path(out)
    writer = jax.process_index() == 0
    if not writer:
        log = _quiet
    options = {"backend": backend,
               "devices": jax.local_device_count() if backend == "cpu" else None,
               "quick": quick, "mesh": mesh_text or (",".join(f"{a}={n}" for a, n in mesh.items())
                                                     if mesh else None),
               "multi_host": procs.distributed, "processes": jax.process_count(),
               "local_processes": local_processes}
    path = _calibrate(out, quick, resume, mesh, limit, log, writer, options)
    stop_runtime()  # a barrier: only once every process measured every case
    return path


def _quiet(*_a, **_k) -> None:
    """The log of processes other than 0 (process 0 speaks for the run)."""


def _calibrate(out: Path, quick, resume, mesh, limit, log, writer, options) -> Path:
    import jax
    import jaxlib

    from calibration.measure.bench import median, time_case
    from calibration.measure.mesh import make_jax_mesh

    n = len(jax.devices())
    sharding = ShardingSpec(mesh=mesh or calibration_mesh(n, jax.process_count()))
    jmesh = make_jax_mesh(sharding)
    cases = plan_cases(dict(jmesh.shape), shape_job(sharding, n), quick,
                       run_dtype(jax.default_backend()), devices=jmesh.devices)
    reps = REPS_QUICK if quick else REPS_FULL
    ids = [c.case_id for c in cases]
    agree("plan", {"cases": len(ids), "cases_sha256": digest(ids), "reps": reps,
                   "mesh": dict(jmesh.shape), "limit": limit,
                   "jax": jax.__version__, "jaxlib": jaxlib.__version__}, describe=_plan_text)
    rows: list[dict] = []
    lock = contextlib.ExitStack()

    def prepare() -> dict:  # process 0 only: lock, read and write the directory
        lock.enter_context(directory_lock(output_dir(out, "a directory for the calibration")))
        rows.extend(_prepare(out, cases, reps, resume, options, log))
        done = {r["case_id"] for r in rows}
        return {"todo": [c for c in ids if c not in done], "done": len(done)}

    with lock:
        plan = share_from_zero("todo", prepare if writer else None)
        by_id = {c.case_id: c for c in cases}
        todo, done = [by_id[cid] for cid in plan["todo"]], plan["done"]
        hosts = jax.process_count()
        where = f"{n} {jax.devices()[0].device_kind} devices" + (
            f" ({hosts} processes x {jax.local_device_count()})" if hosts > 1 else "")
        log(f"calibrate: {len(cases)} cases on {where}, mesh {dict(jmesh.shape)}; {done} done, "
            f"{len(todo)} to run -> {raw_path(out)}")
        meta = run_metadata()
        for i, case in enumerate(todo[:limit] if limit is not None else todo, start=1):
            times = time_case(case, jmesh, reps)
            if writer:
                rows.extend(_rows(case, times, meta))
                write_raw_rows(out, rows)
            log(f"  [{done + i}/{len(cases)}] {case.case_id}: median "
                f"{median(times) * 1e6:.1f} us")
    return raw_path(out)


def _prepare(out: Path, cases, reps, resume, options, log) -> list[dict]:
    """Process 0, holding the lock: the rows to keep (``resume``: the file's, less a last case
    cut short, written back), after writing the plan; a MeshcastError when the directory holds
    another run's measurements or plan."""
    rows: list[dict] = []
    ids = [c.case_id for c in cases]
    if not resume and raw_path(out).exists() and raw_path(out).stat().st_size:
        _refuse_overwrite(out)
    if resume:
        old = read_plan(out)
        if old and old["cases"] != ids:
            raise MeshcastError(f"out: {out} was planned with other options; resume it with "
                                f"`{resume_command(out, old['options'])}`")
        rows, cut = read_raw_file(out)
        check_kinds(out, rows)
        tail = incomplete_tail(out, rows, old["reps"] if old else None)
        if cut or tail:
            # a partial line after a whole case starts the next one; without a plan (reps
            # unknown) the case before it cannot be told whole, so it is measured again too
            cid = tail[0] if tail else (rows[-1]["case_id"] if rows and not old else None)
            kept = [r for r in rows if r["case_id"] != cid]
            log(f"calibrate: the last case {cid or '(none)'} in {raw_path(out)} was cut short; "
                f"dropping its {len(rows) - len(kept)} whole row(s)"
                + (" and a partial line" if cut else "") + " and measuring it again")
            rows = kept
            write_raw_rows(out, rows)
    write_plan(out, options, reps, ids)
    ensure_room(out, len(cases) * reps)  # before the first measurement
    return rows


def _refuse_overwrite(out: Path):
    raise MeshcastError(f"out: {raw_path(out)} already holds measurements; pass --resume to "
                        "continue that run, or choose a new --out directory")


def _plan_text(v: dict) -> str:
    return (f"{v['cases']} cases (sha256 {v['cases_sha256']}) on mesh {v['mesh']}, {v['reps']} "
            f"repetitions, limit {v['limit']}, jax {v['jax']} / jaxlib {v['jaxlib']}")


def _rows(case: BenchCase, times: list[float], meta: dict) -> list[dict]:
    base = {**case.row_fields(), **meta}
    return [dict(base, rep=i, seconds=t) for i, t in enumerate(times)]
