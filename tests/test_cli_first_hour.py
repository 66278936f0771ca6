"""A newcomer's first hour (issue 15, part 4): --version, a forecast that does not fit says so
in its headline and JSON, no "1 micro-batches" or "0.00M tokens", rank's reproducing predict
commands, and the capacity-factor warning."""

from __future__ import annotations

from importlib.metadata import version

import pytest

from simulator.cli.main import main


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"meshcast {version('meshcast')}"
