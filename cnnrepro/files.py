"""Atomic file writes, for every writer in the package (checkpoints, the results store, downloads,
reports): the bytes go to a temp file beside the target, are fsynced, and are renamed over the
target, so a crash at any moment leaves the old file or the new one, never a torn one."""

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """A file to write ``path`` through. It replaces ``path`` when the block ends normally; an
    exception inside the block (a failed checksum, a full disk) leaves ``path`` as it was."""
    path = Path(path)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
