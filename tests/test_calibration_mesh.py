"""The jax Mesh is built from the simulator's own ShardingSpec, on 8 virtual CPU devices."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from calibration.measure.mesh import mesh_axes
from simulator.specs.sharding import ShardingSpec


def test_mesh_axes_resolve_the_rest():
    names, shape = mesh_axes(ShardingSpec(mesh={"data": -1, "expert": 2, "model": 2}), 8)
    assert dict(zip(names, shape)) == {"pipeline": 1, "data": 2, "fsdp": 1, "expert": 2,
                                       "seq": 1, "model": 2}


def test_make_jax_mesh_on_virtual_cpu_devices():
    code = textwrap.dedent("""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
        os.environ["JAX_PLATFORMS"] = "cpu"
        import jax
        from calibration.measure.mesh import make_jax_mesh
        from simulator.specs.sharding import ShardingSpec
        m = make_jax_mesh(ShardingSpec(mesh={"data": 2, "expert": 2, "model": 2}))
        print(len(jax.devices()), dict(m.shape))
        assert m.devices.shape == (1, 2, 1, 2, 1, 2)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("8 ")
    assert "'model': 2" in out.stdout and "'expert': 2" in out.stdout
