"""`meshcast validate --calibration DIR`: time the reference train step for several (model, mesh)
cases and set each beside meshcast's forecast from the fitted profile file (``DIR/profile.yaml``,
as ``meshcast fit DIR`` wrote it, or ``--profile PATH``), recorded by its sha256.

Over several hosts (jax processes) every process runs the same steps, and the cases' meshes span
the hosts (:func:`multi_host_cases`): data across hosts with expert and model within, and expert
across hosts; each case records the level every mesh axis crosses on the real devices
(:func:`calibration.levels.axis_levels`), and the median error over the cases that cross hosts is
reported apart."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from calibration.dtypes import precision_of_dtype, run_dtype
from calibration.fitting.files import file_sha256, fitted_profile_path
from calibration.measure.steps import measure_step, predict_case

#: (model kind, mesh, global batch): dense and MoE, including the 3D (data, expert, model) mesh.
CASES = [
    ("dense", {"data": 8}, 16),
    ("dense", {"data": 2, "fsdp": 2, "model": 2}, 16),
    ("dense", {"fsdp": 4, "model": 2}, 16),
    ("moe", {"data": 2, "expert": 2, "model": 2}, 16),
    ("moe", {"expert": 8}, 16),
    ("moe", {"data": 2, "expert": 4}, 16),
]
QUICK_CASES = [CASES[1], CASES[3]]


def multi_host_cases(n_devices: int, n_hosts: int, quick: bool) -> list[tuple[str, dict, int]]:
    """The cases of a run over ``n_hosts`` hosts of ``n_devices / n_hosts`` devices each (at
    least 2), every mesh spanning the hosts, each using every device (the mesh puts ``data``
    outermost, then ``fsdp``, ``expert``, ``model``: the first axes named run across hosts):
    dense ``data`` across hosts with ``fsdp`` x ``model`` within, and MoE ``expert`` across hosts
    and within (the hierarchical all-to-all) with ``model`` within; unless ``quick`` also MoE
    ``data`` across with ``expert`` x ``model`` within, dense ``data`` over every device (a
    hierarchical gradient all-reduce) and dense ``fsdp`` across and within. Global batch: two
    sequences per device."""
    p, gb = n_devices // n_hosts, 2 * n_devices
    if p < 2 or p % 2:
        from meshcast.errors import MeshcastError

        raise MeshcastError(f"validate: {n_hosts} hosts of {p} devices each; the multi-host "
                            "cases need an even number of devices per host")
    out = [("dense", {"data": n_hosts, "fsdp": p // 2, "model": 2}, gb),
           ("moe", {"expert": n_hosts * p // 2, "model": 2}, gb)]
    if not quick:
        out += [("moe", {"data": n_hosts, "expert": p // 2, "model": 2}, gb),
                ("dense", {"data": n_devices}, gb),
                ("dense", {"fsdp": n_hosts * p // 2, "model": 2}, gb)]
    return [(k, {a: v for a, v in m.items() if v > 1} or {"data": 1}, b) for k, m, b in out]


def case_levels(mesh_sizes: dict) -> dict[str, str]:
    """The level(s) each mesh axis of a case crosses on this run's devices
    (:func:`calibration.levels.axis_levels` on the real mesh the step runs on)."""
    import math

    import jax

    from calibration.levels import axis_levels
    from calibration.measure.mesh import make_jax_mesh
    from simulator.specs.sharding import ShardingSpec

    mesh = make_jax_mesh(ShardingSpec(mesh=mesh_sizes),
                         jax.devices()[:math.prod(mesh_sizes.values())])
    return {a: axis_levels(mesh.devices, mesh.axis_names, (a,))[0]
            for a, v in mesh_sizes.items() if v > 1}

#: Other work on more than this share of the host's cores (1-minute load average before a case
#: starts, when this process is idle) makes wall-clock step times measure the neighbours too.
LOAD_WARN_SHARE = 0.5


def host_load() -> tuple[float, int]:
    """(1-minute load average, cores this process may use)."""
    return os.getloadavg()[0], len(os.sched_getaffinity(0))


def load_warning(load: float, cores: int, backend: str, directory: str | Path = "DIR"
                 ) -> str | None:
    """A warning when ``load`` (other processes' runnable threads) exceeds
    :data:`LOAD_WARN_SHARE` of ``cores``, naming the process clock on a CPU backend (what
    ``MESHCAST_CLOCK=process`` times: :func:`calibration.measure.bench.clock`); None when the host
    is quiet or that clock is already in use."""
    if load <= LOAD_WARN_SHARE * cores or os.environ.get("MESHCAST_CLOCK") == "process":
        return None
    msg = (f"  warning: host load {load:.1f} (1-minute average) on {cores} cores: other work "
           "shares this host, so wall-clock step times are unreliable")
    if backend == "cpu":
        msg += ("; run on a quiet host, or time with this process's CPU seconds: "
                f"`MESHCAST_CLOCK=process meshcast validate --calibration {directory}` (calibrate with "
                "the same clock: `MESHCAST_CLOCK=process meshcast calibrate ...`)")
    return msg


def _eta(elapsed: float, done: int, total: int) -> str:
    if not done:
        return "ETA after the first case"
    return f"ETA {elapsed / done * (total - done):.0f} s"


@dataclass
class Validation:
    case: str
    measured_s: float
    forecast_s: float

    @property
    def error(self) -> float:
        """``(forecast - measured) / measured``."""
        return (self.forecast_s - self.measured_s) / self.measured_s


def validate(directory: str | Path, profile: str | Path | None = None, quick: bool = False,
             hlo: bool = False, log=print) -> dict:
    """Measured vs forecast per case and the median absolute error, forecast from the profile
    file ``profile`` (default: the one ``meshcast fit`` wrote in ``directory``), whose path and
    sha256 the result records. The steps run in the dtype ``meshcast calibrate`` measures in on
    this backend (:func:`calibration.dtypes.run_dtype`). With ``hlo`` each case also sets XLA's
    compiled collectives beside the step graph's (:mod:`calibration.measure.hlo_compare`)."""
    from hardware_profiles import load_profile_file

    path = fitted_profile_path(directory, profile)
    digest = file_sha256(path)
    prof = load_profile_file(path)
    import jax

    backend = jax.default_backend()
    dtype = run_dtype(backend)
    log(f"  profile {path} ({prof.name}) sha256 {digest}; steps in {dtype}")
    seq, reps = (128, 3) if quick else (256, 5)
    hosts = jax.process_count()
    cases = (multi_host_cases(jax.device_count(), hosts, quick) if hosts > 1
             else QUICK_CASES if quick else CASES)
    clock = "process CPU time" if os.environ.get("MESHCAST_CLOCK") == "process" else "wall clock"
    log(f"  {len(cases)} case{'s' if len(cases) != 1 else ''}, {reps} timed steps each "
        f"(2 warm-up), {clock}" + ("; with XLA's collectives (--hlo)" if hlo else ""))
    out = []
    t0, warned = time.perf_counter(), False
    for i, (kind, mesh_sizes, gb) in enumerate(cases):
        label = f"{kind} " + ",".join(f"{a}={v}" for a, v in mesh_sizes.items())
        load, cores = host_load()
        log(f"  [{i + 1}/{len(cases)}] {label}: starting (host load {load:.1f} on {cores} "
            f"cores; {_eta(time.perf_counter() - t0, i, len(cases))})")
        warning = None if warned else load_warning(load, cores, backend, directory)
        if warning:
            log(warning)
            warned = True
        v = Validation(label, measure_step(kind, mesh_sizes, gb, seq, reps, dtype),
                       predict_case(kind, mesh_sizes, gb, seq, prof,
                                    precision_of_dtype(dtype)).step_time_s)
        log(f"  {label:<34} measured {v.measured_s * 1e3:9.1f} ms  forecast "
            f"{v.forecast_s * 1e3:9.1f} ms  error {100 * v.error:+6.1f}%")
        row = {"case": v.case, "measured_s": v.measured_s, "forecast_s": v.forecast_s,
               "error": v.error}
        if hosts > 1:
            row["levels"] = case_levels(mesh_sizes)
            log("  " + " " * 34 + " levels: " + ", ".join(f"{a} {lv}" for a, lv in
                                                          row["levels"].items()))
        if hlo:
            from calibration.measure.hlo_compare import compare_case, format_table

            hlo_rows = compare_case(kind, mesh_sizes, gb, seq)
            log(format_table(hlo_rows))
            row["hlo"] = [asdict(r) for r in hlo_rows]
            row["hlo_mismatches"] = sum(r.status == "mismatch" for r in hlo_rows)
        out.append((v, row))
    med = float(np.median([abs(v.error) for v, _ in out]))
    log(f"  median |error| {100 * med:.1f}% over {len(out)} cases")
    result = {"profile": str(path), "profile_sha256": digest, "dtype": dtype,
              "cases": [row for _, row in out], "median_abs_error": med}
    if hosts > 1:
        from calibration.levels import WITHIN_HOST

        across = [abs(v.error) for v, row in out
                  if any(lv != WITHIN_HOST for lv in row["levels"].values())]
        result["hosts"] = hosts
        result["median_abs_error_across_hosts"] = float(np.median(across)) if across else None
        if across:
            log(f"  median |error| {100 * result['median_abs_error_across_hosts']:.1f}% over the "
                f"{len(across)} cases whose mesh crosses hosts ({hosts} processes)")
    return result
