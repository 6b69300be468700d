"""Datasets held in memory as tensors: the embedded default ``mnist5k`` (no network needed) and
``mnist``, ``fashion-mnist``, ``cifar10`` downloaded with verified checksums.

``load_dataset(name)`` returns a :class:`Dataset` (train and test splits, normalized float
tensors); :func:`batches` yields seeded mini-batches from one split.
"""

from cnnrepro.data.batches import batches, random_crop_flip
from cnnrepro.data.dataset import Dataset, Split
from cnnrepro.data.download import DownloadError, RemoteFile, default_data_dir, fetch
from cnnrepro.data.registry import DATASETS, dataset_resolution, list_datasets, load_dataset

__all__ = [
    "DATASETS",
    "Dataset",
    "DownloadError",
    "RemoteFile",
    "Split",
    "batches",
    "dataset_resolution",
    "default_data_dir",
    "fetch",
    "list_datasets",
    "load_dataset",
    "random_crop_flip",
]
