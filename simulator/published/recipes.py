"""How a published MoE run dispatched its tokens, when the table does not say.

The tables publish parallel layouts, not the token dispatcher, yet it changes the fabric traffic
of a cross-node expert group by 2x or more (:func:`simulator.cost.collectives.dedup_shares`).
A row says it itself with an optional ``moe_dispatcher`` column (``alltoall`` / ``deepep``; also
``flex``, ``hybridep``) or by naming DeepEP / HybridEP in its notes. Otherwise the recipes below,
read from the frameworks' published performance configs, decide; every other row keeps the
plain all-to-all (``alltoall``).

A recipe matches on the row's source and model (variants such as "(tokendrop)" merged) and, where
its presets differ by hardware, on the hardware profile and the layout the preset runs: a row of
another layout (an older release's) keeps the default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from simulator.published.names import base_model_name
from simulator.published.rows import PublishedRow, RowError

#: Spellings of a dispatcher in a ``moe_dispatcher`` cell.
_CELL = {"alltoall": "alltoall", "all-to-all": "alltoall", "a2a": "alltoall",
         "deepep": "deepep", "hybridep": "deepep", "flex": "deepep"}


@dataclass(frozen=True)
class Recipe:
    """A preset that sets Megatron's flex dispatcher (DeepEP / HybridEP)."""

    source_id: str
    model: str  # base model name, as names.base_model_name writes it
    source: str
    hardware: str | None = None  # profile name; None: every hardware
    layout: dict[str, int] = field(default_factory=dict)  # CSV column -> the preset's value


_MB = ("NVIDIA-NeMo/Megatron-Bridge scripts/performance/configs/{}_workload_base_configs.py "
       "(moe_flex_dispatcher_backend)")

RECIPES: tuple[Recipe, ...] = (
    # Every DeepSeek-V3 pretraining preset (H100, B200, GB200, B300, GB300; V1 and V2) sets
    # moe_flex_dispatcher_backend to "hybridep" or "deepep".
    Recipe("megatron_bridge_perf_summary", "deepseekv3", _MB.format("deepseek/deepseek")),
    # Qwen3-30B-A3B presets set "hybridep" too: H100 at EP 16 over two nodes, B200 at EP 8 with
    # micro-batch 4 (the PP 2 / VPP 12-24 layouts of older releases are in no current preset).
    Recipe("megatron_bridge_perf_summary", "qwen330ba3b", _MB.format("qwen/qwen3"),
           "h100-sxm", {"tp": 1, "pp": 1, "ep": 16}),
    Recipe("megatron_bridge_perf_summary", "qwen330ba3b", _MB.format("qwen/qwen3"),
           "b200", {"tp": 1, "pp": 1, "ep": 8, "micro_batch": 4}),
)


def dispatcher_of(row: PublishedRow, profile_name: str) -> tuple[str, str | None]:
    """``(dispatcher, note)`` for an MoE row: its own cell or notes first, then :data:`RECIPES`;
    the note says where a non-default choice came from."""
    cell = row.text("moe_dispatcher").lower()
    if cell:
        if cell not in _CELL:
            raise RowError(f"line {row.line}: moe_dispatcher: unknown {cell!r}; use one of "
                           f"{sorted(set(_CELL))}")
        return _CELL[cell], None
    text = " ".join(row.text(c) for c in ("notes", "moe_layer_notes")).lower()
    if re.search(r"\b(deepep|hybridep|hybrid-ep|flex dispatcher)\b", text):
        return "deepep", "deduplicated dispatch (DeepEP/HybridEP, from the row's notes)"
    base = base_model_name(row.text("model"))
    for r in RECIPES:
        if (r.source_id == row.text("source_id") and r.model == base
                and r.hardware in (None, profile_name)
                and all(row.int(col, default=1) == v for col, v in r.layout.items())):
            return "deepep", f"deduplicated dispatch (DeepEP/HybridEP): recipe {r.source}"
    return "alltoall", None
