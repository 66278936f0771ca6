"""The one frozen pydantic base of every spec and profile record: immutable, and an unknown field
is an error (``extra="forbid"``: a misspelt YAML key fails instead of being dropped), and so is a
NaN or infinite number (``allow_inf_nan=False``: ``.nan``, ``.inf`` or ``1e400`` in a YAML file)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Base of the model and sharding specs (:mod:`simulator.specs`) and of the hardware profile
    schema (:mod:`hardware_profiles.schema`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


__all__ = ["Frozen"]
