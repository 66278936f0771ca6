"""Raw measurements: one timed repetition a row, kept apart from anything fitted.

The file is ``<dir>/raw.csv``. After each benchmark case the whole file is rewritten to a temp
file and renamed into place, so an interrupted run never leaves a half-written file: a truncated
or malformed ``raw.csv`` is genuinely corrupt and is reported, line and field named.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from pathlib import Path

from meshcast.errors import MeshcastError

COLUMNS = [
    "case_id", "kind", "op", "axis", "group_size", "dtype", "m", "k", "n", "hd", "nbytes", "flops",
    "rep", "seconds", "backend", "device_kind", "n_devices", "n_hosts", "jax_version",
    "jaxlib_version", "xla_flags", "host", "date",
]
#: the format before attention cases (no ``hd``): still read, ``hd`` taken as 0
LEGACY_COLUMNS = [c for c in COLUMNS if c != "hd"]
NUMERIC = {"group_size": int, "m": int, "k": int, "n": int, "hd": int, "nbytes": float,
           "flops": float,
           "rep": int, "seconds": float, "n_devices": int, "n_hosts": int}
RAW_NAME = "raw.csv"


def raw_path(directory: str | Path) -> Path:
    return Path(directory) / RAW_NAME


def measured_rows(directory: str | Path, command: str) -> list[dict]:
    """:func:`read_raw_rows`, or a MeshcastError for ``command`` when there are none."""
    rows = read_raw_rows(directory)
    if not rows:
        raise MeshcastError(f"{command}: no measurements in {raw_path(directory)}; run meshcast "
                            "calibrate --out DIR first")
    return rows


def read_raw_rows(directory: str | Path) -> list[dict]:
    """All rows, typed; a corrupt file raises MeshcastError naming the line and field."""
    path = raw_path(directory)
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        raise MeshcastError(f"calibration: {path} is truncated (no newline at the end); "
                            "re-run without --resume into a new --out directory")
    reader = csv.DictReader(io.StringIO(text))
    legacy = reader.fieldnames == LEGACY_COLUMNS
    if reader.fieldnames != COLUMNS and not legacy:
        raise MeshcastError(f"calibration: {path} header {reader.fieldnames} is not the raw "
                            f"format {COLUMNS}")
    rows = []
    for lineno, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise MeshcastError(f"calibration: {path} line {lineno} has the wrong number of fields")
        if legacy:
            row["hd"] = "0"
        for field, cast in NUMERIC.items():
            try:
                row[field] = cast(row[field])
            except ValueError:
                raise MeshcastError(f"calibration: {path} line {lineno} field {field}: "
                                    f"{row[field]!r} is not a number") from None
        if row["seconds"] <= 0:
            raise MeshcastError(f"calibration: {path} line {lineno} field seconds: "
                                f"{row['seconds']} must be positive")
        rows.append(row)
    return rows


def write_raw_rows(directory: str | Path, rows: list[dict]) -> None:
    """Write every row atomically: temp file, fsync, rename."""
    path = raw_path(directory)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def rows_hash(rows: list[dict]) -> str:
    """sha256 of the rows as written, recorded by whatever is fitted from them."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writerows(rows)
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()
