"""Atomic file writes: a failed or interrupted write never leaves a truncated file behind.

The data go to a temporary file in the destination folder, are flushed and fsync'ed, and the
temporary file then replaces the destination with :func:`os.replace` (atomic on POSIX and Windows
for paths on one file system). On any exception the temporary file is removed and the previous
file, if there was one, is untouched.

Files that belong together (a label map and its JSON sidecar) are written with
:func:`atomic_write_group`: every temporary file is written and fsync'ed first, and only then are
they renamed into place, so a failure while writing any of them changes none of them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO


def _open_temp(path: Path, mode: str, encoding: str | None) -> tuple[IO, str]:
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic writes support modes 'wb' and 'w', not {mode!r}")
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        if mode == "w":
            return os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=""), tmp
        return os.fdopen(fd, "wb"), tmp
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise


def _finish(f: IO) -> None:
    """Flush and fsync an open temporary file, then close it."""
    with f:
        f.flush()
        os.fsync(f.fileno())


def _set_mode(tmp: str, path: Path) -> None:
    if path.exists():  # keep the permissions of the file being replaced
        with contextlib.suppress(OSError):
            os.chmod(tmp, path.stat().st_mode & 0o7777)
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file for writing; on clean exit it atomically becomes ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (text, ``encoding`` defaults to UTF-8).
    """
    with atomic_write_group([path], mode, encoding) as (f,):
        yield f


@contextlib.contextmanager
def atomic_write_group(
    paths: Sequence[str | Path], mode: str = "wb", encoding: str | None = None
) -> Iterator[list[IO]]:
    """Temporary files for several ``paths`` at once; they replace the destinations only after all
    of them were written and fsync'ed without error (then one rename each, in order)."""
    paths = [Path(p) for p in paths]
    opened: list[tuple[IO, str]] = []
    try:
        for p in paths:
            opened.append(_open_temp(p, mode, encoding))
        yield [f for f, _ in opened]
        for f, _ in opened:
            _finish(f)
        for (_, tmp), p in zip(opened, paths):
            _set_mode(tmp, p)
        for (_, tmp), p in zip(opened, paths):
            os.replace(tmp, p)
        for folder in {p.parent if str(p.parent) else Path(".") for p in paths}:
            _fsync_dir(folder)
    except BaseException as e:
        for f, tmp in opened:
            with contextlib.suppress(OSError):
                f.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            # "[Errno 28] No space left on device" alone does not say what was not saved.
            names = ", ".join(str(p) for p in paths)
            raise OSError(e.errno, f"{e.strerror or e}; not saved: {names} (any previous version "
                                   "is unchanged)") from e
        raise


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened."""
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)
