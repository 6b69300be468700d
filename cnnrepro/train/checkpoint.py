"""Checkpoints written atomically (cnnrepro.files): a crash at any moment leaves either the previous
checkpoint or the new one, never half of one."""

from pathlib import Path

import torch

from cnnrepro.files import atomic_file


def save_atomic(state: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None if there is none."""
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
