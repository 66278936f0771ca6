"""One error type for every bad input, so the CLI can print it without a traceback."""

from __future__ import annotations

from pydantic import ValidationError


class MeshcastError(ValueError):
    """A bad input: the message names the field, the value and what would be valid."""


class NoFeasibleConfig(MeshcastError):
    """A search found no configuration to run (none valid, or none fits); ``short`` says why in
    a few words, for tables that list it as an outcome."""

    def __init__(self, message: str, short: str) -> None:
        super().__init__(message)
        self.short = short


def from_validation_error(err: ValidationError, where: str) -> MeshcastError:
    """Turn a pydantic ValidationError into one readable MeshcastError.

    Each line reads ``<where>.<field>: <problem> (got <value>)``; a single problem is one line
    (``invalid <where>: <where>.<field>: ...``).
    """
    lines = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "__root__")
        field = f"{where}.{loc}" if loc else ""
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        value = e.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{field}: {msg}{shown}" if field else msg)
    if len(lines) == 1:
        return MeshcastError(f"invalid {where}: {lines[0]}")
    return MeshcastError("invalid " + where + ":\n  " + "\n  ".join(lines))
