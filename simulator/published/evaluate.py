"""Forecast each case and set it beside the measured step time.

``error = predicted / measured - 1`` (signed: positive means the forecast is slow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from simulator.predict import predict_job
from simulator.published.jobs import Case
from simulator.published.names import base_model_name


@dataclass(frozen=True)
class RowResult:
    id: str
    model: str
    hardware: str
    kind: str  # "dense" | "moe"
    source: str
    chips: int
    measured_step_time_s: float
    predicted_step_time_s: float
    measured_from: str
    notes: tuple[str, ...] = ()
    config: str = ""  # the job's configuration (config_key): rows with one are one configuration
    distance: str = ""  # cross-validated: how far its chip's values travelled (own/architecture/global)
    fold: str = ""  # cross-validated: the group held out with it
    fits_memory: bool = True

    @property
    def error(self) -> float:
        return self.predicted_step_time_s / self.measured_step_time_s - 1.0

    @property
    def group(self) -> str:
        """Model (variants merged) + hardware: the rows a rank correlation is taken within."""
        return f"{base_model_name(self.model)} @ {self.hardware}"

    def as_dict(self) -> dict:
        return {"id": self.id, "model": self.model, "hardware": self.hardware, "kind": self.kind,
                "source": self.source, "chips": self.chips,
                "measured_step_time_s": self.measured_step_time_s,
                "predicted_step_time_s": self.predicted_step_time_s, "error": self.error,
                "measured_from": self.measured_from, "notes": list(self.notes),
                "fits_memory": self.fits_memory,
                **({"distance": self.distance, "fold": self.fold} if self.fold else {})}


def config_key(job) -> str:
    """What a forecast is made from, the row's names and provenance aside: chips, hardware,
    sharding and model shape. Two rows with one key are the same configuration (e.g. one run
    measured in two releases), however their measurements differ."""
    return json.dumps({"chips": job.chips, "hardware": job.hardware.name,
                       "sharding": job.sharding.model_dump(mode="json"),
                       "model": job.model.model_dump(mode="json",
                                                     exclude={"name", "source", "notes"})},
                      sort_keys=True)


def result_of(case: Case, pred) -> RowResult:
    """The case beside its forecast ``pred`` (a StepPrediction); a forecast whose memory does
    not fit says so in the notes (the published run did fit: an assumption is off)."""
    job, notes = case.job, case.notes
    if not pred.memory.fits:
        notes += (f"forecast memory {pred.memory.per_device_bytes / 2**30:.0f} GiB exceeds "
                  f"{pred.memory.capacity_bytes / 2**30:.0f} GiB under remat={job.sharding.remat}",)
    return RowResult(case.id, case.row.text("model"), job.hardware.name,
                     "moe" if job.model.is_moe else "dense", case.row.text("source_id"), job.chips,
                     case.measured.step_time_s, pred.step_time_s, case.measured.how, notes,
                     config_key(job), fits_memory=pred.memory.fits)


def evaluate(cases: list[Case]) -> list[RowResult]:
    """Predict every case (graph path) and pair it with its measurement (:func:`result_of`)."""
    return [result_of(c, predict_job(c.job)) for c in cases]
