"""`meshcast validate --calibration DIR`: time the reference train step for several (model, mesh)
cases and set each beside meshcast's forecast from the fitted profile file (``DIR/profile.yaml``,
as ``meshcast fit DIR`` wrote it, or ``--profile PATH``), recorded by its sha256."""

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
    cases = QUICK_CASES if quick else CASES
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
        if hlo:
            from calibration.measure.hlo_compare import compare_case, format_table

            hlo_rows = compare_case(kind, mesh_sizes, gb, seq)
            log(format_table(hlo_rows))
            row["hlo"] = [asdict(r) for r in hlo_rows]
            row["hlo_mismatches"] = sum(r.status == "mismatch" for r in hlo_rows)
        out.append((v, row))
    med = float(np.median([abs(v.error) for v, _ in out]))
    log(f"  median |error| {100 * med:.1f}% over {len(out)} cases")
    return {"profile": str(path), "profile_sha256": digest, "dtype": dtype,
            "cases": [row for _, row in out], "median_abs_error": med}
