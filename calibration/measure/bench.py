"""JAX micro-benchmarks: build each case on a real mesh, compile outside the timed region, warm
up, then time every repetition to ``block_until_ready``.

Matmul and attention cases time forward plus backward (:func:`_train_triple`). Compute cases run
on all devices at once through ``jax.shard_map`` (on a CPU host the virtual
devices share cores, and a lone device runs several times faster than inside a step).
Collectives run over one named axis of the job's real mesh.
"""

from __future__ import annotations

import time

import numpy as np

from calibration.cases import BenchCase
from calibration.context import CONTEXT_KINDS
from calibration.measure.in_context import jax_case
from calibration.raw import BUDGET_S, MIN_REPS

WARMUP = 2


def clock():
    """The timer: wall clock, or this process's CPU seconds divided by the cores it may use
    when ``MESHCAST_CLOCK=process`` (a diagnostic for a CPU host shared with other work: other
    processes' load then barely moves the figures; calibrate and validate with the same clock)."""
    import os

    if os.environ.get("MESHCAST_CLOCK") == "process":
        return time.process_time() / len(os.sched_getaffinity(0))
    return time.perf_counter()


def _spec_all(mesh):
    from jax.sharding import PartitionSpec as P

    return P(tuple(mesh.axis_names))


def _place(mesh, arr):
    import jax
    from jax.sharding import NamedSharding

    return jax.device_put(arr, NamedSharding(mesh, _spec_all(mesh)))


def _dtype(name: str):
    import jax.numpy as jnp

    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


def build(case: BenchCase, mesh):
    """(compiled function, args) for ``case`` on ``mesh``; inputs are sharded over every axis."""
    import jax
    import jax.numpy as jnp

    n_dev = mesh.devices.size
    dt = _dtype(case.dtype)
    itemsize = jnp.dtype(dt).itemsize
    spec = _spec_all(mesh)
    if case.kind == "launch":
        fn = lambda x: x + 1  # noqa: E731 - the do-nothing baseline
        args = (_place(mesh, jnp.zeros((n_dev * 8,), dt)),)
        in_specs, out_specs = (spec,), spec
    elif case.kind == "matmul":
        a = _place(mesh, jnp.ones((n_dev * case.m, case.k), dt))
        b = _place(mesh, jnp.ones((n_dev * case.k, case.n), dt))  # a weight per device
        fn = _train_triple(lambda a, b: a @ b)
        args, in_specs, out_specs = (a, b), (spec, spec), (spec, spec, spec)
    elif case.kind == "attention":
        from calibration.measure.models import attention_core

        q = _place(mesh, jnp.ones((n_dev * case.m, case.k, case.n, case.hd), dt) * 0.01)
        fn = _train_triple(lambda q, kv: attention_core(q, kv, kv))
        args, in_specs, out_specs = (q, q), (spec, spec), (spec, spec, spec)
    elif case.kind == "gather":
        idx = _place(mesh, jnp.arange(n_dev * case.m, dtype=jnp.int32) * 7 % case.n)
        table = _place(mesh, jnp.ones((n_dev * case.n, case.k), dt))
        fn = _lookup_fwd_bwd
        args, in_specs, out_specs = (idx, table), (spec, spec), (spec, spec)
    elif case.kind in CONTEXT_KINDS:
        fn, local = jax_case(case.kind, case.m, case.k, dt)
        args = tuple(_place(mesh, jnp.tile(a, (n_dev,) + (1,) * (a.ndim - 1))) for a in local)
        in_specs, out_specs = (spec,) * len(args), spec
    elif case.kind == "elementwise":
        elems = max(1, int(case.nbytes // 2 // itemsize))  # nbytes = read + write
        fn = lambda x: x * 1.0001 + 1.0  # noqa: E731
        args, in_specs, out_specs = (_place(mesh, jnp.ones((n_dev * elems,), dt)),), (spec,), spec
    else:
        fn, elems = _collective_fn(case, itemsize)
        args, in_specs, out_specs = (_place(mesh, jnp.ones((n_dev * elems,), dt)),), (spec,), spec
    sm = jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    return jax.jit(sm).lower(*args).compile(), args


def _lookup_fwd_bwd(idx, table):
    """``table[idx]`` and the table's gradient (a scatter-add of the rows back into it)."""
    import jax

    y, vjp = jax.vjp(lambda t: t[idx], table)
    return y, vjp(y)[0]


def _train_triple(f):
    """``f``'s forward and backward as a train step runs them: output and both input gradients
    (the output's cotangent is the output itself)."""
    import jax

    def fwd_bwd(x, w):
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(y))

    return fwd_bwd


def _collective_fn(case: BenchCase, itemsize: int):
    """The collective and its per-device input length, so bytes match simulator conventions.
    An axis ``data+model`` is the group over both mesh axes (outermost first: ``model`` varies
    fastest in the group, as the simulator's hierarchical parts are innermost first)."""
    from jax import lax

    ax, f = (tuple(case.axis.split("+")) if "+" in case.axis else case.axis), case.group_size
    per_dev = int(case.nbytes // itemsize)
    if case.op == "all_gather":  # nbytes is the gathered output
        return (lambda x: lax.all_gather(x, ax, tiled=True)), per_dev // f
    if case.op == "reduce_scatter":
        return (lambda x: lax.psum_scatter(x, ax, tiled=True)), per_dev
    if case.op == "all_reduce":
        return (lambda x: lax.psum(x, ax)), per_dev
    if case.op == "all_to_all":
        return (lambda x: lax.all_to_all(x, ax, 0, 0, tiled=True)), per_dev
    if case.op == "permute":
        perm = [(i, (i + 1) % f) for i in range(f)]
        return (lambda x: lax.ppermute(x, ax, perm)), per_dev
    raise ValueError(f"unknown collective {case.op!r}")


def time_case(case: BenchCase, mesh, reps: int, budget_s: float = BUDGET_S) -> list[float]:
    """Seconds of each timed repetition (compile and warm-up excluded): ``reps`` of them, or
    fewer (never under :data:`MIN_REPS`) once the timed ones add up to ``budget_s``, so a
    whole-layer case costs seconds, not minutes."""
    import jax

    compiled, args = build(case, mesh)
    for _ in range(WARMUP):
        jax.block_until_ready(compiled(*args))
    out: list[float] = []
    while len(out) < reps and (len(out) < MIN_REPS or sum(out) < budget_s):
        t0 = clock()
        jax.block_until_ready(compiled(*args))
        out.append(clock() - t0)
    return out


def median(xs: list[float]) -> float:
    return float(np.median(xs))
