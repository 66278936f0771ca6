"""Calibration over several processes on JAX's distributed runtime (issue 16 parts 1 and 4):
``--local-processes 2 --devices 4`` on the loopback interface, the explicit
``--coordinator/--num-processes/--process-id`` form, and the flags' checks.

Each run is fresh processes (the device count is fixed when jax starts). The runs stop after a
few cases (``--limit``): what is tested is the machinery -- the same plan on every process, rows
from process 0 only, a failure anywhere failing the run with that process's message and no
process left, ``--resume`` with no case lost or measured twice -- not the figures, which a
full run measures (the level fit's tests and ``benchmarks/``). About 1 to 2 minutes on 2 cores.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from calibration.lock import LOCK_NAME
from calibration.measure.launch import (check_agreement, child_argv, coordinator_address,
                                        free_port)
from calibration.plan_file import read_plan
from calibration.raw import MIN_REPS, REPS_QUICK, case_blocks, read_raw_rows
from meshcast.errors import MeshcastError
from tests.cli_helpers import fails

MESHCAST = [sys.executable, "-m", "simulator.cli.main"]
ROOT = Path(__file__).resolve().parents[1]
#: two processes of 4 CPU devices: the first cases of the quick plan
LOCAL = ["calibrate", "--backend", "cpu", "--local-processes", "2", "--devices", "4", "--quick"]
TIMEOUT = 300


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MESHCAST, *args], capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=ROOT)


def _error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return lines[0]


def _processes_of(out: Path) -> list:
    """Live processes whose command line names ``out`` (a run's children and parent)."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if str(out) in " ".join(p.info["cmdline"] or []) and \
                    p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


def _none_left(out: Path, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while _processes_of(out) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _processes_of(out)
    assert not left, [p.cmdline() for p in left]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*MESHCAST, *LOCAL, "--out", str(out), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc: subprocess.Popen, pattern: str) -> list[str]:
    """Read ``proc``'s stderr up to a line matching ``pattern`` (what it printed so far)."""
    seen = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if re.search(pattern, line):
            return seen
    proc.kill()
    raise AssertionError(f"no line like {pattern!r}: {''.join(seen)[-3000:]}")


def _child(out: Path, process_id: int):
    ps = [p for p in _processes_of(out) if f"--process-id {process_id}" in " ".join(p.cmdline())]
    assert len(ps) == 1, [p.cmdline() for p in _processes_of(out)]
    return ps[0]


def _check_whole_prefix(out: Path) -> list[str]:
    """The directory's cases: each whole (every repetition, once), in plan order, a prefix of
    the plan; returns their ids."""
    rows = read_raw_rows(out)
    blocks = case_blocks(out, rows)  # raises on a case split, repeated or a repetition missing
    ids = [cid for cid, _, _ in blocks]
    plan = read_plan(out)
    assert ids == plan["cases"][:len(ids)]
    assert all(n == REPS_QUICK or n >= MIN_REPS for _, _, n in blocks)
    return ids


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, float]:
    out = tmp_path_factory.mktemp("mh") / "run"
    t0 = time.perf_counter()
    res = _run(*LOCAL, "--limit", "3", "--out", str(out))
    return out, res, time.perf_counter() - t0


def test_two_local_processes_measure_and_process_0_writes(two_process_run):
    out, res, seconds = two_process_run
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == str(out / "raw.csv")
    # process 0's log passes through, once; gloo's connection lines do not
    assert res.stderr.count("calibrate: ") == 1 and "(2 processes x 4)" in res.stderr
    assert "[Gloo]" not in res.stderr and "Traceback" not in res.stderr
    rows = read_raw_rows(out)
    ids = _check_whole_prefix(out)
    assert len(ids) == 3
    assert {(r["n_hosts"], r["n_devices"], r["backend"]) for r in rows} == {(2, 8, "cpu")}
    plan = read_plan(out)
    assert plan["options"]["processes"] == 2 and plan["options"]["local_processes"] == 2
    assert plan["options"]["devices"] == 4  # per process, as --devices is given
    # only process 0 wrote: the raw file, the plan and a free lock; no temp file of anyone
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, "plan.json", "raw.csv"])
    assert (out / LOCK_NAME).read_text() == ""
    _none_left(out)
    print(f"\n2 local processes x 4 devices, 3 cases: {seconds:.1f} s")


def test_process_0_refusing_fails_every_process_at_once(two_process_run):
    out, res, _ = two_process_run
    assert res.returncode == 0
    before = (out / "raw.csv").read_bytes()
    again = _run(*LOCAL, "--limit", "1", "--out", str(out))  # no --resume
    msg = _error(again)
    # process 0's refusal, whichever process the parent saw stop first
    assert re.search(r"process 0 of 2 failed( \(exit status 2\))?: out: ", msg), msg
    assert "already holds measurements; pass --resume" in msg
    assert "continue with" not in msg  # refused, not cut short: no resume command
    assert (out / "raw.csv").read_bytes() == before
    _none_left(out)


def test_a_killed_process_fails_the_run_and_resume_completes_it(tmp_path):
    out = tmp_path / "killed"
    proc = _start(out, "--limit", "4")
    _wait_for_line(proc, r"\[2/\d+\]")  # two cases written by process 0
    victim = _child(out, 1)
    victim.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    _, err = proc.communicate(timeout=TIMEOUT)
    stopped_s = time.monotonic() - t0
    res = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    msg = _error(res)
    assert "process 1 of 2 was killed by SIGKILL; stopped the other 1 process" in msg, msg
    _none_left(out)
    assert stopped_s < 30, stopped_s
    before = _check_whole_prefix(out)
    assert 2 <= len(before) < 4
    # the message gives the command that completes the run
    cmd = re.search(r"continue with `meshcast ([^`]+)`", msg)[1]
    assert cmd.endswith("--resume") and "--local-processes 2" in cmd
    done = _run(*shlex.split(cmd))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{len(before)} done" in done.stderr
    after = _check_whole_prefix(out)
    assert after[:len(before)] == before and len(after) == len(before) + 4
    assert max(Counter(r["case_id"] for r in read_raw_rows(out)).values()) <= REPS_QUICK
    _none_left(out)


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopping_the_parent_leaves_no_process(tmp_path, how):
    out = tmp_path / how
    proc = _start(out)
    _wait_for_line(proc, r"\[1/\d+\]")
    children = [p for p in _processes_of(out) if p.pid != proc.pid]
    assert len(children) == 2
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=TIMEOUT)
    if how == "SIGKILL":  # nothing runs in the parent: the children die with it
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + getattr(signal, how), err[-2000:]
        assert f"{how}: stopped the 2 local processes; continue with `meshcast " in err
        assert "Traceback" not in err
    _none_left(out)
    _check_whole_prefix(out)


def test_processes_with_different_plans_refuse_naming_both(tmp_path):
    out = tmp_path / "mismatch"
    port = free_port()
    base = [*MESHCAST, "calibrate", "--backend", "cpu", "--devices", "4", "--quick", "--out",
            str(out), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen(base + ["--process-id", str(i), "--mesh", mesh], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, mesh in enumerate(["data=8", "data=2,model=4"])]
    try:
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results):
        msg = _error(subprocess.CompletedProcess(p.args, p.returncode, "", err))
        assert "the processes disagree on the plan: process 0 has 71 cases" in msg
        assert "on mesh {'data': 8," in msg and "process 1 has" in msg
        assert "'model': 4" in msg and "jax " in msg
    assert not out.exists()  # no process touched the directory


def test_a_jax_version_mismatch_names_both_versions():
    v0 = {"cases": 5, "jax": "0.10.2", "jaxlib": "0.10.2"}
    v1 = dict(v0, jax="0.9.0", jaxlib="0.9.0")
    with pytest.raises(MeshcastError, match=r"process 0 has .*0\.10\.2.*process 2 has .*0\.9\.0"):
        check_agreement("plan", [v0, v0, v1])
    check_agreement("plan", [v0, dict(v0)])


def test_validate_runs_as_local_processes_and_fails_with_process_0s_message(tmp_path):
    bad = tmp_path / "profile.yaml"
    bad.write_text("name: [unclosed\n")
    res = _run("validate", "--calibration", str(tmp_path), "--profile", str(bad), "--quick",
               "--local-processes", "2", "--devices", "4")
    msg = _error(res)
    assert re.search(r"process [01] of 2 failed \(exit status 2\): ", msg), msg
    assert "profile" in msg and "continue with" not in msg
    _none_left(tmp_path)


# --- the flags, checked before any process or jax starts ---------------------------------

@pytest.mark.parametrize("argv, names", [
    (["--coordinator", "node001"], ["--coordinator", "HOST:PORT"]),
    (["--coordinator", "node001:70000"], ["--coordinator", "65535"]),
    (["--coordinator", "a b:12"], ["--coordinator"]),
    (["--num-processes", "0"], ["--num-processes", "out of range"]),
    (["--process-id", "-1"], ["--process-id"]),
    (["--local-processes", "0"], ["--local-processes"]),
    (["--local-processes", "65"], ["--local-processes", "64"]),
    (["--local-processes", "1.5"], ["--local-processes", "whole number"]),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
     ["process-id: 2 must be below --num-processes 2"]),
    (["--coordinator", "h:1", "--num-processes", "2"], ["process-id:", "give --process-id"]),
    (["--process-id", "0"], ["coordinator:", "--coordinator, --num-processes"]),
    (["--local-processes", "2", "--multi-host"], ["local-processes:", "drop --multi-host"]),
    (["--local-processes", "2", "--coordinator", "h:1"], ["local-processes:", "--coordinator"]),
    (["--local-processes", "2", "--backend", "gpu"], ["local-processes:", "--backend cpu",
                                                      "--multi-host"]),
])
@pytest.mark.parametrize("command", ["calibrate", "validate"])
def test_process_flags_are_checked_naming_the_flag(capsys, tmp_path, command, argv, names):
    target = (["--out", str(tmp_path / "x")] if command == "calibrate"
              else ["--calibration", str(tmp_path), "--profile",
                    str(ROOT / "hardware_profiles" / "h100-sxm.yaml")])
    fails(capsys, [command, *target, *argv], *names)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("text", ["127.0.0.1:1234", "node-001.cluster:8476", "[::1]:80",
                                  "localhost:65535"])
def test_coordinator_addresses_accepted(text):
    assert coordinator_address(text) == text


def test_child_command_lines():
    argv = ["calibrate", "--local-processes", "2", "--out", "d", "--local-processes=3", "--quick",
            "--local-proc", "2", "--lo=2"]
    assert child_argv(argv, 2, 5555, 1) == [
        "calibrate", "--out", "d", "--quick", "--coordinator", "127.0.0.1:5555",
        "--num-processes", "2", "--process-id", "1"]
    # after "--" every token is positional: kept as it is, and the flags go before it
    assert child_argv(["calibrate", "--lo", "2", "--", "--local-processes"], 2, 5555, 0) == [
        "calibrate", "--coordinator", "127.0.0.1:5555", "--num-processes", "2",
        "--process-id", "0", "--", "--local-processes"]


def test_resume_command_names_the_processes(tmp_path):
    from calibration.plan_file import resume_command

    opts = {"backend": "cpu", "devices": 4, "quick": True, "multi_host": True,
            "local_processes": 2}
    assert resume_command(tmp_path, opts).endswith(
        f"--devices 4 --quick --local-processes 2 --out {tmp_path} --resume")
    opts = dict(opts, backend="gpu", devices=None, local_processes=None)
    assert resume_command(tmp_path, opts) == (
        f"meshcast calibrate --backend gpu --quick --multi-host --out {tmp_path} --resume")


def test_native_prints_go_to_stderr_so_stdout_stays_strict_json():
    """gloo writes its connection lines to file descriptor 1 in pieces from its own threads (a
    2 x 4 validate once printed a stray ``3`` line before its JSON): a distributed process
    sends native writes to stderr and keeps Python's stdout for its own output."""
    import subprocess
    import sys

    code = ("import os\nfrom calibration.measure.launch import _native_stdout_to_stderr\n"
            "_native_stdout_to_stderr()\nos.write(1, b'3\\n')\nprint('{\"ok\": 1}')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert res.returncode == 0, res.stderr
    assert res.stdout == '{"ok": 1}\n' and "3" in res.stderr
