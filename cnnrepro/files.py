"""Atomic file writes, for every writer in the package (checkpoints, the results store, downloads,
reports): the bytes go to a temp file beside the target, are fsynced, and are renamed over the
target, so a crash at any moment leaves the old file or the new one, never a torn one.

A temp file's name holds its writer's process id (``.NAME.PID.XXXXXXXX.tmp``): one whose writer
is gone was left by a crash, and :func:`remove_stale_temp_files` deletes it."""

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.[^./]+\.tmp")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A file to write ``path`` through. It replaces ``path`` when the block ends normally; an
    exception inside the block (a failed checksum, a full disk) leaves ``path`` as it was. The
    file gets the usual permissions (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(handle, 0o666 & ~_current_umask())
        with os.fdopen(handle, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replaces ``path`` with ``data`` atomically."""
    with atomic_file(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Deletes the temp files under ``directory`` whose writer process is gone; returns them."""
    removed = []
    for temp in Path(directory).rglob(".*.tmp"):
        match = TEMP_NAME.fullmatch(temp.name)
        if match and not _alive(int(match["pid"])):
            temp.unlink(missing_ok=True)
            removed.append(temp)
    return removed
