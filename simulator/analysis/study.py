"""The sharding study (Du et al. 2024, arXiv 2405.15052): the dense-to-MoE step-time increase
under the 3D data/expert/model layout and its alternatives, per hardware and scale.

Each layout is a family of meshes; the MoE runs the best member of each family (``rank`` over
the family: every mesh, binding to network levels, micro-batch and remat policy; no pipeline
or context parallelism except where the family is made of them). ``data`` in these names means
the batch-sharding ways ``data x fsdp``: FSDP (ZeRO-3) is a memory choice the search may make in
the layouts with a data axis (``3d``, ``no_expert``; not ``expert_in_data``, whose expert axis
takes every batch-sharding way); without it the 29.6B-class pair fits no 80 GB GPU.

- ``3d``: ``data x expert x model``, each > 1 (AXLearn's MoE layout in Du et al. 2024);
- ``no_expert``: ``data x model``; every device holds every expert (sharded by ``model`` only);
- ``expert_in_data``: ``expert x model``, ``data = fsdp = 1``: the expert axis takes every
  batch-sharding way (GShard/Switch style), so its all-to-all spans the whole data axis;
- ``model_only``: ``model x pipeline`` only, the batch is not sharded.

The dense reference runs its best ``data x model`` mesh (the expert axis folded into data).
The increase is ``t(MoE) / t(dense) - 1`` and splits into parts (:mod:`simulator.analysis.decompose`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from meshcast.errors import MeshcastError, NoFeasibleConfig

#: Layout -> (description, mesh axes searched, extra row filter on the candidate table).
LAYOUTS: dict[str, tuple[str, tuple[str, ...], Callable]] = {
    "3d": ("data x expert x model", ("data", "fsdp", "expert", "model"),
           lambda c: (c.axis("data") * c.axis("fsdp") > 1) & (c.axis("expert") > 1)
           & (c.axis("model") > 1)),
    "no_expert": ("no expert axis (data x model)", ("data", "fsdp", "model"), None),
    "expert_in_data": ("expert axis folded into data (expert x model)", ("expert", "model"),
                       lambda c: c.axis("expert") > 1),
    "model_only": ("model-parallel only (model x pipeline)", ("model", "pipeline"), None),
}
DENSE_AXES = ("data", "fsdp", "model")
#: Du et al. 2024's pairs, by scale label.
PAIRS = {"6.4b": ("dense-6.4b", "moe-6.4b"), "12.6b": ("dense-12.6b", "moe-12.6b"),
         "29.6b": ("dense-29.6b", "moe-29.6b")}
THRESHOLD = 0.20  # Du et al. 2024: the 3D layout keeps the increase under 20%


@dataclass
class StudyRow:
    """One (hardware, scale, layout): the MoE's best configuration in that layout against the
    dense reference, or why there is none (``reason``)."""

    hardware: str
    scale: str
    layout: str
    chips: int
    dense_step_s: float | None
    moe_step_s: float | None = None
    mesh: dict = field(default_factory=dict)
    remat: str = ""
    parts_s: dict = field(default_factory=dict)
    reason: str = ""

    @property
    def increase(self) -> float | None:
        if self.moe_step_s is None or self.dense_step_s is None:
            return None
        return self.moe_step_s / self.dense_step_s - 1.0

    @property
    def increase_beyond_ffn(self) -> float | None:
        """The increase less its ``ffn_size`` part: what routing and sharding cost on top of the
        larger activated FFN (all-to-all, dispatch/combine, router, padding, TP, sync, ...)."""
        if self.increase is None:
            return None
        return self.increase - self.parts_s.get("ffn_size", 0.0) / self.dense_step_s

    def as_dict(self) -> dict:
        return {"hardware": self.hardware, "scale": self.scale, "layout": self.layout,
                "chips": self.chips, "dense_step_s": self.dense_step_s,
                "moe_step_s": self.moe_step_s, "increase": self.increase,
                "increase_beyond_ffn": self.increase_beyond_ffn, "mesh": self.mesh,
                "remat": self.remat, "parts_s": self.parts_s, "reason": self.reason}


def best_in(model, hardware, chips: int, axes, keep: Callable | None, finalists: int,
            **batch):
    """The best forecast of ``model`` over meshes on ``axes`` (rows passing ``keep``)."""
    from simulator.search.enumerate import enumerate_candidates
    from simulator.search.rank import rank_table
    from simulator.search.space import make_space

    space = make_space(model, hardware, chips, axes=axes, schedules=("1f1b",), **batch)
    cands = enumerate_candidates(space)
    if keep is not None:
        cands = cands.take(np.asarray(keep(cands), bool))
    if len(cands) == 0:
        raise NoFeasibleConfig(f"layout: no valid mesh of {space.model.name} on {chips} chips",
                               f"no valid mesh of {space.model.name} on {chips} chips")
    return rank_table(cands, "step_time", top=1, finalists=finalists).top[0].prediction


def study_pair(dense: str, moe: str, hardware: str, chips: int, scale: str = "",
               layouts=tuple(LAYOUTS), finalists: int = 2, **batch) -> list[StudyRow]:
    """One row per layout for one (dense, MoE) pair on ``chips`` of ``hardware``."""
    from simulator.analysis.attribution import attribute
    from simulator.analysis.decompose import decompose_predictions

    _check_layouts(layouts)
    try:
        dpred = best_in(dense, hardware, chips, DENSE_AXES, None, finalists, **batch)
    except NoFeasibleConfig as e:  # an outcome of the study; any other error is the caller's
        return [StudyRow(hardware, scale, lay, chips, None, reason=f"dense: {e.short}")
                for lay in layouts]
    rows, dense_att = [], attribute(dpred)
    for lay in layouts:
        _, axes, keep = LAYOUTS[lay]
        row = StudyRow(hardware, scale, lay, chips, dpred.step_time_s)
        try:
            mpred = best_in(moe, hardware, chips, axes, keep, finalists, **batch)
        except NoFeasibleConfig as e:
            row.reason = e.short
        else:
            inc, _ = decompose_predictions(dpred, mpred, dense_att)
            row.moe_step_s, row.parts_s = mpred.step_time_s, inc.parts_s
            row.mesh = {a: v for a, v in mpred.job.mesh.items() if v != 1}
            row.remat = mpred.job.sharding.remat
        rows.append(row)
    return rows


def _check_layouts(layouts) -> None:
    bad = [lay for lay in layouts if lay not in LAYOUTS]
    if bad:
        raise MeshcastError(f"layout: {bad[0]!r} is not one of {', '.join(LAYOUTS)}")


def sharding_study(hardware=("h100-sxm", "tpu-v5p"), scales=tuple(PAIRS), chips: int = 256,
                   layouts=tuple(LAYOUTS), finalists: int = 2, **batch) -> list[StudyRow]:
    """Every (hardware, scale, layout) row of the study; ``batch`` takes ``global_batch``,
    ``global_batch_tokens`` and ``seq_len`` (default: about 4M tokens of 4,096)."""
    hardware = (hardware,) if isinstance(hardware, str) else tuple(hardware)
    scales = (scales,) if isinstance(scales, str) else tuple(scales)
    bad = [s for s in scales if s not in PAIRS]
    if bad:
        raise MeshcastError(f"scale: {bad[0]!r} is not one of {', '.join(PAIRS)}")
    return [row for hw in hardware for s in scales
            for row in study_pair(*PAIRS[s], hw, chips, s, layouts, finalists, **batch)]


def format_study(rows: list[StudyRow]) -> str:
    """The study as a table: one line per row, the increase (and the increase beyond the FFN
    size part) marked against 20%."""
    out = [f"{'hardware':<10}{'chips':>6}{'scale':>7}  {'layout':<15}{'dense s':>9}{'MoE s':>9}"
           f"{'increase':>10}{'<20%':>5}{'beyond FFN':>11}{'<20%':>5}  best MoE configuration"]
    for r in rows:
        dense = f"{r.dense_step_s:.3f}" if r.dense_step_s is not None else "-"
        lead = f"{r.hardware:<10}{r.chips:>6}{r.scale:>7}  {r.layout:<15}{dense:>9}"
        if r.increase is None:
            out.append(f"{lead}{'-':>9}{'-':>10}{'-':>5}{'-':>11}{'-':>5}  {r.reason}")
            continue
        mesh = " ".join(f"{a}={v}" for a, v in r.mesh.items())
        ok, ok2 = ("yes" if x < THRESHOLD else "no" for x in (r.increase, r.increase_beyond_ffn))
        out.append(f"{lead}{r.moe_step_s:>9.3f}{100 * r.increase:>9.1f}%{ok:>5}"
                   f"{100 * r.increase_beyond_ffn:>10.1f}%{ok2:>5}  {mesh}, remat {r.remat}")
    return "\n".join(out)
