"""One writer per build folder (layer 0: stdlib).

Two ``edgeseg build`` runs into one ``--out`` would interleave their files and each report
the other's numbers. ``folder_lock`` takes an exclusive ``flock`` on ``<folder>/.edgeseg.lock``
for the whole build; the kernel drops it when the process dies (even on SIGKILL), so a
killed build never leaves the folder locked. The holder's pid is written in the file so
the refusal can name it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import ArtifactError

LOCK_FILE = ".edgeseg.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike[str], *, what: str = "build") -> Iterator[Path]:
    """Hold the folder's lock for the ``with`` block; ArtifactError naming the other pid if taken."""
    path = Path(folder) / LOCK_FILE
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking, as before
        yield path
        return
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ArtifactError(f"another edgeseg {what} is writing to {folder}", found=f"pid {holder}",
                                fix="wait for it to finish, or pass another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield path
    finally:
        handle.close()  # closing releases the flock
