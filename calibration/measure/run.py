"""`meshcast calibrate`: plan the cases, time them, write raw rows as the run goes, resume.

The backend is configured before jax initialises (``--xla_force_host_platform_device_count``
must be set first, else a CPU run silently gets one device). Multi-host runs call
``jax.distributed.initialize()``; only process 0 writes.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
from pathlib import Path

from calibration.cases import BenchCase, plan_cases
from calibration.dtypes import run_dtype
from calibration.raw import raw_path, read_raw_rows, write_raw_rows
from meshcast.errors import MeshcastError
from simulator.specs.sharding import ShardingSpec

PLATFORM = {"cpu": "cpu", "gpu": "cuda", "tpu": "tpu"}


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
              multi_host: bool = False, limit: int | None = None, log=print) -> Path:
    """Measure every planned case into ``out/raw.csv``; returns its path.

    ``limit`` stops after that many new cases (a long run in chunks; ``resume`` continues)."""
    configure_backend(backend, devices)
    import jax

    from calibration.measure.bench import median, time_case
    from calibration.measure.mesh import make_jax_mesh

    if multi_host:
        jax.distributed.initialize()
    out = Path(out)
    writer = jax.process_index() == 0
    rows = read_raw_rows(out) if resume else []
    if not resume and raw_path(out).exists() and raw_path(out).stat().st_size:
        raise MeshcastError(f"out: {raw_path(out)} already holds measurements; pass --resume to "
                            "continue that run, or choose a new --out directory")
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    n = len(jax.devices())
    default = {"data": 2, "expert": 2, "model": -1} if n % 4 == 0 else {"data": -1}
    sharding = ShardingSpec(mesh=mesh or default)
    jmesh = make_jax_mesh(sharding)
    cases = plan_cases(dict(jmesh.shape), shape_job(sharding, n), quick,
                       run_dtype(jax.default_backend()))
    done = {r["case_id"] for r in rows}
    todo = [c for c in cases if c.case_id not in done]
    log(f"calibrate: {len(cases)} cases on {n} {jax.devices()[0].device_kind} devices, "
        f"mesh {dict(jmesh.shape)}; {len(done)} done, {len(todo)} to run -> {raw_path(out)}")
    meta = run_metadata()
    reps = 9 if quick else 20
    for i, case in enumerate(todo[:limit] if limit is not None else todo, start=1):
        times = time_case(case, jmesh, reps)
        rows += _rows(case, times, meta)
        if writer:
            write_raw_rows(out, rows)
        log(f"  [{len(done) + i}/{len(cases)}] {case.case_id}: median {median(times) * 1e6:.1f} us")
    return raw_path(out)


def _rows(case: BenchCase, times: list[float], meta: dict) -> list[dict]:
    base = {"case_id": case.case_id, "kind": case.kind, "op": case.op, "axis": case.axis,
            "group_size": case.group_size, "dtype": case.dtype, "m": case.m, "k": case.k,
            "n": case.n, "hd": case.hd, "nbytes": case.nbytes, "flops": case.flops, **meta}
    return [dict(base, rep=i, seconds=t) for i, t in enumerate(times)]
