"""The reference train step of one validation case, run for real in jax and forecast by meshcast.

A case is (model kind, mesh sizes, global batch, sequence length): the reference model
(:func:`calibration.reference.reference_model`), one micro-batch per batch shard, no remat.
"""

from __future__ import annotations

import numpy as np

from simulator.specs.sharding import BATCH_AXES, ShardingSpec


def reference_step(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int,
                   dtype: str = "float32"):
    """The jitted reference train step of one case and its arguments ``(params, opt, tokens)``,
    on the first ``prod(mesh)`` devices, with ``dtype`` weights and activations."""
    import math

    import jax

    from calibration.measure.mesh import make_jax_mesh
    from calibration.measure.models import batch, init_opt, init_params, make_train_step
    from calibration.reference import reference_model

    m = reference_model(kind, seq_len)
    mesh = make_jax_mesh(ShardingSpec(mesh=mesh_sizes),
                         jax.devices()[:math.prod(mesh_sizes.values())])
    params = init_params(m, jax.random.PRNGKey(0), mesh, jax.numpy.dtype(dtype))
    return make_train_step(m, mesh), (params, init_opt(params),
                                      batch(m, global_batch, mesh, jax.random.PRNGKey(1))), mesh


def measure_step(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int, reps: int,
                 dtype: str = "float32") -> float:
    """Median seconds of the real sharded train step (compile and 2 warm-up steps excluded)."""
    from calibration.measure.bench import clock

    step, (params, opt, tokens), _ = reference_step(kind, mesh_sizes, global_batch, seq_len, dtype)
    times = []
    for i in range(2 + reps):
        t0 = clock()
        params, opt, loss = step(params, opt, tokens)
        loss.block_until_ready()
        if i >= 2:
            times.append(clock() - t0)
    return float(np.median(times))


def case_job(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int,
             precision: str = "fp32"):
    """A case's job shapes as the reference step runs it (a
    :class:`calibration.reference.ShapeJob`: no hardware): one micro-batch per batch shard, no
    remat, on the mesh's devices, in the run's precision (fp32 on a CPU host)."""
    from calibration.reference import ShapeJob, reference_model
    from simulator.specs.sharding import make_sharding

    n = int(np.prod(list(mesh_sizes.values())))
    shards = int(np.prod([mesh_sizes.get(a, 1) for a in BATCH_AXES]))
    sharding = make_sharding(mesh=mesh_sizes, global_batch=global_batch,
                             micro_batch=global_batch // shards, remat="none", precision=precision)
    return ShapeJob(reference_model(kind, seq_len), sharding, n)


def predict_case(kind: str, mesh_sizes: dict, global_batch: int, seq_len: int, profile,
                 precision: str = "fp32"):
    """meshcast's forecast of a case (:func:`case_job`) on ``profile``."""
    from simulator.predict import predict_job
    from simulator.specs.job import make_job

    c = case_job(kind, mesh_sizes, global_batch, seq_len, precision)
    return predict_job(make_job(c.model, c.sharding, profile, c.chips))
