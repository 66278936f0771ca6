"""Several processes, one measurement: JAX's own distributed runtime, started as its users start it.

Three ways in, one runtime (``jax.distributed.initialize``):

- ``--multi-host``: plain ``jax.distributed.initialize()``, which finds the coordinator, the
  process count and this process's id itself on a Cloud TPU pod, under SLURM or Open MPI.
- ``--coordinator HOST:PORT --num-processes N --process-id I``: the same three values given.
- ``--local-processes N`` (CPU only): this process starts N copies of its own command on the
  loopback interface (:func:`run_local_processes`), each with the explicit flags above, streams
  process 0's output, and fails with the message of the first process that fails, stopping the
  rest: none is left behind, on an error, on Ctrl-C or on SIGTERM.

On CPU the collectives between processes run over gloo (``jax_cpu_collectives_implementation``),
set before initialisation. Once started, the processes agree on what they will do through the
runtime's key-value store (:func:`agree`, :func:`share_from_zero`): every process runs the same
plan; process 0 alone reads and writes the output directory.

Nothing here imports jax at module level: the parent of ``--local-processes`` never starts it.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from meshcast.errors import MeshcastError

#: bounds of the explicit flags (JAX's own limits are larger; these catch typos, not clusters)
MAX_PROCESSES = 65536
MAX_LOCAL_PROCESSES = 64
#: seconds a process waits for another's value in the key-value store
KV_TIMEOUT_S = 600
#: seconds between SIGTERM and SIGKILL when stopping local processes (short: a process in JAX's
#: distributed runtime takes SIGTERM as a preemption notice and keeps running)
STOP_GRACE_S = 1.0
#: lines of a failed process's stderr quoted in the error
TAIL_LINES = 3
_KV = "meshcast"
#: set in each process ``--local-processes N`` starts: N (for the ``--resume`` command it gives)
LOCAL_ENV = "MESHCAST_LOCAL_PROCESSES"
#: how a process other than 0 words process 0's error (:func:`share_from_zero`)
RELAYED = "process 0: "

_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9][A-Za-z0-9.\-_]*))"
                        r":(?P<port>[0-9]{1,5})$")


def coordinator_address(text: str) -> str:
    """An argparse type: ``HOST:PORT`` (a host name, an IPv4 address or ``[IPv6]``; a port from
    1 to 65535)."""
    m = _HOST_PORT.match(text.strip())
    if not m or not 1 <= int(m["port"]) <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not HOST:PORT (e.g. 10.0.0.1:1234 or node001:1234; port 1 to 65535)")
    return text.strip()


@dataclass(frozen=True)
class Processes:
    """How this process joins the others: ``mode`` is ``"single"`` (no distributed runtime),
    ``"auto"`` (``--multi-host``), ``"explicit"`` (coordinator, count and id given) or
    ``"local"`` (``--local-processes``: this process is the parent that starts them)."""

    mode: str = "single"
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_processes: int | None = None

    @property
    def distributed(self) -> bool:
        return self.mode in ("auto", "explicit")


def processes_from_args(a) -> Processes:
    """The :class:`Processes` of parsed ``calibrate``/``validate`` options, or a MeshcastError
    naming the flag that is missing, out of range or does not go with another."""
    explicit = {"coordinator": a.coordinator, "num-processes": a.num_processes,
                "process-id": a.process_id}
    given = [k for k, v in explicit.items() if v is not None]
    if a.local_processes is not None:
        clash = [f"--{k}" for k in given] + (["--multi-host"] if a.multi_host else [])
        if clash:
            raise MeshcastError(f"local-processes: starts its own processes and gives each "
                                f"--coordinator, --num-processes and --process-id; drop "
                                f"{', '.join(clash)}")
        if a.backend != "cpu":
            raise MeshcastError(
                f"local-processes: only with --backend cpu (got {a.backend}); on GPUs and TPUs "
                "start one process per host with --multi-host (SLURM, Open MPI, TPU pods) or "
                "--coordinator HOST:PORT --num-processes N --process-id I")
        return Processes("local", local_processes=a.local_processes)
    if given:
        missing = [f"--{k}" for k, v in explicit.items() if v is None]
        if missing:
            raise MeshcastError(f"{missing[0][2:]}: --coordinator, --num-processes and "
                                f"--process-id go together; give {', '.join(missing)} too (or "
                                "none of them and --multi-host, to detect them)")
        if a.process_id >= a.num_processes:
            raise MeshcastError(f"process-id: {a.process_id} must be below --num-processes "
                                f"{a.num_processes} (0 to {a.num_processes - 1})")
        return Processes("explicit", a.coordinator, a.num_processes, a.process_id)
    return Processes("auto" if a.multi_host else "single")


def start_runtime(procs: Processes, backend: str) -> None:
    """``jax.distributed.initialize`` as ``procs`` says (nothing for a single process), after
    choosing gloo for CPU collectives across processes. Call after
    :func:`calibration.measure.run.configure_backend`, before anything asks jax for devices."""
    if not procs.distributed:
        return
    import jax

    _native_stdout_to_stderr()
    if backend == "cpu":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if procs.mode == "explicit":
        kwargs = dict(coordinator_address=procs.coordinator, num_processes=procs.num_processes,
                      process_id=procs.process_id)
    try:
        jax.distributed.initialize(**kwargs)
    except (RuntimeError, ValueError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        how = ("--coordinator " + procs.coordinator if procs.mode == "explicit"
               else "--multi-host (auto-detection: Cloud TPU, SLURM, Open MPI)")
        hint = "" if procs.mode == "explicit" else (
            "; elsewhere give --coordinator HOST:PORT --num-processes N --process-id I to every "
            "process, or --local-processes N to try it on one machine (CPU)")
        raise MeshcastError(f"multi-host: jax.distributed.initialize with {how} failed: {why}"
                            f"{hint}") from None


def _native_stdout_to_stderr() -> None:
    """Native code (gloo's connection lines, written in pieces from its own threads) prints to
    file descriptor 1; send that to stderr and keep Python's ``sys.stdout`` on a copy of the
    original, so stdout carries only meshcast's own output: ``--json`` stays one strict JSON
    document (a 2 x 4 validate once printed a stray ``3`` line before it)."""
    sys.stdout.flush()
    keep = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = os.fdopen(keep, "w", buffering=1, encoding="utf-8")


def stop_runtime() -> None:
    """``jax.distributed.shutdown()`` when it was started (a barrier: every process calls it)."""
    import jax
    from jax._src import distributed

    if distributed.global_state.client is not None:
        jax.distributed.shutdown()


def _client():
    from jax._src import distributed

    return distributed.global_state.client


def digest(value) -> str:
    """Short sha256 of ``value`` as canonical JSON (what :func:`agree` compares)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def agree(name: str, mine: dict, describe=lambda v: json.dumps(v, sort_keys=True)) -> None:
    """Every process publishes ``mine`` under ``name`` and reads everyone's; any process that
    differs from process 0 is a MeshcastError (on every process) naming both values through
    ``describe``. No-op for a single process."""
    import jax

    n, me = jax.process_count(), jax.process_index()
    if n == 1:
        return
    client = _client()
    client.key_value_set(f"{_KV}/{name}/{me}", json.dumps(mine, sort_keys=True))
    values = [json.loads(client.blocking_key_value_get(f"{_KV}/{name}/{i}", KV_TIMEOUT_S * 1000))
              for i in range(n)]
    check_agreement(name, values, describe)


def check_agreement(name: str, values: list[dict], describe=lambda v: json.dumps(v)) -> None:
    """MeshcastError naming process 0's value and the first process's that differs."""
    for i, v in enumerate(values[1:], start=1):
        if v != values[0]:
            raise MeshcastError(
                f"multi-host: the processes disagree on the {name}: process 0 has "
                f"{describe(values[0])}, process {i} has {describe(v)}; start every process with "
                "the same meshcast options, meshcast and jax versions")


def share_from_zero(name: str, compute):
    """``compute()`` on process 0, its (JSON) value on every process. A MeshcastError on process
    0 is published too and raised on every process as ``process 0: <message>``, so no process
    waits for a value that will never come."""
    import jax

    if jax.process_count() == 1:
        return compute()
    client, key = _client(), f"{_KV}/{name}"
    if jax.process_index() == 0:
        try:
            value = compute()
        except MeshcastError as e:
            client.key_value_set(key, json.dumps({"error": str(e)}))
            raise
        client.key_value_set(key, json.dumps({"value": value}))
        return value
    got = json.loads(client.blocking_key_value_get(key, KV_TIMEOUT_S * 1000))
    if "error" in got:
        raise MeshcastError(f"{RELAYED}{got['error']}")
    return got["value"]


# --- the parent of --local-processes --------------------------------------------------------

def free_port() -> int:
    """A TCP port free on the loopback interface now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_argv(argv: list[str], n: int, port: int, i: int) -> list[str]:
    """``argv`` (a meshcast command line, without the program) for local process ``i`` of
    ``n``: ``--local-processes`` (or the prefix of it argparse accepted) dropped, the explicit
    coordinator flags added (before a ``--``, after which every token is positional and kept
    as it is)."""
    end = argv.index("--") if "--" in argv else len(argv)
    out, skip = [], False
    for tok in argv[:end]:
        if skip:
            skip = False
            continue
        key = tok.split("=", 1)[0]
        if len(key) >= 4 and "--local-processes".startswith(key):  # argparse takes "--lo"
            skip = "=" not in tok
            continue
        out.append(tok)
    return out + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                  "--process-id", str(i)] + argv[end:]


def _die_with_parent_fn():
    """A ``preexec_fn``: on Linux the child gets SIGKILL when its parent dies, even by SIGKILL
    (prctl PR_SET_PDEATHSIG); elsewhere None. libc is loaded here, in the parent: between fork
    and exec the child only calls it (no import, no lock another thread might hold)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1


class _Child:
    """One local process, its stdout and stderr read by threads: process 0's passed through
    (gloo's connection lines dropped; from a traceback on, held back: the parent's error says
    what failed), every process's last stderr lines kept for that error."""

    NOISE = ("[Gloo]",)

    def __init__(self, i: int, cmd: list[str], env: dict, echo: bool, preexec=None):
        self.i = i
        self.muted = False
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True, preexec_fn=preexec)
        self.threads = [threading.Thread(target=self._pump, args=(self.proc.stdout, sys.stdout,
                                                                  echo, False), daemon=True),
                        threading.Thread(target=self._pump, args=(self.proc.stderr, sys.stderr,
                                                                  echo, True), daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, stream, sink, echo: bool, keep: bool) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            if line.startswith(self.NOISE) or "connected to" in line and "peer ranks" in line:
                continue  # gloo's lines, also when two processes' writes interleave
            if keep:
                self.tail.append(line.rstrip("\n"))
                self.muted = self.muted or line.startswith(("Traceback", "error: "))
            if echo and not (keep and self.muted):
                try:
                    sink.write(line)
                    sink.flush()
                except (BrokenPipeError, ValueError):
                    pass
        stream.close()

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # its own session: the process and anything it started
        except (ProcessLookupError, PermissionError):
            pass

    def why(self) -> str:
        rc = self.proc.returncode
        if rc is not None and rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exit status {rc}"

    def message(self) -> str:
        """What it said last on stderr: its ``error:`` line when it printed one, else the last
        :data:`TAIL_LINES` lines (a traceback's end: where, and the exception), joined."""
        lines = [ln for ln in self.tail if ln.strip()]
        errs = [ln for ln in lines if ln.startswith("error: ")]
        return errs[-1].strip() if errs else " / ".join(ln.strip() for ln in lines[-TAIL_LINES:])


def run_local_processes(argv: list[str], n: int, resume_hint=lambda crashed: "") -> int:
    """Run ``meshcast <argv>`` as ``n`` local processes joined by JAX's runtime on a free
    loopback port; process 0's stdout and stderr pass through. Returns 0 when every process
    succeeded. When one fails (or is killed) the others are stopped (SIGTERM, then SIGKILL
    after :data:`STOP_GRACE_S`) and a MeshcastError names that process, how it ended and its
    last stderr lines (only its ``error:`` line when SIGKILL or SIGTERM stopped it: its last log
    lines were not the cause), then ``resume_hint(crashed)`` (``crashed``: it ended without an
    ``error:`` line of its own, so the run was cut short, not refused). Ctrl-C (SIGINT) or
    SIGTERM to this process stops them all too; it then returns 128 + the signal's number, as
    a shell does. Killed outright, this process takes them with it (Linux: PR_SET_PDEATHSIG)."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{LOCAL_ENV: str(n)})
    children: list[_Child] = []
    stopped_by: list[int] = []

    def on_term(signum, frame):  # SIGTERM to the parent: stop the children as Ctrl-C does
        stopped_by.append(signum)
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, on_term) if main else None
    failed, preexec = None, _die_with_parent_fn()
    try:
        for i in range(n):
            cmd = [sys.executable, "-m", "simulator.cli.main", *child_argv(argv, n, port, i)]
            children.append(_Child(i, cmd, env, echo=(i == 0), preexec=preexec))
        failed = _wait(children)
    except KeyboardInterrupt:
        stopped_by.append(signal.SIGINT)
    finally:
        _stop(children)
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    if stopped_by:
        sig = signal.Signals(stopped_by[0])
        hint = resume_hint(True)
        print(f"meshcast: {sig.name}: stopped the {len(children)} local processes"
              + (f"; {hint}" if hint else ""), file=sys.stderr, flush=True)
        return 128 + sig.value
    if failed is None:
        return 0
    others, said = n - 1, failed.message()
    outside = failed.proc.returncode in (-signal.SIGKILL, -signal.SIGTERM)
    if outside and not said.startswith("error: "):
        said = ""  # killed from outside (or by the OOM killer): its last log lines are not why
    hint = resume_hint(not said.startswith("error: "))
    said = said[len("error: "):] if said.startswith("error: ") else said
    if said.startswith(RELAYED):  # another process stopped on process 0's error: report that
        raise MeshcastError(f"process 0 of {n} failed: {said[len(RELAYED):]}; stopped the "
                            f"other {others} process{'es' if others != 1 else ''}")
    raise MeshcastError(
        f"process {failed.i} of {n} " + (f"failed ({failed.why()}): {said}" if said else
                                         f"was {failed.why()}" if failed.proc.returncode < 0
                                         else f"failed ({failed.why()}) with no message")
        + f"; stopped the other {others} process{'es' if others != 1 else ''}"
        + (f"; {hint}" if hint else ""))


def _wait(children: list[_Child]) -> _Child | None:
    """Poll until every child has exited 0 (None) or one has failed: the failed child.
    Several found failed in one poll: a killed one first (the cause; the others then lose
    their peer), then one that printed an ``error:`` line of its own (not process 0's relayed)."""
    while True:
        codes = [c.proc.poll() for c in children]
        bad = [c for c, rc in zip(children, codes) if rc not in (None, 0)]
        if bad:
            for c in bad:
                for t in c.threads:
                    t.join(timeout=2)
            bad.sort(key=lambda c: (c.proc.returncode > 0, not c.message().startswith("error:"),
                                    c.message().startswith("error: " + RELAYED)))
            return bad[0]
        if all(rc == 0 for rc in codes):
            for c in children:
                for t in c.threads:
                    t.join(timeout=5)
            return None
        time.sleep(0.05)


def _stop(children: list[_Child]) -> None:
    """SIGTERM to every child still running (its whole session), SIGKILL to any left after
    the grace period; waits for each (no zombie, no orphan)."""
    live = [c for c in children if c.proc.poll() is None]
    for c in live:
        c.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for c in live:
        try:
            c.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.signal(signal.SIGKILL)
            c.proc.wait()
