"""Read a published-runs CSV (the columns of ``../shared/data/published_runs.csv``) into rows.

A missing file, a missing column or a file without rows raises :class:`MeshcastError`. A bad
value in one row does not stop the others: the row's accessors raise :class:`RowError`, which
the mapping turns into a skipped row naming the line, the column, the value and the fix.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from meshcast.errors import MeshcastError

#: Columns the mapping reads; any other column may be present and is kept in ``raw``.
REQUIRED = (
    "source_id", "source_table", "model", "n_layers", "d_model", "n_heads", "n_kv_heads",
    "head_dim", "ffn_hidden", "vocab", "seq_len", "is_moe", "n_experts", "top_k",
    "capacity_factor", "expert_ffn_hidden", "n_shared_experts", "moe_layer_notes", "precision",
    "hardware", "n_accel", "tp", "pp", "dp", "cp", "ep", "fsdp_zero", "vpp", "micro_batch",
    "global_batch_seqs", "recompute", "step_time_s", "tokens_per_s_per_accel", "tflops_per_accel",
    "mfu_pct", "hfu_pct", "notes",
)
#: Cells that mean "not published".
BLANK = {"", "n/a", "na", "-", "none", "not stated"}
#: The range of a numeric cell: a value outside it (1e-320, 1e400) is a typo, not a measurement.
SMALLEST = 1e-12
LARGEST = 1e18
#: The largest whole-number cell (layer counts, widths, chips, batch sizes): 2^32.
LARGEST_INT = 1 << 32
#: Chips (``n_accel``) and each parallel degree: as ``meshcast predict --chips`` allows.
LARGEST_CHIPS = 1 << 24
_CHIP_COLUMNS = ("n_accel", "tp", "pp", "dp", "cp", "ep", "vpp")


class RowError(ValueError):
    """One cell of one row is unusable; the message names line, column, value and fix."""


@dataclass(frozen=True)
class PublishedRow:
    """One CSV row: ``line`` is its line in the file (the header is line 1)."""

    line: int
    raw: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.raw['source_id']}:{self.line}"

    def text(self, col: str) -> str:
        return (self.raw.get(col) or "").strip()

    def is_blank(self, col: str) -> bool:
        return self.text(col).lower() in BLANK

    def _bad(self, col: str, want: str) -> RowError:
        return RowError(f"line {self.line}: {col}: {want} (got {self.text(col)!r}); fix the cell "
                        f"or leave it empty if it was not published")

    def num(self, col: str, required: bool = False) -> float | None:
        """The cell as a positive number, None when blank (an error if ``required``)."""
        if self.is_blank(col):
            if required:
                raise RowError(f"line {self.line}: {col}: needed but empty; give it from the "
                               "source or the model's public config")
            return None
        try:
            v = float(self.text(col).replace(",", ""))
        except ValueError:
            raise self._bad(col, "not a number") from None
        if math.isnan(v):
            raise self._bad(col, "not a number")
        if not v > 0:
            raise self._bad(col, "must be positive")
        if math.isinf(v) or v > LARGEST:
            raise self._bad(col, f"must be finite and at most {LARGEST:g}")
        if v < SMALLEST:
            raise self._bad(col, f"must be at least {SMALLEST:g}")
        return v

    def int(self, col: str, required: bool = False, default: int | None = None) -> int | None:
        """The cell as a positive integer (``default`` when blank and not required)."""
        v = self.num(col, required)
        if v is None:
            return default
        if v != int(v):
            raise self._bad(col, "must be a whole number")
        limit = LARGEST_CHIPS if col in _CHIP_COLUMNS else LARGEST_INT
        if v > limit:
            raise self._bad(col, f"must be at most {limit}")
        if col == "vpp" and v > 1:
            self._check_stages(int(v))
        return int(v)

    def _check_stages(self, vpp: int) -> None:
        """As ``predict`` requires: pipeline x virtual stages no more than the layers (each
        virtual stage holds a layer at least), so a ``vpp`` of 100000 is refused, not padded."""
        layers = self.int("n_layers")
        pp = self.int("pp") or 1
        if layers is not None and pp * vpp > layers:
            raise RowError(f"line {self.line}: vpp: {pp} pipeline x {vpp} virtual stages exceed "
                           f"n_layers={layers} (got {self.text('vpp')!r}); each virtual stage "
                           "needs a layer at least: fix the cell or leave it empty")

    def count(self, col: str) -> int:
        """The cell as a whole number >= 0 (0 when blank)."""
        if self.is_blank(col) or self.text(col) == "0":
            return 0
        return self.int(col)

    def yes(self, col: str) -> bool:
        t = self.text(col).lower()
        if t in ("yes", "true", "1", "y"):
            return True
        if t in ("no", "false", "0", "n", ""):
            return False
        raise self._bad(col, "must be yes or no")


def read_rows(path: str | Path) -> list[PublishedRow]:
    """Every data row of ``path``; the header must hold :data:`REQUIRED`."""
    from meshcast.spec_file import read_text_file

    path = Path(path)
    try:
        missing_file = not path.exists()
    except OSError:
        missing_file = False  # a name too long, ...: read_text_file says so
    if missing_file:
        raise MeshcastError(f"published: no file at {path}; give a CSV with the columns of "
                            "published_runs.csv")
    text = read_text_file(path, "published", "CSV", max_bytes=256 << 20)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise MeshcastError(f"published: {path.name} lacks column(s) {', '.join(missing)}; "
                                "it needs the columns of published_runs.csv (see its README)")
        rows = [PublishedRow(reader.line_num, dict(r)) for r in reader]
    except csv.Error as e:
        raise MeshcastError(f"published: {path.name} is not a readable CSV: {e}") from None
    if not rows:
        raise MeshcastError(f"published: {path.name} has a header but no rows")
    return rows
