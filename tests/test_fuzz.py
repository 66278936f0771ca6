"""Fuzz the ``meshcast`` CLI and its spec loaders with bad inputs (issue 15, part 5).

Hypothesis draws inputs of the kinds issue 15 lists (``nan``, ``inf``, ``1e400``, ``1e-320``,
``-1``, ``0``, 10^24-sized integers, strings where numbers go, non-UTF-8 bytes, YAML nested
thousands deep, names too long for a file name, a path that is a directory, missing fields,
unknown keys, meshes that do not divide the chips, heads or experts not divisible by their axis,
unknown hardware) into the flags of ``predict``, ``rank``, ``plan`` and ``compare``, into model
YAML, hardware-profile YAML, published-runs CSV rows and calibration ``raw.csv`` files, and runs
the CLI in-process (:func:`simulator.cli.main.main`). Every case must end one of two ways:

* a clean error: a non-zero exit status and one short paragraph on stderr starting ``error:``
  (no ``Traceback`` anywhere), or
* a success: exit status 0 and, with ``--json``, strict JSON (no ``NaN``/``Infinity``) whose
  numbers are all finite and, but for signed errors and deltas, non-negative; a text report
  without ``nan``/``inf``. A profile ``fit`` writes is then forecast with, and checked the same.

Each case runs under a time limit (:data:`CASE_TIMEOUT_S`): running past it is a hang.

Bounded for ``make test`` (a fixed number of examples, ``derandomize=True``: the same cases on
every run); ``benchmarks/bench_fuzz.py`` draws thousands more from the same strategies and prints
the counts of each outcome.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import signal
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hardware_profiles.loader import PROFILE_DIR
from simulator.cli.main import main
from simulator.specs.zoo import ZOO_DIR

#: Seconds one CLI call may take before it counts as a hang (the slowest valid case here, a
#: ``fit --published`` or a ``rank`` on a few hundred chips, takes a few seconds).
CASE_TIMEOUT_S = 60.0
#: Longest error message that still reads as "one short paragraph".
MAX_ERROR_CHARS = 1500

# --- outcomes ---------------------------------------------------------------------------------

#: Verdicts: a clean error and a success pass; the rest are bugs.
PASSING = ("clean_error", "success")
BUGS = ("traceback", "hang", "nonsense", "unclear_error")


@dataclass
class Outcome:
    verdict: str  # one of PASSING or BUGS
    argv: list[str]
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.verdict}: meshcast {' '.join(map(repr, self.argv))}\n{self.detail}"


class _Hang(BaseException):
    """Raised by the alarm: a BaseException, so no ``except Exception`` in the CLI swallows it."""


def _no_constant(name: str):
    raise ValueError(f"non-strict JSON literal {name}")


#: JSON keys whose numbers may be negative: signed errors, biases, the increase of one model
#: over another (a part of an MoE may be faster than the dense one's), a fitted slope and the
#: last log-step of a fit.
_SIGNED_KEY = re.compile(r"(^|_)(error|bias|increase|delta|diff|slope|move)(_|$)")
_NON_FINITE_TEXT = re.compile(r"(?<![\w.])[-+]?(nan|inf|infinity)(?![\w])", re.IGNORECASE)


def bad_numbers(obj, path: str = "", signed: bool = False) -> list[str]:
    """Where ``obj`` (parsed JSON) holds a non-finite number, a negative one outside the signed
    keys, or an MFU above 1."""
    found: list[str] = []
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return found
    if isinstance(obj, (int, float)):
        if not math.isfinite(obj):
            found.append(f"{path} = {obj}")
        elif obj < 0 and not signed:
            found.append(f"{path} = {obj} (negative)")
        elif path.rsplit(".", 1)[-1] == "mfu" and obj > 1 + 1e-9:
            found.append(f"{path} = {obj} (MFU above 1)")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            key = str(k)
            found += bad_numbers(v, f"{path}.{key}" if path else key,
                                 signed or bool(_SIGNED_KEY.search(key)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += bad_numbers(v, f"{path}[{i}]", signed)
    return found


def run_cli(argv: list[str], timeout: float = CASE_TIMEOUT_S, as_json: bool = False,
            echoed: tuple[str, ...] = ()) -> Outcome:
    """Run ``meshcast argv`` in-process under a time limit and judge the outcome.

    stdout is strict UTF-8 as on a terminal (a lone surrogate from a non-UTF-8 argv that reaches
    it fails as it would there); stderr replaces what it cannot encode, as Python's does."""
    out_b, err_b = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_b, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(err_b, encoding="utf-8", errors="backslashreplace", write_through=True)

    def on_alarm(signum, frame):
        raise _Hang()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's RuntimeWarnings: the result is judged
            try:
                code = main(argv)
            except SystemExit as e:  # argparse
                code = e.code
    except _Hang:
        return Outcome("hang", argv, f"still running after {timeout:g} s")
    except BaseException:  # noqa: BLE001 - anything out of main() is a traceback to the user
        return Outcome("traceback", argv, traceback.format_exc(limit=-8))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    stdout = out_b.getvalue().decode("utf-8", "replace")
    stderr = err_b.getvalue().decode("utf-8", "replace")
    return judge(argv, code, stdout, stderr, as_json, echoed)


def judge(argv: list[str], code, stdout: str, stderr: str, as_json: bool,
          echoed: tuple[str, ...] = ()) -> Outcome:
    """The verdict on one finished run (see the module docstring); ``echoed``: text the input
    put in a name or id cell, which a report may print back (a row id ``nan:2``)."""
    if "Traceback" in stdout + stderr:
        return Outcome("traceback", argv, stderr[-3000:] or stdout[-3000:])
    if code != 0:
        if not isinstance(code, int):
            return Outcome("unclear_error", argv, f"exit status {code!r}; stderr {stderr!r}")
        if "error:" not in stderr:
            return Outcome("unclear_error", argv, f"exit {code} without 'error:': {stderr!r}")
        msg = stderr[stderr.index("error:"):].strip()
        if not msg.removeprefix("error:").strip():
            return Outcome("unclear_error", argv, f"an empty message: {stderr!r}")
        if "\n\n" in msg or len(msg) > MAX_ERROR_CHARS:
            return Outcome("unclear_error", argv, f"not one short paragraph "
                           f"({len(msg)} characters): {msg[:3000]!r}")
        return Outcome("clean_error", argv, msg)
    if as_json:
        try:
            data = json.loads(stdout, parse_constant=_no_constant)
        except ValueError as e:
            return Outcome("nonsense", argv, f"exit 0 but not strict JSON ({e}): {stdout[:500]!r}")
        bad = bad_numbers(data)
        if bad:
            return Outcome("nonsense", argv, "exit 0 with " + "; ".join(bad[:5]))
    else:
        for text in sorted(echoed, key=len, reverse=True):
            if text.strip():
                stdout = stdout.replace(text.strip(), "<input>")
        m = _NON_FINITE_TEXT.search(stdout)
        if m:
            s = max(0, m.start() - 200)
            return Outcome("nonsense", argv, f"exit 0 with {m[0]!r} in: {stdout[s:m.end() + 100]!r}")
    return Outcome("success", argv, stdout[:200])


# --- cases: files to write, then commands to run ------------------------------------------------

DIRECTORY = object()  # a file entry that is made a directory


@dataclass
class Case:
    """Files to write under a fresh temporary directory, then the CLI calls to run; ``{tmp}`` in
    an argument is that directory. A ``fit`` that succeeds is followed by a forecast with the
    profile it wrote (``then_predict``)."""

    label: str
    argv: list[str]
    files: dict[str, object] = field(default_factory=dict)  # name -> bytes or DIRECTORY
    as_json: bool = False
    then_predict: str | None = None  # the path of the profile a successful fit writes
    echoed: tuple[str, ...] = ()  # cell text a report may print back (see :func:`judge`)

    def __repr__(self) -> str:  # what hypothesis prints for a failing example
        shown = {k: (v if v is DIRECTORY else (v[:300] + b"..." if len(v) > 300 else v))
                 for k, v in self.files.items()}
        return f"Case({self.label!r}, argv={self.argv!r}, files={shown!r})"


def run_case(case: Case, timeout: float = CASE_TIMEOUT_S) -> list[Outcome]:
    """Write the case's files, run its calls; one outcome per call run."""
    with tempfile.TemporaryDirectory(prefix="fuzz") as tmp:
        for name, content in case.files.items():
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if content is DIRECTORY:
                path.mkdir(exist_ok=True)
            else:
                path.write_bytes(content)
        argv = [a.replace("{tmp}", tmp) for a in case.argv]
        outcomes = [run_cli(argv, timeout, case.as_json, case.echoed)]
        if case.then_predict and outcomes[0].verdict == "success":
            profile = case.then_predict.replace("{tmp}", tmp)
            outcomes.append(run_cli(["predict", "--model", "llama3-8b", "--hardware", profile,
                                     "--chips", "8", "--json"], timeout, as_json=True))
        return outcomes


# --- values -----------------------------------------------------------------------------------

#: Valid but extreme: the upper bounds of the specs and flags (2^13, 2^14 layers, 2^22 widths,
#: 2^24 tokens or chips, 2^32 sequences).
EDGES = ("8192", "16384", "4194304", "16777216", "4294967296")
#: Text given where a number goes (a flag, a CSV cell).
BAD_NUMBER_TEXT = ("nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e-320", "-1",
                   "0", "-0", "0.5", "1.5", str(10**24), "1" + "0" * 400, "abc", "", " ", "0x10",
                   "1_000", "\uff18", "1e", "--", "caf\udce9", *EDGES)
#: YAML literals put where a number goes in a model or a profile.
BAD_YAML_VALUES = (".nan", ".inf", "-.inf", "1.0e+400", "1.0e-320", "-1", "0", str(10**24),
                   "'abc'", "[]", "{}", "null", "true", "3.5", "'8'", "-0.0", "1e3", *EDGES)
#: Text put where a name goes.
BAD_NAMES = ("", " ", "x" * 300, "caf\udce9", "../../etc/passwd", "a/b", "-", "h100-sxm" * 40)

#: Zoo names and profile names or aliases; and names that are none of them (near misses too).
MODELS = ("llama3-8b", "dense-6.4b", "moe-6.4b", "switch-base", "mixtral-8x7b", "qwen3-30b-a3b")
BAD_MODELS = BAD_NAMES + ("gpt-17", "LLAMA3-8B", "llama3.1-8b", "Llama-3-8B", "moe")
HARDWARE = ("h100-sxm", "tpu-v5p", "gb200-nvl72", "mi300x", "a100-sxm-80gb", "tpu-v4", "H100")
BAD_HARDWARE = BAD_NAMES + ("h900", "tpu-v9", "nvidia", "H100,", "tpu")
AXES = ("data", "fsdp", "expert", "model", "pipeline", "seq")
#: Meshes that suit some jobs and not others (a model axis that does not divide the heads, an
#: expert axis for a dense model or one that does not divide the experts, more stages than
#: layers divide into).
MESHES = ("data=-1", "data=-1", "fsdp=-1", "fsdp=-1", "data=-1,model=2", "data=2,fsdp=-1", "data=-1,expert=8",
          "data=-1,pipeline=2", "model=8", "data=-1,seq=2", "fsdp=-1,model=4,expert=2",
          "data=-1,model=3", "data=-1,expert=3", "data=-1,pipeline=5", "data=4", "model=16")
BINDS = ("model=nvlink", "data=ib", "model=nvlink,data=ib", "model=nvlink+ib", "expert=nvlink")
BAD_BINDS = ("model=foo", "model=", "fsdp=ici_x+ici_y", "=nvlink", "model=nvlink,model=ib", ",")
SLICES = ("4x4x4", "2x2", "2x2x2", "4x4")
BAD_SLICES = ("0x4", "axb", "1e400x2", f"{10**24}x1", "-1x8", "8", "x", "")


def _bad(draw, noise: int) -> bool:
    """Whether this value is to be a bad one: ``noise`` percent of the time."""
    return draw(st.integers(0, 99)) < noise


def _pick(draw, noise: int, good: tuple, bad: tuple = BAD_NUMBER_TEXT) -> str:
    """A value that is fine where it goes, or (``noise`` percent) a bad one."""
    return draw(st.sampled_from(bad if _bad(draw, noise) else good))


@st.composite
def noise_level(draw) -> int:
    """Percent of a case's values made bad: none (valid but odd jobs must forecast sanely) to
    most; one draw per case so that many cases have a single bad value to get past the rest."""
    return draw(st.sampled_from((0, 5, 10, 10, 20, 40)))


def mesh_text(draw, noise: int) -> str:
    if not _bad(draw, noise):
        return draw(st.sampled_from(MESHES))
    parts = draw(st.lists(st.tuples(
        st.sampled_from(AXES + ("tensor", "", "DATA")),
        st.sampled_from(("-1", "1", "2", "3", "4", "8", "16", "0", "-2", str(10**24), "x", "1.5",
                         "", "nan"))), max_size=4))
    text = ",".join(f"{a}={v}" for a, v in parts)
    return draw(st.sampled_from((text, text, text, "garbage", "data=-1,data=2", ",,")))


# --- model and profile YAML -----------------------------------------------------------------------

@lru_cache(maxsize=None)
def _zoo(name: str) -> str:
    return (ZOO_DIR / f"{name}.yaml").read_text()


@lru_cache(maxsize=None)
def _profile(name: str) -> str:
    return (PROFILE_DIR / f"{name}.yaml").read_text()


def _leaf_paths(obj, prefix=()) -> list[tuple]:
    """Every path to a scalar in nested dicts/lists."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaf_paths(v, (*prefix, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaf_paths(v, (*prefix, i))]
    return [prefix]


def _dict_paths(obj, prefix=()) -> list[tuple]:
    """Every path to a dict (the root included)."""
    out = [prefix] if isinstance(obj, dict) else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _dict_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _dict_paths(v, (*prefix, i))
    return out


def _at(obj, path):
    for k in path:
        obj = obj[k]
    return obj


def _alias_bomb(levels: int = 9) -> bytes:
    """A 'billion laughs' YAML: each anchor ten aliases of the one before."""
    lines = ['a0: &a0 ["x"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    lines.append(f"n_layers: *a{levels}")
    return ("\n".join(lines) + "\n").encode()


@st.composite
def yaml_file(draw, text: str) -> object:
    """The bytes (or DIRECTORY) of a spec file: ``text`` parsed, damaged, dumped; or a damaged
    file of another kind."""
    how = draw(st.sampled_from(("values",) * 6 + ("file",)))
    if how == "file":
        return draw(st.sampled_from((
            DIRECTORY, b"", b"- a\n- b\n", b"just a string\n", b"name: [unclosed\n",
            "name: caf\xe9\n".encode("latin-1"), bytes(range(256)),
            b"n_layers: " + b"[" * 5000 + b"]" * 5000 + b"\n",
            b"".join(b"  " * i + b"k%d:\n" % i for i in range(2000)) + b"  " * 2000 + b"x: 1\n",
            _alias_bomb(), b"\xef\xbb\xbf" + text.encode(), text.encode() + b"\x00",
            text.encode()[: len(text) // 2], text.encode("utf-16"),
            b"!!python/object/apply:os.system ['true']\n")))
    data = yaml.safe_load(text)
    literals = {}
    for i in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(("set", "set", "set", "delete", "unknown_key", "long_name")))
        leaves = _leaf_paths(data)
        if kind == "set" and leaves:
            path = draw(st.sampled_from(leaves))
            mark = f"@@{i}@@"
            _at(data, path[:-1])[path[-1]] = mark
            literals[mark] = draw(st.sampled_from(BAD_YAML_VALUES + ("7", "3", "1", "12")))
        elif kind == "delete" and leaves:
            path = draw(st.sampled_from(leaves))
            holder = _at(data, path[:-1])
            if isinstance(holder, dict):
                del holder[path[-1]]
            else:
                holder.pop(path[-1])
        elif kind == "unknown_key":
            path = draw(st.sampled_from(_dict_paths(data)))
            _at(data, path)[draw(st.sampled_from(("bogus", "n_layer", "Value", "x" * 300)))] = 1
        elif kind == "long_name" and isinstance(data, dict) and "name" in data:
            data["name"] = draw(st.sampled_from(BAD_NAMES))
    out = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6)
    for mark, lit in literals.items():
        out = out.replace(f"'{mark}'", lit).replace(mark, lit)
    return out.encode("utf-8", "surrogateescape")


def _spec_arg(draw, files: dict, noise: int, good, bad_names, bad_paths, bases, spec,
              prefix: str) -> str:
    """A spec argument: one of ``good``, or (``noise``) a bad name, a path that is no file, or
    a damaged YAML file written from ``spec(base)``."""
    if not _bad(draw, noise):
        return draw(st.sampled_from(good))
    how = draw(st.sampled_from(("name", "file", "file", "path")))
    if how == "name":
        return draw(st.sampled_from(bad_names))
    if how == "path":
        return draw(st.sampled_from(bad_paths))
    name = f"{prefix}{len(files)}.yaml"
    files[name] = draw(yaml_file(spec(draw(st.sampled_from(bases)))))
    return "{tmp}/" + name


def model_arg(draw, files: dict, noise: int) -> str:
    """A ``--model`` argument (:func:`_spec_arg` over the zoo)."""
    return _spec_arg(draw, files, noise, MODELS, BAD_MODELS,
                     ("{tmp}/missing.yaml", "{tmp}", "{tmp}/" + "a" * 300 + ".yaml",
                      "{tmp}/a.yaml/b.yaml", "/dev/null"),
                     ("llama3-8b", "moe-6.4b", "switch-base", "qwen3-30b-a3b"), _zoo, "model")


def hardware_arg(draw, files: dict, noise: int) -> str:
    """A ``--hardware`` argument (:func:`_spec_arg` over the profiles)."""
    return _spec_arg(draw, files, noise, HARDWARE, BAD_HARDWARE,
                     ("{tmp}/missing.yaml", "{tmp}", "{tmp}/" + "b" * 300 + ".yaml", "/dev/null"),
                     ("h100-sxm", "tpu-v5p", "gb200-nvl72"), _profile, "hw")


# --- CLI commands ---------------------------------------------------------------------------------

def _opt(draw, argv: list[str], flag: str, p: float, noise: int, good: tuple,
         bad: tuple = BAD_NUMBER_TEXT) -> None:
    """With chance ``p``, append ``flag=value`` (the ``=`` form: ``-1`` is a value), the value
    from ``good`` or (``noise``) ``bad``."""
    if draw(st.integers(0, 99)) < 100 * p:
        argv.append(f"{flag}={_pick(draw, noise, good, bad)}")


def _flags(draw, argv: list[str], flags: tuple[str, ...], p: float = 0.2) -> None:
    for flag in flags:
        if draw(st.integers(0, 99)) < 100 * p:
            argv.append(flag)


def _finish(draw, argv: list[str], noise: int, label: str, files: dict, out: tuple = ()) -> Case:
    """Add an output path (good or bad) and ``--json`` (half the cases)."""
    if out:
        _opt(draw, argv, out[0], 0.1, max(noise, 50), out[1:2], out[2:])
    as_json = draw(st.booleans())
    if as_json:
        argv.append("--json")
    return Case(label, argv, files, as_json)


@st.composite
def predict_case(draw) -> Case:
    files: dict = {}
    n = draw(noise_level())
    argv = ["predict", "--model", model_arg(draw, files, n), "--hardware",
            hardware_arg(draw, files, n),
            f"--chips={_pick(draw, n, ('8', '8', '16', '4', '1', '64'))}",
            f"--mesh={mesh_text(draw, n)}"]
    _opt(draw, argv, "--bind", 0.2, n, BINDS, BAD_BINDS)
    if draw(st.integers(0, 9)):
        _opt(draw, argv, "--global-batch", 0.3, n, ("8", "16", "64", "7", "1"))
    else:
        _opt(draw, argv, "--global-batch-tokens", 0.9, n, ("65536", "8192", "100"))
    _opt(draw, argv, "--micro-batch", 0.3, n, ("1", "2", "4"))
    _opt(draw, argv, "--seq-len", 0.3, n, ("128", "1024", "4096", "1", "3"))
    if draw(st.integers(0, 3)) == 0:
        argv.append("--pipeline-schedule=interleaved")
        _opt(draw, argv, "--virtual-stages", 0.7, n, ("2", "4", "3"))
    _opt(draw, argv, "--load-imbalance", 0.15, n, ("1", "1.5", "2"))
    _opt(draw, argv, "--moe-host-issue-s", 0.15, n, ("0", "3.6e-4"))
    _opt(draw, argv, "--slice", 0.05, n, SLICES, BAD_SLICES)
    _opt(draw, argv, "--precision", 0.2, n, ("fp8", "fp4", "fp32"), ("int4", "FP8", ""))
    _opt(draw, argv, "--remat", 0.2, n, ("none", "full"), ("some",))
    _opt(draw, argv, "--moe-dispatcher", 0.1, n, ("deepep",), ("nccl",))
    _flags(draw, argv, ("--distributed-optimizer", "--tp-comm-overlap", "--ep-comm-overlap",
                        "--fused-loss"))
    _opt(draw, argv, "--profiles", 0.03, 100, (), ("{tmp}", "{tmp}/none", "/dev/null"))
    return _finish(draw, argv, n, "predict", files, ("--trace", "{tmp}/t.json", "{tmp}",
                                                     "{tmp}/no/t.json", "{tmp}/" + "t" * 300))


@st.composite
def rank_case(draw) -> Case:
    files: dict = {}
    n = draw(noise_level())
    argv = ["rank", "--model", model_arg(draw, files, n), "--hardware",
            hardware_arg(draw, files, n), f"--chips={_pick(draw, n, ('1', '2', '4', '8', '16'))}",
            f"--top={_pick(draw, n, ('1', '3', '5'))}"]
    _opt(draw, argv, "--global-batch", 0.3, n, ("8", "16", "64", "7"))
    _opt(draw, argv, "--seq-len", 0.3, n, ("128", "1024", "2048", "1"))
    _opt(draw, argv, "--objective", 0.3, n, ("time_to_train", "cost", "mfu"), ("speed",))
    if draw(st.booleans()):
        _opt(draw, argv, "--tokens", 0.2, n, ("1e9", "2e12"))
    else:
        _opt(draw, argv, "--tokens-per-param", 0.2, n, ("20", "1"))
    _opt(draw, argv, "--reference", 0.1, n, ("dense-6.4b", "llama3-8b"), BAD_MODELS)
    _opt(draw, argv, "--precision", 0.1, n, ("fp8", "fp32"), ("int4",))
    return _finish(draw, argv, n, "rank", files, ("--out", "{tmp}/r.csv", "{tmp}",
                                                  "{tmp}/r.csv/x.csv"))


@st.composite
def plan_case(draw) -> Case:
    files: dict = {}
    n = draw(noise_level())
    hw = ",".join(hardware_arg(draw, files, n) for _ in range(draw(st.integers(1, 2))))
    chips = ",".join(_pick(draw, n, ("8", "16", "32", "12")) for _ in range(draw(st.integers(1, 3))))
    argv = ["plan", "--model", model_arg(draw, files, n), "--hardware", hw, f"--chips={chips}"]
    _opt(draw, argv, "--global-batch", 0.3, n, ("16", "64", "256"))
    _opt(draw, argv, "--seq-len", 0.3, n, ("1024", "2048"))
    _opt(draw, argv, "--deadline", 0.3, n, ("30", "1", "0.001"))
    if draw(st.booleans()):
        _opt(draw, argv, "--tokens", 0.2, n, ("1e9", "2e12"))
    else:
        _opt(draw, argv, "--tokens-per-param", 0.2, n, ("20", "1"))
    return _finish(draw, argv, n, "plan", files)


@st.composite
def compare_case(draw) -> Case:
    files: dict = {}
    n = draw(noise_level())
    moes = [model_arg(draw, files, n) if _bad(draw, n) else
            draw(st.sampled_from(("moe-6.4b", "switch-base"))) for _ in range(draw(st.integers(1, 2)))]
    dense = model_arg(draw, files, n) if _bad(draw, n) else draw(st.sampled_from(("dense-6.4b",
                                                                                  "llama3-8b")))
    argv = ["compare", "--dense", dense, "--moe", ",".join(moes), "--hardware",
            hardware_arg(draw, files, n), f"--chips={_pick(draw, n, ('8', '16', '4'))}"]
    if draw(st.booleans()):
        argv.append(f"--mesh={_pick(draw, n, ('data=1,expert=8', 'expert=8', 'data=-1'), MESHES)}")
        _opt(draw, argv, "--micro-batch", 0.3, n, ("1", "2"))
        _opt(draw, argv, "--remat", 0.3, n, ("none", "full"), ("some",))
    _opt(draw, argv, "--global-batch", 0.3, n, ("16", "64", "8"))
    _opt(draw, argv, "--seq-len", 0.3, n, ("1024", "2048", "512"))
    _opt(draw, argv, "--tokens-per-param", 0.2, n, ("20", "1"))
    _opt(draw, argv, "--view", 0.2, n, ("flops", "active_params"), ("speed",))
    return _finish(draw, argv, n, "compare", files)


# --- published-runs CSV ---------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _published() -> tuple[list[str], tuple[dict, ...]]:
    """The header of the project's published_runs.csv and a few rows that map to cases (dense,
    MoE, pipelined, on GPUs and TPUs)."""
    from simulator.published.jobs import Case as PublishedCase
    from simulator.published.jobs import row_to_case
    from tests.published_helpers import all_rows

    rows = all_rows()
    header = list(rows[0].raw)
    picked: dict[tuple, dict] = {}
    for r in rows:
        if isinstance(row_to_case(r), PublishedCase):
            key = (r.text("is_moe").lower(), r.int("pp", default=1) > 1, r.text("hardware")[:3])
            picked.setdefault(key, dict(r.raw))
    return header, tuple(picked.values())


def _csv_bytes(header: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in header})
    return buf.getvalue().encode("utf-8", "surrogateescape")


@st.composite
def published_csv(draw) -> tuple[object, tuple[str, ...]]:
    """The bytes (or DIRECTORY) of a published-runs CSV, and the text put into its cells."""
    header, base = _published()
    rows = [dict(r) for r in draw(st.lists(st.sampled_from(base), min_size=1, max_size=3))]
    how = draw(st.sampled_from(("cells",) * 8 + ("file",)))
    if how == "file":
        good = _csv_bytes(header, rows)
        return draw(st.sampled_from((
            DIRECTORY, b"", good.split(b"\n")[0] + b"\n", good.replace(b"model", b"modle", 1),
            good.replace(b"\n", "\n\xe9,".encode("latin-1"), 2), good + b"a,b,c\n",
            good + b'"unclosed,' + b"x" * 100, good.replace(b",", b"\x00,", 3),
            bytes(range(256)) * 4, good.decode().encode("utf-16")))), ()
    cells = []
    for _ in range(draw(st.integers(1, 3))):
        row = draw(st.sampled_from(rows))
        col = draw(st.sampled_from(header))
        row[col] = draw(st.sampled_from(BAD_NUMBER_TEXT + BAD_NAMES + (
            "7", "3", "100000", "yes", "no", "h900", "tpu-v9", "fp3", "12", "1,024")))
        cells.append(row[col])
    return _csv_bytes(header, rows), tuple(cells)


@st.composite
def published_case(draw, slow: int = 0) -> Case:
    """``validate --published --cv none`` on a damaged CSV; with ``slow`` > 0, one case in
    about ``slow`` is a cross-validation or a ``fit --published`` (several seconds each)."""
    content, cells = draw(published_csv())
    files = {"runs.csv": content}
    cmd = "validate"
    if slow and draw(st.integers(1, slow)) == 1:
        cmd = draw(st.sampled_from(("validate_cv", "fit", "fit_one")))
    if cmd.startswith("validate"):
        cv = "none" if cmd == "validate" else draw(st.sampled_from(("hardware", "model")))
        argv = ["validate", "--published", "{tmp}/runs.csv", "--cv", cv]
        _opt(draw, argv, "--moe-host-issue-s", 0.1, 20, ("0", "3.6e-4"))
        as_json = draw(st.booleans())
        if as_json:
            argv.append("--json")
        return Case("validate --published", argv, files, as_json, echoed=cells)
    if cmd == "fit":
        return Case("fit --published", ["fit", "--published", "{tmp}/runs.csv", "--out",
                                        "{tmp}/fitted"], files, echoed=cells)
    hw = draw(st.sampled_from(("h100-sxm", "tpu-v5p", "h900")))
    return Case("fit --published --hardware", ["fit", "--published", "{tmp}/runs.csv", "--out",
                                               "{tmp}/one.yaml", "--hardware", hw], files,
                then_predict="{tmp}/one.yaml", echoed=cells)


# --- calibration raw.csv -----------------------------------------------------------------------

@lru_cache(maxsize=1)
def _raw_rows() -> tuple[dict, ...]:
    from tests.test_calibration_fit import synthetic_rows

    return tuple(synthetic_rows())


#: Numeric raw fields and values a damaged or odd file may hold.
RAW_VALUES = BAD_NUMBER_TEXT + ("1e300", "1e-300", "5e-324", "1e30", "1e-30", "3", "1024")


@st.composite
def raw_case(draw) -> Case:
    from calibration.raw import COLUMNS, KINDS

    rows = [dict(r) for r in _raw_rows()]
    how = draw(st.sampled_from(("cells",) * 5 + ("scale", "drop_kind", "file")))
    text: bytes
    if how == "cells":
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(rows) - 1))
            col = draw(st.sampled_from(("seconds", "seconds", "flops", "nbytes", "m", "k", "n",
                                        "hd", "group_size", "rep", "kind", "op", "axis", "case_id",
                                        "n_devices", "dtype")))
            rows[i][col] = draw(st.sampled_from(RAW_VALUES + KINDS + ("warp", "broadcast",
                                                                      "all_gather")))
    elif how == "scale":  # every time of one kind, or all, scaled: degenerate but well-formed
        kind = draw(st.sampled_from(KINDS + ("all",)))
        factor = draw(st.sampled_from((0.0, 1e-300, 1e-12, 1e12, 1e300, -1.0)))
        same = draw(st.booleans())  # or all made equal: no slope to fit
        for r in rows:
            if kind in ("all", r["kind"]):
                r["seconds"] = factor if same else r["seconds"] * factor
    elif how == "drop_kind":
        kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
        rows = [r for r in rows if r["kind"] not in kinds]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    w.writerows(rows)
    text = buf.getvalue().encode("utf-8", "surrogateescape")
    if how == "file":
        text = draw(st.sampled_from((
            DIRECTORY, b"", text[: len(text) // 2], text.replace(b"seconds", b"secs", 1),
            text.replace(b"\n", "\n\xe9".encode("latin-1"), 3), text + b"a,b\n",
            text.replace(b"\n", b"\n\n"), bytes(range(256)), text.replace(b",", b";"),
            text + text.split(b"\n", 1)[1])))
    return Case("fit DIR", ["fit", "{tmp}/cal"], {"cal/raw.csv": text},
                then_predict="{tmp}/cal/profile.yaml")


def any_case():
    """Every kind of case, the cheap ones more often."""
    return st.one_of(predict_case(), predict_case(), rank_case(), plan_case(), compare_case(),
                     published_case(), raw_case())


# --- the bounded tests --------------------------------------------------------------------------

def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=list(HealthCheck), print_blob=False)


def _assert_clean(case: Case) -> None:
    for o in run_case(case):
        assert o.verdict in PASSING, f"{case!r}\n{o}"


@pytest.mark.parametrize("strategy, n", [
    (predict_case, 120), (rank_case, 25), (plan_case, 20), (compare_case, 20),
    (published_case, 60), (raw_case, 60)],
    ids=lambda x: getattr(x, "__name__", str(x)))
def test_fuzz(strategy, n):
    """A bounded sample of each kind of bad input: a clean error or a clean success, never a
    traceback, a hang or exit 0 with nonsense."""

    @fuzz_settings(n)
    @given(strategy())
    def check(case):
        _assert_clean(case)

    check()


# --- what the fuzz found (regressions) ------------------------------------------------------------

def _assert_outcome(argv: list[str], verdicts: tuple[str, ...] = ("clean_error",),
                    **kw) -> Outcome:
    o = run_cli(argv, timeout=30, **kw)
    assert o.verdict in verdicts, str(o)
    return o


def test_raw_csv_integer_too_large_for_a_float(tmp_path):
    from calibration.raw import write_raw_rows
    from tests.test_calibration_fit import synthetic_rows

    rows = synthetic_rows()
    rows[5]["m"] = "1" + "0" * 400
    write_raw_rows(tmp_path, rows)
    o = _assert_outcome(["fit", str(tmp_path)])
    assert "line 7" in o.detail and "m" in o.detail


def test_rank_a_model_of_8192_layers(tmp_path):
    """ModelSpec allows 16,384 layers; rank must refuse or rank such a model, not crash."""
    text = (ZOO_DIR / "llama3-8b.yaml").read_text().replace("n_layers: 32\n", "n_layers: 8192\n")
    (tmp_path / "deep.yaml").write_text(text)
    _assert_outcome(["rank", "--model", str(tmp_path / "deep.yaml"), "--hardware", "h100-sxm",
                     "--chips", "8", "--seq-len", "128", "--global-batch", "8"], PASSING)


def test_raw_csv_collective_of_1e300_bytes(tmp_path):
    from calibration.raw import write_raw_rows
    from tests.test_calibration_fit import synthetic_rows

    rows = synthetic_rows()
    i = next(i for i, r in enumerate(rows) if r["kind"] == "collective")
    rows[i]["nbytes"] = 1e300
    write_raw_rows(tmp_path, rows)
    _assert_outcome(["fit", str(tmp_path)])


@pytest.mark.parametrize("column, value", [("n_shared_experts", "4194304"), ("top_k", "9999"),
                                           ("n_experts", "100000")])
def test_published_moe_row_out_of_the_spec_bounds_is_a_skip(tmp_path, column, value):
    from simulator.published.jobs import Case as PublishedCase
    from simulator.published.jobs import row_to_case
    from tests.published_helpers import all_rows, write_csv

    row = next(r for r in all_rows() if r.text("is_moe").lower() == "yes"
               and isinstance(row_to_case(r), PublishedCase))
    path = write_csv(tmp_path / "runs.csv", [{**row.raw, column: value}])
    o = _assert_outcome(["validate", "--published", str(path), "--cv", "none"])
    assert column in o.detail
