"""meshcast's cost model: forecast one training step of a sharded dense or MoE transformer."""

from meshcast.errors import MeshcastError
from simulator.predict import StepPrediction, predict, predict_job
from simulator.specs.job import Job, make_job
from simulator.specs.model import ModelSpec, MoESpec
from simulator.specs.sharding import OptimizerSpec, ShardingSpec
from simulator.specs.zoo import list_models, load_model

__all__ = [
    "Job",
    "MeshcastError",
    "ModelSpec",
    "MoESpec",
    "OptimizerSpec",
    "ShardingSpec",
    "StepPrediction",
    "list_models",
    "load_model",
    "make_job",
    "predict",
    "predict_job",
]
