"""A calibration directory is safe to fit and to share (issue 15): ``meshcast fit`` refuses an
interrupted or damaged directory, naming what is missing and the ``--resume`` command; a fitted
value never falls back to a placeholder; a last case cut short is measured again on
``--resume`` without duplicates; one ``calibrate`` at a time holds a directory; a backend with no
device here is one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from calibration.lock import LOCK_NAME, directory_lock
from calibration.plan_file import read_plan
from calibration.raw import case_blocks, read_raw_rows, write_raw_rows
from meshcast.errors import MeshcastError

MESHCAST = [sys.executable, "-m", "simulator.cli.main"]
ONE_AXIS = ("--mesh", "data=8")  # collectives over one axis: the shortest real plan


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*MESHCAST, *args], capture_output=True, text=True, timeout=timeout)


def _calibrate(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return _run("calibrate", "--backend", "cpu", "--devices", "8", "--quick", "--out", str(out),
                *ONE_AXIS, *extra)


def _resume_cmd(out: Path) -> str:
    return (f"meshcast calibrate --backend cpu --devices 8 --quick --mesh data=8 --out {out} "
            "--resume")


def _error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr[-3000:])
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and res.stderr.rstrip().endswith(lines[0]), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safe") / "run"
    res = _calibrate(out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


@pytest.fixture
def copy(run_dir, tmp_path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(run_dir, out)
    return out


def test_a_run_writes_its_plan_and_leaves_no_temp_files_and_a_free_lock(run_dir):
    plan = read_plan(run_dir)
    rows = read_raw_rows(run_dir)
    assert plan["cases"] == list(dict.fromkeys(r["case_id"] for r in rows))
    assert plan["reps"] == 9 and plan["options"]["mesh"] == "data=8"
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME, "plan.json", "raw.csv"]
    assert (run_dir / LOCK_NAME).read_text() == ""  # released, naming nobody
    with directory_lock(run_dir):
        pass


def test_fit_refuses_an_interrupted_directory_and_its_command_completes_it(copy):
    rows = read_raw_rows(copy)
    blocks = case_blocks(copy, rows)
    cut = blocks[-3][1]  # the run stopped after a whole case: the last three never measured
    write_raw_rows(copy, rows[:cut])
    msg = _error(_run("fit", str(copy)))
    assert "3 of" in msg and "planned cases not measured" in msg and "collective:" in msg
    assert f"`{_resume_cmd(copy)}`" in msg
    assert not (copy / "profile.yaml").exists() and not (copy / "fit_report.json").exists()
    res = _run(*_resume_cmd(copy).split()[1:])  # the command, as printed
    assert res.returncode == 0, res.stderr[-3000:]
    after = read_raw_rows(copy)
    assert after[:cut] == rows[:cut] and len({(r["case_id"], r["rep"]) for r in after}) == len(after)
    assert {r["case_id"] for r in after} == set(read_plan(copy)["cases"])
    fit = _run("fit", str(copy), timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert (copy / "profile.yaml").exists()


def test_fit_names_whole_kinds_missing(copy):
    rows = read_raw_rows(copy)
    write_raw_rows(copy, [r for r in rows if r["kind"] not in ("elementwise", "gather")])
    msg = _error(_run("fit", str(copy)))
    assert "elementwise 7/7" in msg and "gather 5/5" in msg and "--resume" in msg
    assert not (copy / "profile.yaml").exists()


def test_a_host_profile_is_never_written_with_placeholders():
    from calibration.fitting.fit import fit_all
    from calibration.fitting.profile_out import calibrated_profile
    from tests.test_calibration_fit import META, synthetic_rows

    rows = [r for r in synthetic_rows() if r["kind"] != "elementwise"]
    launch, fits = fit_all(rows)
    with pytest.raises(MeshcastError, match="no fit for elementwise"):
        calibrated_profile(launch, fits, "0" * 64, META)
    no_net = [r for r in synthetic_rows() if r["kind"] != "collective"]
    launch, fits = fit_all(no_net)
    with pytest.raises(MeshcastError, match="no fit for collective"):
        calibrated_profile(launch, fits, "0" * 64, META)


def test_fit_without_a_plan_still_refuses_missing_kinds(tmp_path):
    from tests.test_calibration_fit import synthetic_rows

    write_raw_rows(tmp_path, [r for r in synthetic_rows() if r["kind"] != "attention"])
    msg = _error(_run("fit", str(tmp_path)))
    assert "attention" in msg and "--resume" in msg and "--devices 8" in msg
    assert not (tmp_path / "profile.yaml").exists()


@pytest.mark.parametrize("field,value,why", [
    ("seconds", "nan", "not a finite number"), ("seconds", "-0.001", "must be positive"),
    ("seconds", "inf", "not a finite number"), ("nbytes", "-4096", "must be at least"),
    ("flops", "lots", "not a number"), ("m", "1e400", "not a number"),
    ("kind", "warp", "is not one of"), ("group_size", "0", "must be at least")])
def test_bad_values_in_raw_rows_reject_the_file_naming_line_and_field(copy, field, value, why):
    rows = read_raw_rows(copy)
    lines = (copy / "raw.csv").read_text().splitlines(keepends=True)
    from calibration.raw import COLUMNS

    i = 5  # line 6 of the file
    cells = lines[i].rstrip("\n").split(",")
    assert len(cells) == len(COLUMNS)  # no quoted commas in this row
    cells[COLUMNS.index(field)] = value
    lines[i] = ",".join(cells) + "\n"
    (copy / "raw.csv").write_text("".join(lines))
    msg = _error(_run("fit", str(copy), timeout=120))
    assert f"raw.csv line 6 field {field}" in msg and why in msg
    assert not (copy / "profile.yaml").exists()
    assert rows  # the file was whole before the damage


def test_unknown_collective_is_rejected_not_a_crash_in_the_fit(tmp_path):
    from tests.test_calibration_fit import synthetic_rows

    rows = synthetic_rows()
    idx = next(i for i, r in enumerate(rows) if r["kind"] == "collective")
    rows[idx]["op"] = "broadcast"
    write_raw_rows(tmp_path, rows)
    msg = _error(_run("fit", str(tmp_path), timeout=120))
    assert f"line {idx + 2} field op: 'broadcast'" in msg


@pytest.mark.parametrize("how", ["fewer_rows", "partial_line"])
def test_a_last_case_cut_short_is_refused_then_measured_again_without_duplicates(copy, how):
    rows = read_raw_rows(copy)
    cid, start, n = case_blocks(copy, rows)[-1]
    assert n == 9
    if how == "fewer_rows":
        write_raw_rows(copy, rows[: start + 3])
    else:
        write_raw_rows(copy, rows[: start + 4])
        text = (copy / "raw.csv").read_text()
        (copy / "raw.csv").write_text(text[: len(text) - 40])  # the 4th row cut mid-line
    msg = _error(_run("fit", str(copy)))
    assert f"last case {cid} was cut short (3 whole repetitions of 9" in msg
    assert f"`{_resume_cmd(copy)}`" in msg and not (copy / "profile.yaml").exists()
    res = _calibrate(copy, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"last case {cid}" in res.stderr and "measuring it again" in res.stderr
    assert "1 to run" in res.stderr
    after = read_raw_rows(copy)
    assert after[:start] == rows[:start]
    again = [r for r in after if r["case_id"] == cid]
    assert [r["rep"] for r in again] == list(range(len(again))) and len(again) >= 5
    assert len({(r["case_id"], r["rep"]) for r in after}) == len(after)


def test_a_second_calibrate_into_a_directory_in_use_fails_at_once(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    with directory_lock(out):  # this test process holds it, as a running calibrate would
        res = _calibrate(out)
        msg = _error(res)
        assert "in use by another meshcast calibrate" in msg and f"pid {os.getpid()}" in msg
        assert str(out / LOCK_NAME) in msg  # what to remove if the holder is gone
        assert not (out / "raw.csv").exists()


def test_a_stale_lock_is_taken_and_the_lock_is_released_on_error(tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    # left by a process that was killed: the file names it, but nobody holds the flock
    (out / LOCK_NAME).write_text("pid 999999 on elsewhere since 2026-01-01: meshcast calibrate\n")
    res = _calibrate(out, "--limit", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len({r["case_id"] for r in read_raw_rows(out)}) == 1
    again = _calibrate(out)  # an error (raw.csv exists, no --resume) inside the lock
    assert "--resume" in _error(again)
    with directory_lock(out):  # released on the error
        pass


def test_temp_files_are_per_process(tmp_path, monkeypatch):
    from calibration.raw import raw_path

    seen = []
    real = Path.replace

    def spy(self, target):
        seen.append(self.name)
        return real(self, target)

    monkeypatch.setattr(Path, "replace", spy)
    from tests.test_calibration_fit import synthetic_rows

    write_raw_rows(tmp_path, synthetic_rows()[:2])
    assert seen == [f".raw.csv.{os.getpid()}.tmp"] and raw_path(tmp_path).exists()


@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_a_backend_with_no_device_here_is_one_line(tmp_path, backend):
    if backend == "gpu" and shutil.which("nvidia-smi"):
        pytest.skip("this host may have a GPU")
    msg = _error(_run("calibrate", "--backend", backend, "--quick", "--out", str(tmp_path / "x"),
                      timeout=120))
    assert f"backend: no {backend} device or jax plugin" in msg and "pip install" in msg
    assert "--backend cpu" in msg and not (tmp_path / "x").exists()


def test_a_full_disk_fails_the_write_cleanly_and_keeps_the_rows(copy, monkeypatch):
    """ENOSPC (or a read-only file system) while rewriting raw.csv or plan.json: one error
    naming the file and --resume; the file keeps its rows and no temp file is left."""
    import errno
    import os

    from calibration.plan_file import write_plan
    from calibration.raw import write_raw_rows
    from meshcast.errors import MeshcastError

    rows = read_raw_rows(copy)
    before = (copy / "raw.csv").read_bytes()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(MeshcastError) as e:
        write_raw_rows(copy, rows + rows[:1])
    assert "raw.csv" in str(e.value) and "No space" in str(e.value) and "--resume" in str(e.value)
    with pytest.raises(MeshcastError, match="plan.json"):
        write_plan(copy, {}, 9, ["a"])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert (copy / "raw.csv").read_bytes() == before
    assert not [p for p in copy.iterdir() if p.name.endswith(".tmp")]


def test_too_little_room_is_refused_before_the_first_measurement(tmp_path, monkeypatch):
    import shutil as sh
    from collections import namedtuple

    from calibration.raw import ensure_room
    from meshcast.errors import MeshcastError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(MeshcastError) as e:
        ensure_room(tmp_path, 500)
    assert str(e.value).startswith("out:") and "MiB free" in str(e.value)
    monkeypatch.setattr(sh, "disk_usage", lambda p: usage(10**12, 0, 10**12))
    ensure_room(tmp_path, 500)
