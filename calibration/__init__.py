"""The JAX calibration runtime. Only this package imports jax; ``simulator`` never does."""

from calibration.mesh import make_jax_mesh, mesh_axes

__all__ = ["make_jax_mesh", "mesh_axes"]
