"""The plan a calibration directory was measured to: ``<dir>/plan.json``, beside ``raw.csv``.

``meshcast calibrate`` writes it before the first measurement: the options of the run (so the
exact ``--resume`` command can be given back), the repetitions per case and every planned case
id in order. ``meshcast fit`` checks the raw rows against it (:func:`check_complete`) and refuses
a directory with planned cases missing or its last case cut short, rather than fit what is
there and leave the rest of the profile at placeholders. A directory without a plan (measured
before plans were written) is checked for what the profile needs: launch, matmul, attention and
elementwise sweeps, and collectives when there was more than one device.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from calibration.raw import (atomic_write, case_blocks, case_is_complete, check_kinds,
                            raw_path, read_raw_file)
from meshcast.errors import MeshcastError

PLAN_NAME = "plan.json"
#: what a profile cannot do without (each group needs two sizes to fit a curve)
NEEDED = ("launch", "matmul", "attention", "elementwise")


def plan_path(directory: str | Path) -> Path:
    return Path(directory) / PLAN_NAME


def write_plan(directory: str | Path, options: dict, reps: int, case_ids: list[str]) -> None:
    """``options``: backend, devices (per process), quick, mesh (the ``--mesh`` text or None),
    multi_host, processes (the process count) and local_processes (``--local-processes``)."""
    text = json.dumps({"version": 1, "options": options, "reps": reps, "cases": case_ids},
                      indent=1)
    atomic_write(plan_path(directory), lambda f: f.write(text))


def read_plan(directory: str | Path) -> dict | None:
    path = plan_path(directory)
    if not path.exists():
        return None
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        assert isinstance(plan["options"], dict) and isinstance(plan["reps"], int)
        assert all(isinstance(c, str) for c in plan["cases"])
        return plan
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise MeshcastError(f"calibration: {path} is not a plan meshcast calibrate wrote; "
                            "remove it to fit by kinds only") from None


def resume_command(directory: str | Path, options: dict | None, rows: list[dict] = ()) -> str:
    """The ``meshcast calibrate ... --resume`` command that continues the run in ``directory``:
    from the plan's options, else from what the rows record (backend, device count)."""
    if options is None:
        r = rows[0] if rows else {}
        backend = {"cuda": "gpu", "rocm": "gpu"}.get(r.get("backend"), r.get("backend", "cpu"))
        options = {"backend": backend, "devices": r.get("n_devices") if backend == "cpu" else None}
    cmd = ["meshcast", "calibrate", "--backend", options.get("backend") or "cpu"]
    if options.get("devices") and (options.get("backend") or "cpu") == "cpu":
        cmd += ["--devices", str(options["devices"])]
    if options.get("quick"):
        cmd.append("--quick")
    if options.get("mesh"):
        cmd += ["--mesh", options["mesh"]]
    if options.get("local_processes"):
        cmd += ["--local-processes", str(options["local_processes"])]
    elif options.get("multi_host"):
        cmd.append("--multi-host")  # or each process's --coordinator ... flags, as first given
    return " ".join(cmd + ["--out", str(directory), "--resume"])


def resume_hint(directory: str | Path, rows: list[dict]) -> str:
    """``complete it with `<command>``` (the plan's options, or the rows' when there is none)."""
    plan = read_plan(directory)
    cmd = resume_command(directory, plan["options"] if plan else None, rows)
    more = "" if plan else " (with the --quick/--mesh options of the original run)"
    return f"complete it with `{cmd}`{more}"


def group_of(case_id: str) -> str:
    """``matmul``, ``collective:all_gather:data``, ...: what a case feeds in the fit."""
    parts = case_id.split(":")
    return ":".join(parts[:3]) if parts[0] == "collective" else parts[0]


def incomplete_tail(directory: str | Path, rows: list[dict],
                    reps: int | None) -> tuple[str, int] | None:
    """(case_id, rows it has) of the last case when it was cut short, else None; damage
    elsewhere raises (:func:`calibration.raw.case_blocks`)."""
    blocks = case_blocks(directory, rows)
    if not blocks:
        return None
    cid, start, n = blocks[-1]
    return None if case_is_complete(rows[start:start + n], reps) else (cid, n)


def complete_rows(directory: str | Path, command: str = "fit") -> list[dict]:
    """The directory's raw rows once :func:`check_complete` passes (for ``meshcast fit``)."""
    rows, cut = read_raw_file(directory)
    if not rows and not cut:
        raise MeshcastError(f"{command}: no measurements in {raw_path(directory)}; run meshcast "
                            "calibrate --out DIR first")
    check_kinds(directory, rows)
    check_complete(directory, rows, cut)
    return rows


def check_complete(directory: str | Path, rows: list[dict], cut: bool = False) -> None:
    """MeshcastError (one line: what is missing and the ``--resume`` command that measures it)
    unless ``rows`` hold every case the directory's plan lists, each whole, and the file ended
    with a whole line (``cut`` False)."""
    plan = read_plan(directory)
    tail = incomplete_tail(directory, rows, plan["reps"] if plan else None)
    if cut and not tail:
        tail = ("after " + rows[-1]["case_id"] if rows else "(the first)", 0)
    if tail:
        cid, _ = tail
        rows = [r for r in rows if r["case_id"] != cid]
    have = {r["case_id"] for r in rows}
    if plan:
        missing = [c for c in plan["cases"] if c not in have]
        total = Counter(group_of(c) for c in plan["cases"])
        problem = (f"{len(missing)} of {len(plan['cases'])} planned cases not measured"
                   if missing else "")
    else:
        kinds = {r["case_id"]: r["kind"] for r in rows}
        groups = Counter(kinds.values())
        needed = list(NEEDED)
        if rows and rows[0]["n_devices"] > 1:
            needed.append("collective")
        missing = [g for g in needed if groups.get(g, 0) < (1 if g == "launch" else 2)]
        total = Counter()
        problem = "no plan.json and too few cases to fit" if missing else ""
    if not missing and not tail:
        return
    parts = []
    if tail:
        parts.append(f"its last case {tail[0]} was cut short ({tail[1]} whole repetitions"
                     + (f" of {plan['reps']}" if plan else "")
                     + (", then a partial line" if cut else "") + ")")
    if missing:
        by_group = Counter(group_of(c) for c in missing) if plan else Counter(missing)
        listed = ", ".join(f"{g} {n}/{total[g]}" if plan else g for g, n in by_group.items())
        parts.append(f"{problem}: {listed}")
    raise MeshcastError(f"fit: {raw_path(directory)} is incomplete: {'; '.join(parts)}; no "
                        f"profile written; {resume_hint(directory, rows)}")
