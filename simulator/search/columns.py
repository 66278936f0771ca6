"""Run the step graph's own op templates on whole columns of configurations at once.

``simulator.graph.layers`` builds a layer's ops from a :class:`~simulator.graph.dims.Dims`
with plain arithmetic, plus a few structural branches (``if t > 1``, ``min(group, T)``). A
:class:`Column` is a numpy array that answers those branches when every row agrees, so calling
the templates with Column-valued Dims yields the same ops with arrays of FLOPs and bytes, one
entry per configuration. Rows are first split into groups on which every branch agrees
(:func:`structure_key`); a branch that disagrees within a group raises, never guesses.
"""

from __future__ import annotations

import numpy as np

from simulator.graph.dims import Dims


class BranchError(ValueError):
    """A template branched differently within one group of configurations."""


class Column(np.ndarray):
    """An array whose truth value is defined when all its entries agree."""

    def __bool__(self) -> bool:
        a = self.view(np.ndarray)
        if a.all():
            return True
        if not a.any():
            return False
        raise BranchError("a step-graph template branched differently within one group of "
                         "configurations; add the condition to search.columns.structure_key")


def column(x) -> Column:
    return np.asarray(x).view(Column)


def structure_key(model, cols: dict[str, np.ndarray], T: np.ndarray) -> np.ndarray:
    """Integer code of the layer templates' branches per row: tensor parallel (``t > 1``),
    context parallel (``cp > 1``) and, for MoE, ``T < group_size_tokens`` (which side of
    ``min(group, T)`` einsum dispatch takes) and expert parallel (``e > 1``: whether EP comm
    overlap applies). The plan's FSDP and data-parallel ops need no group: they are kept with
    no bytes where a row lacks them (:func:`simulator.graph.plan._where`)."""
    t, cp, e = (cols[a] for a in ("model", "seq", "expert"))
    flags = [t > 1, cp > 1]
    if model.moe is not None:
        flags += [T < model.moe.group_size_tokens, e > 1]
    return sum(f.astype(np.int64) << i for i, f in enumerate(flags))


def dims_columns(space, mesh_cols: dict[str, np.ndarray], micro_batch: np.ndarray) -> Dims:
    """Column-valued Dims for rows with the given mesh sizes and micro-batches (the sharding's
    dtypes and switches as ``Dims.from_job`` takes them)."""
    return Dims(b=column(micro_batch), s=space.seq_len, t=column(mesh_cols["model"]),
                e=column(mesh_cols["expert"]), fs=column(mesh_cols["fsdp"]),
                dp=column(mesh_cols["data"]), cp=column(mesh_cols["seq"]),
                pp=column(mesh_cols["pipeline"]), **Dims.sharding_fields(space.base))
