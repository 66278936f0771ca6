"""Argument types of the ``meshcast`` command line, its parser class, output-path checks and the
one strict JSON printer.

Every numeric flag is parsed by :func:`positive_int` or :func:`finite_float`: ``nan``, ``inf``,
``1e400``, ``1e-320`` and 10^24-sized integers are refused at parse time with one line that names
the flag, the value and the range that is valid, never a traceback or a forecast of nonsense.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

from meshcast.errors import MeshcastError

#: Largest chip count a job may have (2^24, 16.7M chips: beyond any system built).
MAX_CHIPS = 1 << 24
#: Largest sequence length, micro-batch or count of sequences (2^24 and 2^32).
MAX_SEQ_LEN = 1 << 24
MAX_SEQUENCES = 1 << 32
#: Largest global batch in tokens (2^40).
MAX_TOKENS_PER_STEP = 1 << 40
#: Largest training budget in tokens (1e18: a thousand times the largest runs published).
MAX_TRAINING_TOKENS = 1e18


class MeshcastParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``meshcast predict: error: argument
    --chips: ...; see `meshcast predict --help```, exit status 2 (no usage block)."""

    def error(self, message: str):  # type: ignore[override]
        one_line = " ".join(message.split())
        # "argument --micro-batch: ..." also names the field as specs and errors spell it
        one_line = re.sub(r"^argument (--([a-z0-9-]+))(?=[:/ ])",
                          lambda m: f"argument {m[1]} ({m[2].replace('-', '_')})", one_line)
        self.exit(2, f"{self.prog}: error: {one_line}; see `{self.prog} --help`\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but an option of one value given ``--`` (``--chips=--``) is an
        error: argparse drops the ``--`` as the end-of-options marker and stores ``[]`` without
        calling the option's type, so the value would reach the command unchecked (Python
        3.11's ``_get_values``)."""
        ns, extras = super().parse_known_args(args, namespace)
        for action in self._actions:
            if (isinstance(action, argparse._StoreAction) and action.nargs is None
                    and action.option_strings and getattr(ns, action.dest, None) == []):
                flag = action.option_strings[-1]
                self.error(f"argument {flag}: expected one value, got '--'; give the value "
                           f"after '=' (e.g. {flag}=VALUE), or drop the option")
        return ns, extras


def _number(text: str, what: str) -> float:
    """``text`` as a finite float; ArgumentTypeError naming the value otherwise."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give {what}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give {what}")
    return v


def positive_int(maximum: int = MAX_SEQUENCES, minimum: int = 1, example: int = 8):
    """An argparse type: a whole number in ``[minimum, maximum]``."""
    what = f"a whole number from {minimum} to {maximum} (e.g. {example})"

    def parse(text: str) -> int:
        t = text.strip()
        try:
            v = int(t)
        except ValueError:
            f = _number(t, what)
            if f != int(f):
                raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; give {what}") \
                    from None
            v = int(f)
        if not minimum <= v <= maximum:
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise argparse.ArgumentTypeError(f"{shown!r} is out of range; give {what}")
        return v

    parse.__name__ = "whole number"
    return parse


def finite_float(minimum: float, maximum: float, example: str, *, strict_min: bool = False):
    """An argparse type: a finite number in ``[minimum, maximum]`` (``(minimum, maximum]`` with
    ``strict_min``)."""
    what = f"a number {'>' if strict_min else '>='} {minimum:g} and <= {maximum:g} (e.g. {example})"

    def parse(text: str) -> float:
        v = _number(text.strip(), what)
        if v != 0 and abs(v) < 1e-12:
            raise argparse.ArgumentTypeError(f"{text!r} is too small to mean anything; give {what}")
        if v < minimum or v > maximum or (strict_min and v == minimum):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; give {what}")
        return v

    parse.__name__ = "number"
    return parse


def chip_list(text: str) -> list[int]:
    """An argparse type: comma-separated chip counts, each as :func:`positive_int` allows."""
    one = positive_int(MAX_CHIPS, example=256)
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            out.append(one(part))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentTypeError(f"{e} in the list {text[:60]!r} (example: "
                                             "256,512,1024)") from None
    if not out:
        raise argparse.ArgumentTypeError(f"{text!r} names no chip count (example: 256,512,1024)")
    return out


chips = positive_int(MAX_CHIPS, example=64)
seq_len = positive_int(MAX_SEQ_LEN, example=4096)
sequences = positive_int(MAX_SEQUENCES, example=512)
batch_tokens = positive_int(MAX_TOKENS_PER_STEP, example=4194304)
micro_batch = positive_int(MAX_SEQ_LEN, example=1)
virtual_stages = positive_int(1 << 14, example=2)
top = positive_int(1 << 20, example=5)
tokens = finite_float(1, MAX_TRAINING_TOKENS, "2e12")
tokens_per_param = finite_float(1e-3, 1e6, "20")
days = finite_float(1e-6, 1e6, "30", strict_min=True)
load_imbalance = finite_float(1, 1e4, "1.2")
host_seconds = finite_float(0, 10, "3.6e-4")
MAX_NAME_BYTES = 255


def output_file(flag: str, suffix: str | None = None):
    """An argparse type: a path a file can be written to: not a directory, not under a file,
    a name short enough for the file system (checked before any work)."""

    def parse(text: str) -> str:
        p = Path(text)
        if not text.strip():
            raise argparse.ArgumentTypeError("an empty path; give a file path")
        if any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in p.parts):
            raise argparse.ArgumentTypeError(f"a name in {text[:40]!r}... is longer than "
                                             f"{MAX_NAME_BYTES} bytes; give a shorter file name")
        if text.endswith(os.sep) or p.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a directory; give a file path inside "
                                             f"it (e.g. {p / ('out' + (suffix or '.csv'))})")
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise argparse.ArgumentTypeError(f"{text!r} lies under {str(parent)!r}, which "
                                                     "is a file, not a directory")
                break
        return text

    parse.__name__ = "path"
    return parse


def check_finite(obj, what: str, path: str = "", nonnegative: bool = False) -> None:
    """Raise MeshcastError naming the first NaN or infinite number in ``obj`` (dicts, lists,
    numbers), or with ``nonnegative`` the first negative one (a time, size or rate): a result
    that holds one is not printed."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        if not math.isfinite(obj) or (nonnegative and obj < 0):
            raise MeshcastError(f"{what}: the result has {path or 'a value'} = {obj}; the inputs "
                                "lead to a forecast that is not a finite, non-negative number "
                                "(check the model, the profile and the batch sizes)")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, what, f"{path}.{k}" if path else str(k), nonnegative)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, what, f"{path}[{i}]", nonnegative)
    elif hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy scalars and arrays
        check_finite(obj.tolist(), what, path, nonnegative)


def dumps_json(obj, what: str) -> str:
    """``obj`` as strict JSON (no NaN/Infinity literals); a non-finite value is a MeshcastError
    naming where it is."""
    check_finite(obj, what)
    return json.dumps(obj, indent=2, allow_nan=False)


def emit(result: dict, what: str, as_json: bool, text, nonnegative: bool = False) -> None:
    """Print a command's result once it is checked (:func:`check_finite`): ``result`` as strict
    JSON, or ``text()`` (the report of the same result)."""
    check_finite(result, what, nonnegative=nonnegative)
    print(json.dumps(result, indent=2, allow_nan=False) if as_json else text())


def quiet_broken_pipe() -> int:
    """After a BrokenPipeError on stdout (``meshcast ... | head``): point stdout at /dev/null so
    the interpreter's final flush is silent; the exit status of a process killed by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 141


def os_error_line(e: OSError) -> str:
    """One line for an OSError no loader turned into a MeshcastError: the file (shortened) and
    the system's reason."""
    name = str(e.filename) if e.filename is not None else ""
    if len(name) > 80:
        name = name[:77] + "..."
    reason = e.strerror or str(e)
    return f"{name}: {reason}; check the path" if name else f"{reason}"
