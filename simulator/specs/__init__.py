"""Frozen input specs: model, sharding, job."""
