"""A one-line progress indicator on stderr for long commands, shown only on a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    """``progress(stage, fraction=None)`` rewrites one stderr line (label, stage, percent,
    elapsed seconds); ``done()`` clears it. Silent when stderr is not a terminal."""

    def __init__(self, label: str) -> None:
        self.label, self.on, self.t0, self.width = label, sys.stderr.isatty(), time.perf_counter(), 0

    def __call__(self, stage: str, frac: float | None = None) -> None:
        if self.on:
            pct = f" {100 * frac:3.0f}%" if frac is not None else ""
            line = f"[{self.label}] {stage[:100]}{pct}  {time.perf_counter() - self.t0:5.1f} s  "
            self.width = max(self.width, len(line))
            sys.stderr.write("\r" + line)
            sys.stderr.flush()

    def done(self) -> None:
        if self.on:
            sys.stderr.write("\r" + " " * self.width + "\r")
