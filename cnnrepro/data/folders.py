"""A folder of one's own images as a dataset (``folder:PATH``), read as Keras' and torchvision's
tutorials lay it out, decoded once into a memory-mapped uint8 cache.

Layouts: ``PATH/train/<class>/*`` with ``PATH/validation|val|test/<class>/*`` (the first of those
that exists is the test split), or flat ``PATH/<class>/*``, split as Keras' ``validation_split=0.2``
splits it: of each class's files, sorted by name, the first ``int(0.2 * n)`` are the test split and
the rest train. No randomness, nothing to seed. Classes are the sorted folder names.

Images (JPEG, PNG, BMP, GIF's first frame, TIFF, WebP where Pillow has it) are decoded by Pillow,
turned upright by their EXIF orientation and stretched to size x size with Pillow's bilinear
filter, as Keras' ``target_size`` stretches (its own default filter is nearest). Their channels:
by the folder's content, one if every image of the folder is gray (R = G = B), else RGB; or as the
name asks, ``folder:PATH?mode=rgb`` (three channels, a gray image's copied) or
``folder:PATH?mode=gray`` (one: Pillow's ``L``, the ITU-R 601-2 luma of a colour image), as
Keras' ``color_mode`` asks. The option is part of the dataset's name, so of every run's config and
key. Hidden and non-image files are ignored; a file Pillow cannot decode is named and skipped.
The decoded images go to ``DATA/folders/<path hash>/<size>-<content key>/`` (``images.u8``, rows
train then test, each split round-robin over the classes; ``meta.json``), keyed by the file list,
sizes, modification times, the size and the mode: a changed folder is decoded again, an unchanged
one never.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnrepro.data.dataset import Dataset, Split, round_robin
from cnnrepro.data.download import default_data_dir
from cnnrepro.files import atomic_file, write_atomic

PREFIX = "folder:"
COLOR_MODES = ("auto", "rgb", "gray")  # ?mode=: by the folder's content (the default), or as asked
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
TEST_SPLITS = ("validation", "val", "test")  # Keras' name first, then torchvision's
TEST_FRACTION = 0.2  # a flat folder's split, as Keras' validation_split=0.2
CHUNK_ROWS = 256  # images read at a time when a cache is rewritten or summed
RESIZE_RULE = "stretched to {size}x{size}, Pillow bilinear (as Keras' target_size; its default is nearest)"
CACHE_VERSION = 1  # bump when decoding changes: every cache is made again


class DatasetError(RuntimeError):
    """An image folder that cannot be a dataset: one line naming the path and what is wrong."""


@dataclass(frozen=True)
class Layout:
    """A folder's files by split: (path, class index) pairs, each split round-robin over classes."""

    root: Path
    classes: tuple[str, ...]
    train: tuple[tuple[Path, int], ...]
    test: tuple[tuple[Path, int], ...]
    rule: str

    @classmethod
    def of(cls, root: Path, classes, train: dict[str, list[Path]], test: dict[str, list[Path]], rule: str):
        """The layout of each class's files by split, ``classes`` in label order."""
        classes = tuple(classes)
        return cls(root, classes, interleaved(train, classes), interleaved(test, classes), rule)


def is_folder_name(name: str) -> bool:
    return name.startswith(PREFIX)


@dataclass(frozen=True)
class FolderName:
    """``folder:PATH[?mode=auto|rgb|gray]`` parsed: the path as given and the colour mode."""

    path: Path
    mode: str = "auto"

    @classmethod
    def parse(cls, name: str) -> "FolderName":
        """A ValueError, naming the choices, for an unknown option or mode. Text after the last
        ``?`` is options only if it holds ``=`` (a path may hold a ``?`` of its own)."""
        if not is_folder_name(name) or len(name) == len(PREFIX):
            raise ValueError(f"{name!r} is not folder:PATH")
        text = name[len(PREFIX) :]
        path, mark, options = text.rpartition("?")
        if not mark or "=" not in options:
            return cls(Path(text))
        found = dict(option.partition("=")[::2] for option in options.split("&"))
        unknown = sorted(set(found) - {"mode"})
        if unknown or found.get("mode") not in COLOR_MODES or not path:
            raise ValueError(
                f"{name!r}: an image folder's options are ?mode={'|'.join(COLOR_MODES)} "
                f"(got {'?' + options}), after a path"
            )
        return cls(Path(path), found["mode"])

    @property
    def label(self) -> str:
        """As a file name: folder-<the path's last component>[-<mode>]."""
        mode = "" if self.mode == "auto" else f"-{self.mode}"
        return f"folder-{self.path.expanduser().resolve().name}{mode}"


def image_files(directory: Path) -> list[Path]:
    """The image files directly in ``directory``, sorted; hidden and non-image files left out."""
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def class_folders(directory: Path) -> dict[str, list[Path]]:
    """Each class folder's images, by sorted folder name; a DatasetError for an empty class."""
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = {folder.name: image_files(folder) for folder in folders}
    empty = [name for name, found in files.items() if not found]
    if empty:
        raise DatasetError(f"{directory}: class folder {', '.join(empty)} holds no images")
    return files


def interleaved(files: dict[str, list[Path]], classes: tuple[str, ...]) -> tuple[tuple[Path, int], ...]:
    """(path, label) pairs of every class's files, round-robin over the classes."""
    pairs = [(path, label) for label, name in enumerate(classes) for path in files.get(name, [])]
    counts = [len(files.get(name, [])) for name in classes]
    groups = [g for g in torch.arange(len(pairs)).split(counts) if len(g)]  # each class's indices
    return tuple(pairs[i] for i in round_robin(groups).tolist()) if groups else ()


def read_layout(root: Path) -> Layout:
    """The folder's classes and splits; a DatasetError (one line) if it cannot be a dataset."""
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist (or is not a directory)")
    split_layout = (root / "train").is_dir()
    train = class_folders(root / "train" if split_layout else root)
    classes = tuple(sorted(train))
    if len(classes) < 2:
        raise DatasetError(f"{root}: {len(classes)} class folder(s); a dataset needs 2 or more")
    if split_layout:
        test_dir = next((root / name for name in TEST_SPLITS if (root / name).is_dir()), None)
        if test_dir is None:
            raise DatasetError(f"{root}: train/ has no test split beside it ({', '.join(TEST_SPLITS)}/)")
        test = class_folders(test_dir)
        if set(test) != set(train):
            raise DatasetError(
                f"{root}: train/ and {test_dir.name}/ hold different classes "
                f"({', '.join(sorted(set(train) ^ set(test)))} in one only)"
            )
        rule = f"train/ and {test_dir.name}/ as given"
    else:
        cut = {name: int(TEST_FRACTION * len(files)) for name, files in train.items()}
        test = {name: files[: cut[name]] for name, files in train.items()}
        train = {name: files[cut[name] :] for name, files in train.items()}
        rule = f"flat: of each class's files, by name, the first int({TEST_FRACTION} n) test, the rest train"
        if not any(test.values()):
            raise DatasetError(f"{root}: too few images for a test split (a class needs 5 for one)")
    return Layout.of(root, classes, train, test, rule)


def cache_key(layout: Layout, size: int, mode: str = "auto") -> str:
    """A hash of every file's path, size and modification time, the split, the size and the mode
    (auto's keys are those from before there was a mode: their caches stay valid)."""
    listing = [
        [split, label, str(path.relative_to(layout.root)), path.stat().st_size, path.stat().st_mtime_ns]
        for split, pairs in (("train", layout.train), ("test", layout.test))
        for path, label in pairs
    ]
    fields = [CACHE_VERSION, size, layout.rule, layout.classes, listing]
    text = json.dumps(fields if mode == "auto" else [*fields, mode])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def decode(path: Path, size: int, mode: str = "rgb") -> np.ndarray | None:
    """(3, size, size) uint8 RGB, or (1, size, size) with mode "gray" (Pillow's L): upright by EXIF,
    stretched; None if the file does not decode."""
    try:
        with Image.open(path) as image:  # a GIF opens at its first frame
            upright = ImageOps.exif_transpose(image).convert("L" if mode == "gray" else "RGB")
            pixels = np.asarray(upright.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError):
        return None  # not an image, truncated, corrupt, or larger than Pillow will decode
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def decode_all(layout: Layout, size: int, path: Path, mode: str = "auto") -> tuple[dict, list[str], bool]:
    """Writes every decodable image's rows to ``path`` (train, then test), RGB (one channel with
    mode "gray"); returns the labels by split, the skipped files and whether every image is gray
    (R = G = B)."""
    labels, skipped, gray = {"train": [], "test": []}, [], True
    with atomic_file(path) as out:
        for split, pairs in (("train", layout.train), ("test", layout.test)):
            for file, label in pairs:
                image = decode(file, size, mode)
                if image is None:
                    skipped.append(str(file.relative_to(layout.root)))
                    print(f"cnnrepro: skipped {file}: Pillow cannot decode it", file=sys.stderr)
                    continue
                out.write(image.tobytes())
                labels[split].append(label)
                gray = gray and bool((image[0] == image[1:]).all())
    empty = [split for split, found in labels.items() if not found]
    if empty:
        path.unlink()
        raise DatasetError(f"{layout.root}: no decodable images in its {empty[0]} split")
    return labels, skipped, gray


def first_channel(path: Path, shape: tuple[int, ...]) -> None:
    """Rewrites the (N, 3, H, W) file at ``path`` as (N, 1, H, W): a grayscale folder's."""
    rgb = mapped(path, shape)
    with atomic_file(path) as out:
        for chunk in rgb.split(CHUNK_ROWS):
            out.write(chunk[:, :1].contiguous().numpy().tobytes())


def channel_moments(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 images in [0, 1] units, read in chunks."""
    sums = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(sums)
    for chunk in images.split(CHUNK_ROWS):
        values = chunk.double().div(255).transpose(0, 1).reshape(images.shape[1], -1)
        sums, squares = sums + values.sum(1), squares + values.square().sum(1)
    pixels = images.numel() // images.shape[1]
    mean = sums / pixels
    std = (squares / pixels - mean.square()).clamp(min=0).sqrt()
    return [round(v, 4) for v in mean.tolist()], [round(v, 4) for v in std.tolist()]


def content_sha256(path: Path, labels: bytes) -> str:
    """SHA-256 of the cache's images then ``labels``: equal hashes, equal training data."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    digest.update(labels)
    return digest.hexdigest()


COLOR_RULES = {
    "auto": "by content: {channels}",
    "rgb": "RGB, as asked (?mode=rgb)",
    "gray": "one channel, as asked (?mode=gray: Pillow's L, ITU-R 601-2 luma)",
}


def write_cache(layout: Layout, size: int, directory: Path, mode: str = "auto") -> dict:
    """Decodes every image into ``directory`` (images.u8, then meta.json); returns the meta."""
    path = directory / "images.u8"
    labels, skipped, gray = decode_all(layout, size, path, mode)
    n = len(labels["train"]) + len(labels["test"])
    if gray and mode == "auto":
        first_channel(path, (n, 3, size, size))
    one = mode == "gray" or (gray and mode == "auto")
    shape = [1 if one else 3, size, size]
    channels = "every image gray, one channel" if one else "RGB (an image is not gray)"
    mean, std = channel_moments(mapped(path, (n, *shape))[: len(labels["train"])])
    meta = {
        "shape": shape,
        "classes": list(layout.classes),
        "labels": labels,
        "mean": mean,
        "std": std,
        "content_sha256": content_sha256(path, json.dumps([layout.classes, labels]).encode()),
        "skipped_files": skipped,
        "split": layout.rule,
        "resize": RESIZE_RULE.format(size=size),
        "color": COLOR_RULES[mode].format(channels=channels),
        "source": str(layout.root),
    }
    write_atomic(directory / "meta.json", json.dumps(meta, indent=1))
    return meta


def cached(layout: Layout, size: int, data_dir: Path, mode: str = "auto") -> tuple[Path, dict]:
    """The folder's cache directory and meta, decoding it first if the folder changed; other
    caches of the same folder (older contents, other sizes) are kept. A cache is made in a temp
    directory and renamed into place whole: processes decoding at once (torchrun's ranks) each
    make their own, the first rename wins, and none ever reads a half-made one."""
    where = data_dir / "folders" / hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]
    directory = where / f"{size}-{cache_key(layout, size, mode)}"
    if not (directory / "meta.json").exists():
        where.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=where, prefix=f".{directory.name}."))
        try:
            write_cache(layout, size, temp, mode)
            try:
                os.replace(temp, directory)
            except OSError:  # another process's cache is there already
                if not (directory / "meta.json").exists():
                    raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    return directory, json.loads((directory / "meta.json").read_text())


def mapped(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """The uint8 file as a tensor, memory-mapped (copy-on-write): pages are read as rows are used."""
    return torch.from_file(str(path), shared=False, size=math.prod(shape), dtype=torch.uint8).view(shape)


def load_folder(name: str, data_dir: Path | None, size: int) -> Dataset:
    """The image folder ``folder:PATH[?mode=...]`` at size x size, from its cache (decoded when
    needed)."""
    folder = FolderName.parse(name)
    layout = read_layout(folder.path.expanduser().resolve())
    return image_dataset(name, layout, data_dir, size, mode=folder.mode)


def image_dataset(
    name: str, layout: Layout, data_dir: Path | None, size: int, mode: str = "auto", **notes
) -> Dataset:
    """The dataset of ``layout``'s images at size x size, memory-mapped from their cache (decoded
    first when the files changed); ``notes`` join the dataset's own."""
    data_dir = Path(data_dir or default_data_dir())
    try:
        directory, _ = cached(layout, size, data_dir, mode)
    except OSError as error:
        raise DatasetError(f"cannot cache {layout.root} under {data_dir}: {error.strerror}") from error
    dataset = open_cache(directory, name, source=str(layout.root))
    if dataset.notes["skipped"]:
        print(f"cnnrepro: {name}: {dataset.notes['skipped']} undecodable file(s) skipped", file=sys.stderr)
    return dataclasses.replace(dataset, notes=dataset.notes | notes)


def open_cache(directory: Path, name: str, source: str | None = None) -> Dataset:
    """The dataset ``name`` as its cache ``directory`` holds it (what a run's env.json names as
    its dataset's ``cache``), memory-mapped, without the folder it was decoded from: nothing is
    decoded or checked against the folder. A DatasetError if it is not a whole cache."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{directory} is not an image cache: {error}") from None
    n_train, n_test = len(meta["labels"]["train"]), len(meta["labels"]["test"])
    images = mapped(directory / "images.u8", (n_train + n_test, *meta["shape"]))
    mean, std = tuple(meta["mean"]), tuple(max(s, 1e-3) for s in meta["std"])
    channels = "every image gray, one channel" if meta["shape"][0] == 1 else "RGB (an image is not gray)"
    return Dataset(
        name=name,
        train=Split(images[:n_train], torch.tensor(meta["labels"]["train"]), mean, std),
        test=Split(images[n_train:], torch.tensor(meta["labels"]["test"]), mean, std),
        num_classes=len(meta["classes"]),
        mean=mean,
        std=std,
        notes={
            "source": source or meta.get("source", "?"),
            "classes": meta["classes"],
            "split": meta["split"],
            "resize": meta["resize"],
            "color": meta.get("color", COLOR_RULES["auto"].format(channels=channels)),
            "content_sha256": meta["content_sha256"],
            "skipped": len(meta["skipped_files"]),
            "skipped_files": meta["skipped_files"],
            "cache": str(directory),
        },
    )
