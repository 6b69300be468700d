"""Which code produced a result: the git commit of a checkout (``+dirty`` when tracked files differ
from it), else the installed version with a hash of the package's own files."""

import hashlib
import importlib.metadata
import subprocess
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(PACKAGE.parent), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def _package_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix in (".py", ".so") and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PACKAGE)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_revision() -> str:
    """``git:<commit>[+dirty]`` in a git checkout, ``<version>+<hash of the package files>`` else."""
    if (PACKAGE.parent / ".git").exists():
        try:
            dirty = "+dirty" if _git("status", "--porcelain", "--untracked-files=no") else ""
            return f"git:{_git('rev-parse', 'HEAD')[:12]}{dirty}"
        except (OSError, subprocess.SubprocessError):
            pass  # no git here: fall back to the files themselves
    return f"{importlib.metadata.version('cnnrepro')}+{_package_hash()}"
