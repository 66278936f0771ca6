"""Raw measurements: one timed repetition a row, kept apart from anything fitted.

The file is ``<dir>/raw.csv``. After each benchmark case the whole file is rewritten to a temp
file (named per process) and renamed into place, so an interrupted run never leaves a
half-written file. A file cut short anyway (copied mid-write, written by another tool) is still
recognised: a last line without its newline, or a last case with fewer repetitions than it
needs (:func:`case_blocks`), is an incomplete last case, which ``meshcast calibrate --resume``
drops and measures again and ``meshcast fit`` refuses. Every other damage (a value that is not a
finite number, a negative size, an unknown kind or collective) rejects the whole file, line and
field named: the rows are machine-written, so such a value means the file is not what the run
wrote, and dropping rows silently would change the fit without anyone noticing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from pathlib import Path

from meshcast.errors import MeshcastError

COLUMNS = [
    "case_id", "kind", "op", "axis", "group_size", "dtype", "m", "k", "n", "hd", "nbytes", "flops",
    "levels", "hosts",
    "rep", "seconds", "backend", "device_kind", "n_devices", "n_hosts", "jax_version",
    "jaxlib_version", "xla_flags", "host", "date",
]
#: A collective's network level(s) (``host``, ``cross_host``, ``host+cross_host``:
#: :mod:`calibration.levels`; ``""`` not recorded) and the hosts one of its groups spans; for other
#: kinds ``""`` and 1. Rows without them (files from before multi-host runs) read as these.
LEVEL_DEFAULTS = {"levels": "", "hosts": 1}
#: the format before multi-host runs (no ``levels``, ``hosts``): still read, as one host
SINGLE_HOST_COLUMNS = [c for c in COLUMNS if c not in LEVEL_DEFAULTS]
#: the format before attention cases (no ``hd``): still read, ``hd`` taken as 0
LEGACY_COLUMNS = [c for c in SINGLE_HOST_COLUMNS if c != "hd"]
NUMERIC = {"group_size": int, "m": int, "k": int, "n": int, "hd": int, "nbytes": float,
           "flops": float, "hosts": int,
           "rep": int, "seconds": float, "n_devices": int, "n_hosts": int}
RAW_NAME = "raw.csv"
#: smallest value each numeric field may take (sizes are never negative, a time is positive)
MINIMUM = {"group_size": 1, "m": 0, "k": 0, "n": 0, "hd": 0, "nbytes": 0.0, "flops": 0.0,
           "hosts": 1, "rep": 0, "n_devices": 1, "n_hosts": 1}
#: largest value any numeric field may take: no case moves a petabyte, runs a peta-FLOP GEMM or
#: lasts 30 years; beyond it the fit's arithmetic overflows (a 1e300-byte message)
MAXIMUM = 1e15
#: the values of ``levels`` (:mod:`calibration.levels`)
LEVELS = ("", "host", "cross_host", "host+cross_host")
KINDS = ("launch", "matmul", "attention", "elementwise", "gather", "block", "head", "collective")
#: repetitions per case (``calibrate --quick`` or not), and the fewest once a case has spent its
#: time budget (:func:`calibration.measure.bench.time_case`)
REPS_QUICK, REPS_FULL, MIN_REPS, BUDGET_S = 9, 20, 5, 4.0


def raw_path(directory: str | Path) -> Path:
    return Path(directory) / RAW_NAME


def read_raw_rows(directory: str | Path) -> list[dict]:
    """All rows, typed; a corrupt file raises MeshcastError naming the line and field (a last
    line cut short too: it names the ``--resume`` command that measures that case again)."""
    rows, cut = read_raw_file(directory)
    if cut:
        raise MeshcastError(f"calibration: {raw_path(directory)} line {len(rows) + 2} is cut "
                            "short (an interrupted write); `meshcast calibrate ... --resume` "
                            "measures that case again (`meshcast fit` names the command)")
    return rows


def read_raw_file(directory: str | Path) -> tuple[list[dict], bool]:
    """(every whole row, typed and checked; whether a last line without its newline was left
    out). Any other damage raises MeshcastError naming the file, line and field."""
    path = raw_path(directory)
    if not path.exists():
        return [], False
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MeshcastError(f"calibration: {path} is not UTF-8 text (byte {e.start}); it is not "
                            "a raw file meshcast wrote") from None
    except OSError as e:
        raise MeshcastError(f"calibration: cannot read {path}: {e.strerror}") from None
    cut = bool(text) and not text.endswith("\n")
    if cut:
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as e:
        raise MeshcastError(f"calibration: {path} line 1: {e}") from None
    legacy = fieldnames == LEGACY_COLUMNS
    single_host = legacy or fieldnames == SINGLE_HOST_COLUMNS
    if fieldnames != COLUMNS and not single_host:
        raise MeshcastError(f"calibration: {path} header {fieldnames} is not the raw "
                            f"format {COLUMNS}")
    rows = []
    lineno = 1
    try:
        for lineno, row in enumerate(reader, start=2):
            if legacy:
                row["hd"] = "0"
            if single_host:
                row.update((k, str(v)) for k, v in LEVEL_DEFAULTS.items())
            rows.append(_check_row(path, lineno, row))
    except csv.Error as e:
        raise MeshcastError(f"calibration: {path} line {lineno + 1}: {e}") from None
    return rows, cut


def _check_row(path: Path, lineno: int, row: dict) -> dict:
    where = f"calibration: {path} line {lineno}"
    if None in row or any(v is None for v in row.values()):
        raise MeshcastError(f"{where} has the wrong number of fields")
    for field, cast in NUMERIC.items():
        try:
            value = cast(row[field])
        except (ValueError, OverflowError):
            raise MeshcastError(f"{where} field {field}: {row[field]!r} is not a number") from None
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise MeshcastError(f"{where} field {field}: {row[field]!r} is not a finite number")
        if abs(value) > MAXIMUM:
            raise MeshcastError(f"{where} field {field}: {row[field]} is larger than "
                                f"{MAXIMUM:g}, which no calibration case reaches")
        if field == "seconds" and value <= 0:
            raise MeshcastError(f"{where} field seconds: {row[field]} must be positive")
        if field in MINIMUM and value < MINIMUM[field]:
            raise MeshcastError(f"{where} field {field}: {row[field]} must be at least "
                                f"{MINIMUM[field]}")
        row[field] = value
    if not row["case_id"]:
        raise MeshcastError(f"{where} field case_id: empty")
    if row["levels"] not in LEVELS:
        raise MeshcastError(f"{where} field levels: {row['levels']!r} is not one of "
                            f"{', '.join(repr(x) for x in LEVELS)}")
    return row


def check_kinds(directory: str | Path, rows: list[dict]) -> None:
    """Every row's kind is one the fit knows, and a collective's op one the simulator prices
    (else a MeshcastError naming the line and field; what ``fit`` and ``--resume`` read)."""
    from simulator.cost.collectives import Collective

    ops = [c.value for c in Collective]
    for i, row in enumerate(rows):
        where = f"calibration: {raw_path(directory)} line {i + 2}"
        if row["kind"] not in KINDS:
            raise MeshcastError(f"{where} field kind: {row['kind']!r} is not one of "
                                f"{', '.join(KINDS)}")
        if row["kind"] == "collective":
            if row["op"] not in ops:
                raise MeshcastError(f"{where} field op: {row['op']!r} is not one of "
                                    f"{', '.join(ops)}")
            if not row["axis"]:
                raise MeshcastError(f"{where} field axis: a collective row names its mesh axis")


def case_blocks(directory: str | Path, rows: list[dict]) -> list[tuple[str, int, int]]:
    """(case_id, first row index, row count) of each case, in file order. A case's rows are one
    run of lines with repetitions 0, 1, 2, ...; anything else (a case split in two, a repetition
    missing or repeated) is damage and raises MeshcastError naming the line."""
    blocks: list[tuple[str, int, int]] = []
    seen: set[str] = set()
    for i, r in enumerate(rows):
        cid = r["case_id"]
        if blocks and blocks[-1][0] == cid:
            c, start, n = blocks[-1]
            blocks[-1] = (c, start, n + 1)
        else:
            if cid in seen:
                raise MeshcastError(f"calibration: {raw_path(directory)} line {i + 2} field "
                                    f"case_id: {cid!r} appears again after other cases")
            seen.add(cid)
            blocks.append((cid, i, 1))
        expect = blocks[-1][2] - 1
        if r["rep"] != expect:
            raise MeshcastError(f"calibration: {raw_path(directory)} line {i + 2} field rep: "
                                f"{r['rep']} where repetition {expect} of {cid!r} was due")
    return blocks


def case_is_complete(rows: list[dict], reps: int | None) -> bool:
    """Whether one case's rows (in order) are all a measurement takes: ``reps`` repetitions, or
    at least :data:`MIN_REPS` once they add up to :data:`BUDGET_S`. With ``reps`` unknown (a
    directory from before plans were written, or rows from another tool) it cannot be told:
    True."""
    n = len(rows)
    if reps is None or n >= reps:
        return True
    return n >= MIN_REPS and sum(r["seconds"] for r in rows) >= BUDGET_S


def write_raw_rows(directory: str | Path, rows: list[dict]) -> None:
    """Write every row atomically: temp file, fsync, rename (a failed write leaves the file
    as it was: :func:`atomic_write`)."""
    def write(f) -> None:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(_with_levels(rows))

    atomic_write(raw_path(directory), write)


def atomic_write(path: Path, write) -> None:
    """``write(file)`` into a per-process temp file beside ``path``, fsync, rename over ``path``.
    An OSError (a full disk, a read-only file system) removes the temp file and becomes a
    MeshcastError naming the file; ``path`` keeps what it held."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process
    try:
        with open(tmp, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise MeshcastError(
            f"out: cannot write {path}: {e.strerror}; it keeps what was written before. Free "
            "space (or make the directory writable) and continue with --resume") from None


#: A generous bound on one raw row's bytes (about 30 fields).
ROW_BYTES = 1024


def ensure_room(directory: str | Path, rows: int) -> None:
    """Room for ``rows`` raw rows twice over (the file and its temp copy while it is rewritten),
    checked before the first measurement; else a MeshcastError naming the space."""
    import shutil

    need = 2 * rows * ROW_BYTES
    free = shutil.disk_usage(directory).free
    if free < need:
        raise MeshcastError(
            f"out: {directory} has {free / 2**20:.1f} MiB free; this run's rows need about "
            f"{need / 2**20:.1f} MiB. Free space or choose another --out")


def rows_hash(rows: list[dict]) -> str:
    """sha256 of the rows as written, recorded by whatever is fitted from them. Rows of one host
    (every level column at :data:`LEVEL_DEFAULTS`) hash without those columns, as they did
    before multi-host runs, so a profile's recorded hash still names its older raw file."""
    rows = list(_with_levels(rows))
    single = all(str(r["levels"]) == "" and int(r["hosts"]) == 1 for r in rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SINGLE_HOST_COLUMNS if single else COLUMNS,
                       extrasaction="ignore" if single else "raise")
    w.writerows(rows)
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()


def _with_levels(rows: list[dict]):
    """Rows with :data:`LEVEL_DEFAULTS` for the level columns they do not carry (as they read
    back: a row written without them hashes as it will be read)."""
    return ({**LEVEL_DEFAULTS, **r} for r in rows)
