"""Checkpoints written atomically: a temp file in the same directory, fsync, then a rename, so a
crash at any moment leaves either the previous checkpoint or the new one, never half of one."""

import os
import tempfile
from pathlib import Path

import torch


def save_atomic(state: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        Path(temp).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
