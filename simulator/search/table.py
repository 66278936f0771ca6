"""The candidate table: one row per configuration, as numpy columns (no per-row objects)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from simulator.search.placements import Placement
from simulator.search.space import REMATS, SCHEDULES, SearchSpace
from simulator.specs.job import microbatches_per_step
from simulator.specs.sharding import AXES, BATCH_AXES, ShardingSpec

AXIS = {a: i for i, a in enumerate(AXES)}
#: Column names of a row's identity, in the order ties are broken when ranking.
KEY_COLUMNS = ("data", "fsdp", "expert", "model", "pipeline", "seq", "placement", "micro_batch",
               "remat", "schedule", "virtual")


@dataclass
class Candidates:
    """Configurations of one SearchSpace. ``mesh[:, AXIS[a]]`` is axis ``a``'s size;
    ``placement`` indexes ``placements``; ``remat``/``schedule`` index REMATS/SCHEDULES;
    ``virtual`` is the virtual stages per pipeline rank."""

    space: SearchSpace
    mesh: np.ndarray
    placement: np.ndarray
    micro_batch: np.ndarray
    remat: np.ndarray
    schedule: np.ndarray
    virtual: np.ndarray
    placements: list[Placement]
    invalid: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.placement)

    def take(self, idx) -> Candidates:
        """The rows ``idx`` (an index array or boolean mask), same placements and counts."""
        return replace(self, mesh=self.mesh[idx], placement=self.placement[idx],
                       micro_batch=self.micro_batch[idx], remat=self.remat[idx],
                       schedule=self.schedule[idx], virtual=self.virtual[idx])

    def axis(self, name: str) -> np.ndarray:
        return self.mesh[:, AXIS[name]]

    @property
    def batch_shards(self) -> np.ndarray:
        return np.prod(self.mesh[:, [AXIS[a] for a in BATCH_AXES]], axis=1)

    @property
    def microbatches(self) -> np.ndarray:
        """Micro-batches per step (:func:`~simulator.specs.job.microbatches_per_step`)."""
        return microbatches_per_step(self.space.global_batch, self.micro_batch, self.batch_shards)

    def key_columns(self) -> list[np.ndarray]:
        """The identity columns in KEY_COLUMNS order (for deterministic tie-breaking)."""
        return [*(self.mesh[:, i] for i in range(len(AXES))), self.placement, self.micro_batch,
                self.remat, self.schedule, self.virtual]

    def sharding(self, i: int) -> ShardingSpec:
        """Row ``i`` as the ShardingSpec that ``predict`` takes (same placement via axis_order)."""
        from simulator.specs.sharding import make_sharding

        mesh = {a: int(v) for a, v in zip(AXES, self.mesh[i]) if v != 1} or {"data": 1}
        fields = dict(self.space.base.model_dump(), mesh=mesh, bindings={},
                      axis_order=list(self.placements[self.placement[i]].order),
                      micro_batch=int(self.micro_batch[i]), global_batch=self.space.global_batch,
                      global_batch_tokens=None, seq_len=self.space.seq_len,
                      remat=REMATS[self.remat[i]], pipeline_schedule=SCHEDULES[self.schedule[i]],
                      virtual_stages=int(self.virtual[i]))
        return make_sharding(**fields)

    def row(self, i: int) -> dict:
        """Row ``i`` in words: mesh (axes > 1), placement label, micro-batch, remat, schedule."""
        pp = int(self.mesh[i, AXIS["pipeline"]])
        sched = SCHEDULES[self.schedule[i]] if pp > 1 else "-"
        return {"mesh": {a: int(v) for a, v in zip(AXES, self.mesh[i]) if v != 1} or {"data": 1},
                "placement": self.placements[self.placement[i]].label,
                "micro_batch": int(self.micro_batch[i]),
                "microbatches": int(self.microbatches[i]), "remat": REMATS[self.remat[i]],
                "schedule": sched, "virtual_stages": int(self.virtual[i])}
