"""How a published run kept its optimizer state, when the table does not say.

A source's gradient dtype holds for all its rows (:attr:`simulator.published.sources.SourceRules.
grad_dtype`). A few recipes also keep the Adam moments in bf16 instead of fp32, which moves a
run's memory by a third of its optimizer state; the tables never publish it, so the recipes
below, read from the framework's published configs, say it. Each matches on the row's source,
the table it was read from and a phrase of its notes; every other row keeps fp32 moments.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.published.rows import PublishedRow
from simulator.published.sources import SourceRules


@dataclass(frozen=True)
class OptimizerRecipe:
    """A recipe whose optimizer keeps its moments in ``state_dtype``."""

    source_id: str
    table: str  # a phrase of the row's source_table
    notes: str  # a phrase of the row's notes (upper-cased match)
    state_dtype: str
    source: str


RECIPES: tuple[OptimizerRecipe, ...] = (
    # NeMo 24.07 supervised fine-tuning (the "Finetuning" table's SFT rows): the launcher's
    # peft=llama/sft stage, e.g. examples/peft/llama/h100/70b_2node.sh (tp 4, pp 4, fp8).
    OptimizerRecipe(
        "nemo_2407_perf_summary", "Finetuning", "FINE-TUNING SFT", "bf16",
        "NVIDIA/NeMo-Framework-Launcher@24.07 launcher_scripts/conf/peft/llama/sft.yaml: optim "
        "distributed_fused_adam with dtype: bf16 (the optimizer state) and grad_sync_dtype: bf16"),
)


def optimizer_of(row: PublishedRow, rules: SourceRules) -> tuple[dict[str, str], str | None]:
    """``(OptimizerSpec fields, note)`` of a row: its source's gradient dtype, and the moments'
    dtype of the first :data:`RECIPES` entry it matches (the note names that recipe)."""
    fields = {"grad_dtype": rules.grad_dtype}
    notes = row.text("notes").upper()
    for r in RECIPES:
        if (row.text("source_id") == r.source_id and r.table in row.text("source_table")
                and r.notes.upper() in notes):
            fields["state_dtype"] = r.state_dtype
            return fields, f"optimizer moments {r.state_dtype}: recipe {r.source}"
    return fields, None
