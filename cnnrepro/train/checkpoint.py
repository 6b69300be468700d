"""Checkpoints written atomically (cnnrepro.files): a crash at any moment leaves either the previous
checkpoint or the new one, never half of one."""

import os
import sys
from pathlib import Path

import torch

from cnnrepro.files import atomic_file


def save_atomic(state: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as f:
        torch.save(state, f)


def load_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None if there is none. A damaged one (it cannot be read back)
    is moved aside to ``<name>.corrupt``, said aloud, and counts as none: the run starts over."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises many kinds; each means the same here
        corrupt = path.with_name(path.name + ".corrupt")
        os.replace(path, corrupt)
        print(
            f"cnnrepro: checkpoint {path} is damaged ({type(error).__name__}: {str(error)[:100]}); "
            f"moved to {corrupt}, training this run from the start",
            file=sys.stderr,
        )
        return None
