"""Running ``simulator.cli.main.main`` in-process for the CLI tests: success, or a clean exit 2."""

from __future__ import annotations

from simulator.cli.main import main


def ok(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 0 and nothing on stderr; return stdout."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err and "error" not in err.lower(), err
    return out


def fails(capsys, argv: list[str], *names: str) -> str:
    """Run the CLI on bad input: exit 2, ``error:`` on stderr naming each of ``names``."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse-level errors (a non-integer --chips, ...)
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert "error:" in err, err
    msg = err[err.index("error:"):]
    assert msg.strip() != "error:", err
    for name in names:
        assert name in msg, (name, msg)
    return msg
