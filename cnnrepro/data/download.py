"""Downloads that are verified before they count: an atomic file (cnnrepro.files), checked
against its MD5 (or, where none is published, its size) before it replaces anything.

A file already in the data directory with the right checksum is used without any network.
A file with the wrong checksum (truncated, corrupt) is reported and moved aside, never left
looking valid; a failed download says which URL failed and where to put the file by hand.
"""

import contextlib
import contextvars
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cnnrepro.files import atomic_file

TIMEOUT_S = 60
CHUNK = 1 << 20
_OFFLINE = contextvars.ContextVar("cnnrepro_offline", default=False)


class DownloadError(RuntimeError):
    """A dataset file could not be had: the message names the URL and the manual fix."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset: its name on disk, where it comes from, and its published MD5 (None where
    none is published: then its published size in bytes is what a copy is checked against)."""

    filename: str
    url: str
    md5: str | None
    size: int | None = None

    def __post_init__(self):
        if self.md5 is None and self.size is None:
            raise ValueError(f"{self.filename}: an MD5 or a size to check it by")

    @property
    def expected(self) -> str:
        return f"MD5 {self.md5}" if self.md5 else f"{self.size:,} bytes"

    def matches(self, md5: str, size: int) -> bool:
        return md5 == self.md5 if self.md5 else size == self.size


def default_data_dir() -> Path:
    """$CNNREPRO_DATA, else the user cache dir ($XDG_CACHE_HOME or ~/.cache)/cnnrepro."""
    if os.environ.get("CNNREPRO_DATA"):
        return Path(os.environ["CNNREPRO_DATA"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "cnnrepro"


@contextlib.contextmanager
def no_downloads():
    """Within it, :func:`fetch` uses the files already in place and raises a DownloadError instead
    of downloading (a report showing a dataset it finds, never fetching one)."""
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote: RemoteFile, directory: Path) -> Path:
    """The verified local copy of ``remote`` in ``directory``, downloading it if needed."""
    directory = Path(directory)
    target = directory / remote.filename
    try:
        return _fetch(remote, directory, target)
    except OSError as error:  # the data directory itself: a file, read-only, full
        raise DownloadError(
            f"cannot use {directory} for datasets: {error.strerror} ({error.filename or target}); "
            "choose another with --data-dir or $CNNREPRO_DATA"
        ) from error


def _fetch(remote: RemoteFile, directory: Path, target: Path) -> Path:
    if target.exists():
        if remote.matches(md5_of(target), target.stat().st_size):
            return target
        if _OFFLINE.get():
            raise DownloadError(f"{target} fails its checksum (left as it is: nothing is downloaded now)")
        corrupt = target.with_name(target.name + ".corrupt")
        os.replace(target, corrupt)
        print(
            f"cnnrepro: {target} failed its checksum (truncated or corrupt); "
            f"moved to {corrupt}, downloading again"
        )
    if _OFFLINE.get():
        raise DownloadError(f"{target} is not here (and nothing is downloaded now)")
    directory.mkdir(parents=True, exist_ok=True)
    hint = f"Download it by hand from {remote.url} and put it at {target} ({remote.expected})."
    with atomic_file(target) as out:  # a failed checksum raises inside: the target is never written
        actual = _download(remote.url, out, hint)
        if not remote.matches(actual, out.tell()):
            found = f"MD5 {actual}" if remote.md5 else f"{out.tell():,} bytes"
            raise DownloadError(
                f"{remote.url} arrived with {found}, expected {remote.expected} "
                f"(truncated or changed). {hint}"
            )
    return target


def _download(url: str, out, hint: str) -> str:
    """Streams ``url`` into ``out``; returns the MD5 of what arrived. Network failures become a
    DownloadError; a failed write to ``out`` (a full disk) is the caller's OSError."""
    digest = hashlib.md5(usedforsecurity=False)
    with _network(url, hint):
        response = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    with response:
        while True:
            with _network(url, hint):
                chunk = response.read(CHUNK)
            if not chunk:
                return digest.hexdigest()
            out.write(chunk)
            digest.update(chunk)


@contextlib.contextmanager
def _network(url: str, hint: str):
    try:
        yield
    except urllib.error.HTTPError as error:
        raise DownloadError(f"downloading {url} failed: HTTP {error.code} {error.reason}. {hint}") from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"downloading {url} failed: {reason} (offline?). {hint}") from error
