"""The tutorials' image datasets, downloaded, verified and unpacked once, then read as image
folders (decoded into the memory-mapped cache at the size asked for).

``oxflower17``: Oxford's 17 Category Flowers (Nilsback & Zisserman 2006), 1,360 JPEGs in 17 classes
of 80 consecutive images, with its own splits from ``datasplits.mat``: split 1's trn1 + val1 train
(1,020), tst1 tests (340). Class names in label order as the community's loaders give them (the
dataset's page lists them unordered).

``cats-vs-dogs``: the filtered subset of Kaggle's images that TensorFlow's tutorial trains on,
train/ (2,000) and validation/ (1,000), cats and dogs. No checksum is published: its size is
checked, the zip's CRCs and the image counts too, and its SHA-256 is printed once and recorded with
the dataset so two stores can be compared.
"""

import hashlib
import os
import re
import shutil
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from cnnrepro.data.dataset import Dataset
from cnnrepro.data.download import RemoteFile, default_data_dir, fetch
from cnnrepro.data.folders import DatasetError, Layout, image_dataset, read_layout

FLOWERS17_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"
FLOWERS17_FILES = (
    RemoteFile("17flowers.tgz", FLOWERS17_URL + "17flowers.tgz", "b59a65d8d1a99cd66944d474e1289eab"),
    RemoteFile("datasplits.mat", FLOWERS17_URL + "datasplits.mat", "4828cddfd0d803c5abbdebcb1e148a1e"),
)
FLOWERS17_CLASSES = (
    "daffodil", "snowdrop", "lily valley", "bluebell", "crocus", "iris", "tigerlily", "tulip", "fritillary",
    "sunflower", "daisy", "colts' foot", "dandelion", "cowslip", "buttercup", "windflower", "pansy",
)  # fmt: skip
FLOWERS17_PER_CLASS = 80
FLOWERS17_SPLIT = 1  # of the three in datasplits.mat

CATS_DOGS_FILE = RemoteFile(
    "cats_and_dogs_filtered.zip",
    "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
    md5=None,
    size=68_606_236,
)
CATS_DOGS_COUNTS = (2000, 1000)  # train/, validation/


def unpacked(archive: Path, target: Path, members: re.Pattern) -> Path:
    """``target``, holding the archive's files whose names match ``members`` (nothing else: no
    path leaves it), unpacked once into a temp directory then renamed into place; the archive's
    SHA-256 beside them (``archive.sha256``)."""
    if target.is_dir():
        return target
    temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zip_file:
                bad = zip_file.testzip()
                if bad is not None:
                    raise DatasetError(
                        f"{archive}: {bad} fails its CRC (a damaged archive): delete it to download again"
                    )
                entries = [
                    (i.filename, lambda i=i: zip_file.open(i)) for i in zip_file.infolist() if not i.is_dir()
                ]
                write_members(entries, temp, members)
        else:
            with tarfile.open(archive) as tar:
                entries = [(m.name, lambda m=m: tar.extractfile(m)) for m in tar.getmembers() if m.isfile()]
                write_members(entries, temp, members)
        (temp / "archive.sha256").write_text(sha256_of(archive) + "\n")
        os.replace(temp, target)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    return target


def write_members(entries, directory: Path, members: re.Pattern) -> None:
    """Writes each (name, opener) entry whose name matches ``members`` below ``directory``."""
    for name, open_member in entries:
        if members.fullmatch(name):
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            with open_member() as source, open(path, "wb") as out:
                shutil.copyfileobj(source, out)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_splits(path: Path, split: int) -> dict[str, list[int]]:
    """datasplits.mat's trn/val/tst image numbers (1-based) of one of its splits."""
    from scipy.io import loadmat  # here, not at the top: importing it costs every command 0.24 s

    mat = loadmat(path)
    return {name: sorted(int(i) for i in mat[f"{name}{split}"].ravel()) for name in ("trn", "val", "tst")}


def load_oxflower17(
    data_dir: Path | None,
    size: int,
    files: tuple[RemoteFile, RemoteFile] = FLOWERS17_FILES,
    per_class: int = FLOWERS17_PER_CLASS,
) -> Dataset:
    """Oxford 17 Flowers at size x size: split 1's trn1 + val1 train, tst1 tests."""
    directory = Path(data_dir or default_data_dir()) / "oxflower17"
    tgz, mat = (fetch(remote, directory) for remote in files)
    root = unpacked(tgz, directory / "unpacked", re.compile(r"jpg/image_\d{4}\.jpg"))
    count = per_class * len(FLOWERS17_CLASSES)
    paths = [root / "jpg" / f"image_{i:04d}.jpg" for i in range(1, count + 1)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{root}: {len(missing)} of the {count} images missing ({missing[0]}...): delete it to unpack"
        )
    splits = read_splits(mat, FLOWERS17_SPLIT)

    def by_class(numbers: list[int]) -> dict[str, list[Path]]:
        found = {name: [] for name in FLOWERS17_CLASSES}
        for i in numbers:
            found[FLOWERS17_CLASSES[(i - 1) // per_class]].append(paths[i - 1])
        return found

    n = FLOWERS17_SPLIT
    rule = f"datasplits.mat split {n}: trn{n} + val{n} train, tst{n} test"
    layout = Layout.of(
        root, FLOWERS17_CLASSES, by_class(splits["trn"] + splits["val"]), by_class(splits["tst"]), rule
    )
    return image_dataset("oxflower17", layout, data_dir, size, archive_md5=files[0].md5)


def load_cats_vs_dogs(
    data_dir: Path | None,
    size: int,
    remote: RemoteFile = CATS_DOGS_FILE,
    counts: tuple[int, int] = CATS_DOGS_COUNTS,
) -> Dataset:
    """The TensorFlow tutorial's cats vs dogs at size x size: train/ trains, validation/ tests."""
    directory = Path(data_dir or default_data_dir()) / "cats-vs-dogs"
    archive = fetch(remote, directory)
    fresh = not (directory / "unpacked").is_dir()
    pattern = re.compile(r"cats_and_dogs_filtered/(train|validation)/(cats|dogs)/[^/]+")
    target = unpacked(archive, directory / "unpacked", pattern)
    root, sha256 = target / "cats_and_dogs_filtered", (target / "archive.sha256").read_text().strip()
    if fresh:
        print(
            f"cnnrepro: {archive}: SHA-256 {sha256} (none is published; recorded in env.json)",
            file=sys.stderr,
        )
    layout = read_layout(root)
    found = (len(layout.train), len(layout.test))
    if found != tuple(counts):
        raise DatasetError(
            f"{root}: {found[0]} training and {found[1]} validation images, "
            f"expected {counts[0]} and {counts[1]}: delete {target} to unpack"
        )
    return image_dataset("cats-vs-dogs", layout, data_dir, size, archive_sha256=sha256)
