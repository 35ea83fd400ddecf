"""Atomic writes and hashing (layer 0).

Every artifact is written to a temporary file in the same folder and renamed into
place, so a crash or a full disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from .errors import ArtifactError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and rename it onto ``path``."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts must be readable by a robot service
    except OSError as exc:
        raise ArtifactError(
            f"cannot write into {target.parent}",
            found=f"{type(exc).__name__}: {exc.strerror or exc}",
            fix="choose a writable folder with --out",
        ) from exc
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ArtifactError(
                f"writing {target} failed; nothing was left behind",
                found=f"{type(exc).__name__}: {exc.strerror or exc}",
                fix="free disk space or choose another --out folder",
            ) from exc
        raise


def remove_stale_temp_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files a killed process left in ``folder`` (a SIGKILL skips all cleanup).

    Only call this where no other process writes into the folder at the same time.
    """
    removed = []
    for stale in Path(folder).glob(".*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
            removed.append(stale)
    return removed


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | os.PathLike[str], *, what: str = "JSON file") -> Any:
    target = Path(path)
    if not target.is_file():
        raise ArtifactError(f"{what} not found", expected=str(target), found="no such file")
    try:
        return json.loads(target.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} {target} is corrupt", found=str(exc), fix="rebuild it") from None


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(paths: list[Path]) -> str:
    """One hash over the names and contents of several files (e.g. a calibration set)."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()


def prepare_out_dir(path: str | os.PathLike[str], *, option: str = "--out") -> tuple[Path, bool]:
    """Create ``path`` if needed and prove it is writable, before any work is done.

    Returns the folder and whether this call created it (so an early failure can remove it again).
    """
    folder = Path(path)
    created = not folder.exists()
    if folder.exists() and not folder.is_dir():
        raise ArtifactError(f"{option} {folder} is a file, not a folder", fix=f"pass a folder to {option}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if created:
            remove_if_empty(folder)
        raise ArtifactError(f"cannot write into {option} {folder}",
                            found=f"{type(exc).__name__}: {exc.strerror or exc}",
                            fix=f"choose a writable folder with {option}") from None
    return folder, created


def remove_if_empty(path: str | os.PathLike[str]) -> bool:
    """Remove ``path`` if it is an empty folder (an early failure leaves no empty --out behind)."""
    with contextlib.suppress(OSError):
        Path(path).rmdir()
        return True
    return False
