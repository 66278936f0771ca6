"""`meshcast validate`: time the reference train step for several (model, mesh) cases and set
each beside meshcast's forecast from the calibrated profile of the same directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.specs.sharding import BATCH_AXES, ShardingSpec

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


@dataclass
class Validation:
    case: str
    measured_s: float
    forecast_s: float

    @property
    def error(self) -> float:
        return (self.forecast_s - self.measured_s) / self.measured_s


def reference_step(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int,
                   dtype: str = "float32"):
    """The jitted reference train step of one case and its arguments ``(params, opt, tokens)``,
    on the first ``prod(mesh)`` devices, with ``dtype`` weights and activations."""
    import math

    import jax

    from calibration.mesh import make_jax_mesh
    from calibration.models import batch, init_opt, init_params, make_train_step
    from calibration.reference import reference_model

    m = reference_model(kind, seq_len)
    mesh = make_jax_mesh(ShardingSpec(mesh=mesh_sizes), jax.devices()[:math.prod(mesh_sizes.values())])
    params = init_params(m, jax.random.PRNGKey(0), mesh, jax.numpy.dtype(dtype))
    return make_train_step(m, mesh), (params, init_opt(params),
                                      batch(m, global_batch, mesh, jax.random.PRNGKey(1))), mesh


def measure_step(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int, reps: int,
                 dtype: str = "float32") -> float:
    """Median seconds of the real sharded train step (compile and 2 warm-up steps excluded)."""
    from calibration.bench import clock

    step, (params, opt, tokens), _ = reference_step(kind, mesh_sizes, global_batch, seq_len, dtype)
    times = []
    for i in range(2 + reps):
        t0 = clock()
        params, opt, loss = step(params, opt, tokens)
        loss.block_until_ready()
        if i >= 2:
            times.append(clock() - t0)
    return float(np.median(times))


def predict_case(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int, profile,
                 precision: str = "fp32"):
    """meshcast's forecast of a case as the reference step runs it: one micro-batch per batch
    shard, no remat, on the mesh's devices, in the run's precision (fp32 on a CPU host)."""
    from calibration.reference import reference_model
    from simulator.predict import predict

    n = int(np.prod(list(mesh_sizes.values())))
    shards = int(np.prod([mesh_sizes.get(a, 1) for a in BATCH_AXES]))
    return predict(model=reference_model(kind, seq_len), hardware=profile, chips=n,
                   mesh=mesh_sizes, global_batch=global_batch,
                   micro_batch=global_batch // shards, remat="none", precision=precision)


def validate(directory: str | Path, quick: bool = False, hlo: bool = False, log=print) -> dict:
    """Measured vs forecast per case, and the median absolute error; with ``hlo`` each case also
    sets XLA's compiled collectives beside the step graph's (:mod:`calibration.hlo_compare`)."""
    from dataclasses import asdict

    from calibration.cases import precision_of
    from calibration.profile_out import profile_from_rows
    from calibration.raw import measured_rows

    rows = measured_rows(directory, "validate")
    profile = profile_from_rows(rows)[0]
    dtype = rows[0]["dtype"]  # one per run (cases.run_dtype)
    seq, reps = (128, 3) if quick else (256, 5)
    out = []
    for kind, mesh_sizes, gb in (QUICK_CASES if quick else CASES):
        label = f"{kind} " + ",".join(f"{a}={v}" for a, v in mesh_sizes.items())
        v = Validation(label, measure_step(kind, mesh_sizes, gb, seq, reps, dtype),
                       predict_case(kind, mesh_sizes, gb, seq, profile,
                                    precision_of(dtype)).step_time_s)
        log(f"  {label:<34} measured {v.measured_s * 1e3:9.1f} ms  forecast "
            f"{v.forecast_s * 1e3:9.1f} ms  error {100 * v.error:+6.1f}%")
        row = {"case": v.case, "measured_s": v.measured_s, "forecast_s": v.forecast_s,
               "error": v.error}
        if hlo:
            from calibration.hlo_compare import compare_case, format_table

            hlo_rows = compare_case(kind, mesh_sizes, gb, seq)
            log(format_table(hlo_rows))
            row["hlo"] = [asdict(r) for r in hlo_rows]
            row["hlo_mismatches"] = sum(r.status == "mismatch" for r in hlo_rows)
        out.append((v, row))
    med = float(np.median([abs(v.error) for v, _ in out]))
    log(f"  median |error| {100 * med:.1f}% over {len(out)} cases")
    return {"cases": [row for _, row in out], "median_abs_error": med}
