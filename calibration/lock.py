"""One ``meshcast calibrate`` per directory: an exclusive ``flock`` on ``<dir>/.meshcast.lock``.

The lock file names its holder (pid, host, start time, command). The kernel drops the lock when
the holder exits, normally, on an error or killed, so a lock file left behind by a dead process
is stale by construction and the next run simply takes it; only a holder still running (or one
on another host sharing the directory over a file system without ``flock``) blocks a second run,
which fails at once naming it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import socket
import sys
from pathlib import Path

from meshcast.errors import MeshcastError

LOCK_NAME = ".meshcast.lock"


@contextlib.contextmanager
def directory_lock(directory: str | Path):
    """Hold the directory's lock for the ``with`` block, or raise MeshcastError at once."""
    path = Path(directory) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise MeshcastError(f"out: cannot create the lock {path}: {e.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
            raise MeshcastError(
                f"out: {directory} is in use by another meshcast calibrate ({holder}); wait for "
                f"it to finish or stop it, or use another --out. If that process is gone (e.g. "
                f"it ran on another host), remove {path} and run again") from None
        stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        holder = (f"pid {os.getpid()} on {socket.gethostname()} since {stamp}: "
                  f"{' '.join(sys.argv)[:300]}")
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode() + b"\n", 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)  # released: the file stays, naming nobody
    finally:
        os.close(fd)  # closing drops the flock
