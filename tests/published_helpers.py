"""Rows of the project's copy of published_runs.csv, and small CSVs built from them."""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

from simulator.published.rows import PublishedRow, read_rows

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "published_runs.csv"


@lru_cache(maxsize=1)
def all_rows() -> tuple[PublishedRow, ...]:
    """The copy's rows, read once (rows are frozen; callers copy ``raw`` to change a cell)."""
    return tuple(read_rows(DATA))


def row_at(line: int) -> PublishedRow:
    """The row on ``line`` of the copy (the header is line 1)."""
    return next(r for r in all_rows() if r.line == line)


def write_csv(path: Path, rows: list[dict]) -> Path:
    """A CSV with the copy's header and ``rows`` (dicts of raw cells)."""
    header = list(all_rows()[0].raw)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in header})
    path.write_text(buf.getvalue())
    return path
