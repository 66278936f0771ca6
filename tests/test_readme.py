"""The README's ``meshcast`` commands run as written in a clean copy of the repository (issue 15).

Commands are read from the README's code blocks: every ``meshcast ...`` line of a ``bash``/``sh``
block, and every ``$ meshcast ...`` line (with its ``\\`` continuations) of any block, the way a
newcomer copies them. Usage synopses (plain blocks without ``$``: ``--model NAME|FILE``) are not
commands. Each runs through ``bash`` with ``meshcast`` defined as this interpreter's
``python -m simulator.cli``, with the working directory a copy of the repository's tracked files
(:func:`clean_copy`: no ``.venv``, no calibration directories, nothing outside the repository), and
must exit 0 with no traceback. A command is skipped only if :data:`SKIPPED` names it exactly,
with its reason, so a new README command runs unless someone decides otherwise here.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_SLOW_FIT = "fits every held-out scheme of the published runs: minutes"
_CALIBRATION = "needs the quick CPU calibration (about 70 s of JAX micro-benchmarks)"
#: command (as :func:`readme_commands` reads it) -> why it does not run here. Only commands that
#: need an accelerator or run longer than about 30 s.
SKIPPED = {
    "meshcast validate --published benchmarks/data/published_runs.csv": _SLOW_FIT,
    "meshcast validate --published benchmarks/data/published_runs.csv --cv hardware --json":
        _SLOW_FIT,
    "meshcast fit --published benchmarks/data/published_runs.csv --out fitted/": _SLOW_FIT,
    "meshcast calibrate --backend cpu --devices 8 --quick --out cal/": _CALIBRATION,
    "meshcast fit cal/": _CALIBRATION,
    "meshcast validate --calibration cal/ --quick": _CALIBRATION + ", then real train steps",
    "meshcast predict --hardware cal/profile.yaml --model llama3-8b --chips 8 --seq-len 512 "
    "--global-batch 8":
        _CALIBRATION,
    "meshcast calibrate --backend gpu --out cal-h200/ && meshcast fit cal-h200/ --base h200":
        "needs a GPU",
    "meshcast fit cal-2x8": "needs the 2-node GPU calibration",
    "meshcast calibrate --backend gpu --coordinator node001:8476 --num-processes 2 "
    "--process-id 0 --out cal": "needs a GPU cluster",
    "meshcast calibrate --backend gpu --coordinator node001:8476 --num-processes 2 "
    "--process-id 1 --out cal": "needs a GPU cluster",
    "meshcast fit cal": "needs the multi-slice TPU calibration",
    "meshcast calibrate --backend cpu --local-processes 2 --devices 4 --quick --out cal-local":
        "minutes of calibration over two local processes (tests/test_calibration_multihost.py "
        "and test_calibration_levels.py run reduced forms)",
    "meshcast fit cal-local": "needs the two-process calibration",
    "meshcast validate --calibration cal-local --local-processes 2 --devices 4 --quick":
        "needs the two-process calibration, then real train steps",
}

_FENCE = re.compile(r"^```(\w*)\s*$")
_SHELL = {"bash", "sh", "shell", "console"}


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` after white space)."""
    return re.split(r"\s#", line, maxsplit=1)[0].strip()


def readme_commands(text: str) -> list[str]:
    """The ``meshcast`` command lines of the README's code blocks, in order, comments cut and
    continuations joined."""
    out: list[str] = []
    lang, pending = None, None
    for raw in text.splitlines():
        m = _FENCE.match(raw)
        if m:
            lang = None if lang is not None else m.group(1)
            pending = None
            continue
        if lang is None:
            continue
        line = raw.rstrip()
        if pending is not None:
            pending += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                out.append(_strip_comment(pending))
                pending = None
            continue
        if line.startswith("$ meshcast"):
            cmd = line[2:]
        elif lang in _SHELL and line.startswith("meshcast "):
            cmd = line
        else:
            continue
        if cmd.endswith("\\"):
            pending = cmd.rstrip("\\").strip()
        else:
            out.append(_strip_comment(cmd))
    return out


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def test_the_readme_has_commands_and_skips_only_what_it_still_says():
    assert len(COMMANDS) >= 10 and any(c.startswith("meshcast predict") for c in COMMANDS)
    stale = set(SKIPPED) - set(COMMANDS)
    assert not stale, f"SKIPPED names commands the README no longer has: {sorted(stale)}"
    assert not [c for c in COMMANDS if "../" in c], "a README command reads outside the repo"


def test_extraction_joins_continuations_and_cuts_comments():
    text = ("```\n$ meshcast predict --model m \\\n      --chips 8   # eight\nout\n```\n"
            "```bash\nmeshcast models  # the zoo\nmake demo\n```\n"
            "```\nmeshcast rank --model M   # a synopsis, not a command\n```\n")
    assert readme_commands(text) == ["meshcast predict --model m --chips 8", "meshcast models"]


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory) -> Path:
    """The repository's files as a clone would hold them once the working tree is committed:
    tracked and untracked-but-not-ignored files (``git ls-files --cached --others
    --exclude-standard``), never ignored outputs (``.venv``, calibration runs) or anything
    outside the repository."""
    dst = tmp_path_factory.mktemp("clone") / "meshcast"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():  # a tracked file deleted in the working tree is not copied
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


@pytest.mark.parametrize("command", COMMANDS, ids=[c[:80] for c in COMMANDS])
def test_readme_command_runs_as_written(clean_copy, command):
    if command in SKIPPED:
        pytest.skip(SKIPPED[command])
    script = f'meshcast() {{ {shlex.quote(sys.executable)} -m simulator.cli "$@"; }}\n{command}\n'
    res = subprocess.run(["bash", "-c", script], cwd=clean_copy, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg",
                                           "HOME": str(clean_copy.parent)})
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 0, f"{command}\n{res.stderr[-3000:]}"
    assert res.stdout.strip()
