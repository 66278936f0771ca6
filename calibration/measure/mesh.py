"""Build the real ``jax.sharding.Mesh`` from the same sharding the simulator reads (design lesson 6).

Axis order follows the job's placement order reversed (outermost first), so that the innermost
(fastest-network) axis varies fastest over ``jax.devices()``, as meshcast's topology assumes.
"""

from __future__ import annotations

import math

from simulator.specs.job import resolve_mesh
from simulator.specs.sharding import DEFAULT_AXIS_ORDER, ShardingSpec


def mesh_axes(sharding: ShardingSpec, n_devices: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(axis names, sizes) outermost first, for ``jax.make_mesh``; every named axis is kept,
    size-1 axes included, so shardings can always name them."""
    sizes = resolve_mesh(sharding.mesh, n_devices)
    order = list(reversed(sharding.axis_order or DEFAULT_AXIS_ORDER))
    return tuple(order), tuple(sizes[a] for a in order)


def make_jax_mesh(sharding: ShardingSpec, devices=None):
    """A ``jax.sharding.Mesh`` over ``devices`` (default: all) for ``sharding``."""
    import jax
    import numpy as np

    devices = list(devices if devices is not None else jax.devices())
    names, shape = mesh_axes(sharding, len(devices))
    assert math.prod(shape) == len(devices)
    return jax.sharding.Mesh(np.asarray(devices).reshape(shape), names)
