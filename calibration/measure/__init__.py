"""The jax side of calibration: time the cases, run the reference train steps, validate.

The only package that imports jax (``models`` at import time, the others inside the functions
that run it, after :func:`calibration.measure.run.configure_backend` has set the backend)."""
