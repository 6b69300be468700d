"""Datasets held in memory as tensors: the embedded default ``mnist5k`` (no network needed) and
``mnist``, ``fashion-mnist``, ``cifar10`` downloaded with verified checksums; ``folder:PATH``, a folder
of one's own images, decoded once into a memory-mapped cache (``folder:PATH?mode=rgb|gray``: its
channels as asked rather than by its content).

``load_dataset(name)`` returns a :class:`Dataset` (train and test splits, normalized float
tensors); :func:`batches` yields seeded mini-batches from one split.
"""

from cnnrepro.data.batches import batches, random_crop_flip
from cnnrepro.data.dataset import Dataset, Split
from cnnrepro.data.download import DownloadError, RemoteFile, default_data_dir, fetch, no_downloads
from cnnrepro.data.folders import DatasetError, FolderName, open_cache
from cnnrepro.data.registry import (
    DATASETS,
    check_dataset_name,
    dataset_label,
    dataset_resolution,
    list_datasets,
    load_dataset,
)

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DownloadError",
    "FolderName",
    "RemoteFile",
    "Split",
    "batches",
    "check_dataset_name",
    "dataset_label",
    "dataset_resolution",
    "default_data_dir",
    "fetch",
    "list_datasets",
    "load_dataset",
    "no_downloads",
    "open_cache",
    "random_crop_flip",
]
