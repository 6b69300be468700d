"""Readers of the datasets' published file formats: IDX (MNIST, Fashion-MNIST) and the CIFAR-10
python-pickle tarball."""

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch

IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (gzip-compressed or not) as a tensor of its declared shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(IDX_DTYPES[data[2]]), data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = data[4 + 4 * ndim :]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(body) != expected:
        raise ValueError(
            f"{path}: IDX header promises {expected} bytes of data, found {len(body)} (truncated?)"
        )
    return torch.from_numpy(np.frombuffer(body, dtype=dtype).astype(dtype.newbyteorder("="))).reshape(shape)


CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR_TEST_BATCHES = ["test_batch"]


def read_cifar10(
    tarball: Path,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """((train images, labels), (test images, labels)) from cifar-10-python.tar.gz.

    Images are uint8 (N, 3, 32, 32). The tarball holds pickles: only unpickle a verified file."""
    with tarfile.open(tarball, "r:gz") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def load(names):
            images, labels = [], []
            for name in names:
                if name not in members:
                    raise ValueError(f"{tarball}: {name} is missing from the archive")
                batch = pickle.load(tar.extractfile(members[name]), encoding="bytes")
                images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
            return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))

        return load(CIFAR_TRAIN_BATCHES), load(CIFAR_TEST_BATCHES)
