"""Output paths: checked before any work, one line instead of a traceback when writing fails, one writer at a time.

A user's ``--out`` is checked by actually creating (and removing) a probe file in the nearest
existing folder: permission bits say nothing for root, and a read-only file system only shows
itself on a write.  An ``OSError`` while writing (permission, no space left) becomes a
``UserError`` saying what was kept.  ``exclusive(folder)`` holds an advisory ``flock`` on
``folder/.lock`` for a run's lifetime: a second run on the same folder is refused, and a killed
run cannot leave it stuck (the kernel drops the lock with the process).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gazebench.errors import UserError

try:  # POSIX; elsewhere runs are not locked (documented)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"


def check_output_dir(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, a folder that cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is an existing file, not a folder; choose another {option}")
    _probe(_nearest_existing(path, path, option), path, option)


def check_output_file(path: Path, option: str = "--out") -> None:
    """Refuse, before any work, a file path that is a folder or whose folder cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give the file to write, e.g. {option} {path / ('file' + (path.suffix or ''))}")
    _probe(_nearest_existing(path.parent, path, option), path, option)


def _nearest_existing(folder: Path, given: Path, option: str) -> Path:
    """The nearest existing folder at or above ``folder`` (``given``: the path as the user typed it, for messages)."""
    for candidate in [folder, *folder.absolute().parents]:
        if candidate.exists():
            if not candidate.is_dir():
                raise UserError(f"{option} {given}: {candidate} is a file, not a folder; choose another {option}")
            return candidate
    raise UserError(f"{option} {given}: no existing parent folder")  # pragma: no cover - "/" always exists


def _probe(folder: Path, path: Path, option: str) -> None:
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".gazebench-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{option} {path} cannot be written ({describe(error)} in {folder}); choose another {option} or fix the folder") from None


def describe(error: OSError) -> str:
    """An OSError in a few words: 'no space left on device', 'permission denied', ..."""
    return (error.strerror or os.strerror(error.errno or errno.EIO)).lower() if error.errno else str(error)


@contextlib.contextmanager
def writing(target: Path, kept: str) -> Iterator[None]:
    """Turn an OSError about ``target`` (or about no file: a failed write) raised inside into one line
    naming ``target``, the cause and what was ``kept``; other OSErrors pass through."""
    try:
        yield
    except OSError as error:
        folder = Path(target) if Path(target).is_dir() else Path(target).parent  # a file's temporary copy lies beside it
        if error.filename is not None and not _inside(Path(os.fsdecode(error.filename)), folder):
            raise
        where = f" ({error.filename})" if error.filename else ""
        raise UserError(f"cannot write to {target}: {describe(error)}{where}; {kept}") from None


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.absolute(), folder.absolute()
    return path == folder or folder in path.parents


@contextlib.contextmanager
def exclusive(folder: Path, option: str = "--out") -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) while the block runs; refuse if another process holds it.

    When the run stopped before writing its config (a refused or failed run), the lock file this
    call created is removed again, and the folder too if this call created it and it is empty: a
    refused run leaves nothing behind.
    """
    folder = Path(folder)
    check_output_dir(folder, option)
    created = not folder.exists()
    lock_created = not (folder / LOCK_NAME).exists()
    with writing(folder, "nothing was written"):
        folder.mkdir(parents=True, exist_ok=True)
        stream = open(folder / LOCK_NAME, "a+")  # noqa: SIM115 - held until the finally below
    try:
        if fcntl is not None:
            try:
                fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another gazebench process is writing to {folder}; wait for it to finish or choose another {option}") from None
        yield
    finally:
        stream.close()  # releases the lock
        if lock_created and not (folder / "config.yaml").exists():  # nothing of a run was written: leave no trace
            (folder / LOCK_NAME).unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
