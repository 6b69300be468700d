"""Datasets: the embedded default, and verified downloads exercised against a local HTTP server
that serves files generated here in the real formats (IDX gzip, the CIFAR-10 pickle tarball)."""

import functools
import gzip
import hashlib
import http.server
import io
import pickle
import socket
import struct
import tarfile
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from cnnrepro.data import (
    DatasetError,
    DownloadError,
    RemoteFile,
    batches,
    dataset_resolution,
    fetch,
    folders,
    load_dataset,
    no_downloads,
    random_crop_flip,
)
from cnnrepro.data.archives import load_cats_vs_dogs, load_oxflower17
from cnnrepro.data.formats import read_idx
from cnnrepro.data.registry import load_cifar10, load_idx_dataset, stratified_split

# --- files in the real formats ----------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (uint8 data) as MNIST publishes them, gzip-compressed."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def cifar_tarball(train_per_batch: int, test: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, n in [(f"data_batch_{i}", train_per_batch) for i in range(1, 6)] + [("test_batch", test)]:
            batch = {
                b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                b"labels": list(rng.integers(0, 10, n)),
            }
            payload = pickle.dumps(batch)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def mnist_like_files(n_train=60, n_test=20, seed=0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (n_train, 28, 28))),
        "train-labels-idx1-ubyte.gz": idx_bytes(np.arange(n_train) % 10),
        "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (n_test, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": idx_bytes(np.arange(n_test) % 10),
    }


# --- a local HTTP server on 127.0.0.1 -----------------------------------------------------------


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path_factory):
    """(directory it serves, base URL); stopped after the test."""
    root = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def serve(root, files: dict[str, bytes], base_url: str) -> list[RemoteFile]:
    for name, data in files.items():
        (root / name).write_bytes(data)
    return [RemoteFile(name, base_url + name, md5(data)) for name, data in files.items()]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when this returns: connections are refused


# --- downloads -----------------------------------------------------------------------------------


def test_download_verify_and_load_an_idx_dataset(server, tmp_path):
    root, url = server
    files = serve(root, mnist_like_files(), url)
    ds = load_idx_dataset("mnist", files, tmp_path / "data")
    assert ds.train.images.shape == (60, 1, 28, 28) and ds.test.images.shape == (20, 1, 28, 28)
    assert ds.train.images.dtype == torch.float32 and ds.train.labels.dtype == torch.int64
    assert ds.num_classes == 10 and int(ds.train.labels.min()) == 0 and int(ds.train.labels.max()) == 9
    assert abs(ds.train.images.mean().item()) < 1e-3 and abs(ds.train.images.std().item() - 1) < 1e-2
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(
        f.filename for f in files
    )


def test_present_files_are_used_without_network(server, tmp_path):
    root, url = server
    files = serve(root, mnist_like_files(), url)
    first = load_idx_dataset("mnist", files, tmp_path)
    offline = [RemoteFile(f.filename, f"http://127.0.0.1:{closed_port()}/{f.filename}", f.md5) for f in files]
    again = load_idx_dataset("mnist", offline, tmp_path)
    assert torch.equal(first.train.images, again.train.images)


def test_no_downloads_uses_the_files_in_place_and_fetches_nothing(server, tmp_path):
    root, url = server
    files = serve(root, mnist_like_files(), url)
    with no_downloads(), pytest.raises(DownloadError, match="is not here"):
        load_idx_dataset("mnist", files, tmp_path / "data")
    assert not (tmp_path / "data").exists(), "nothing made"
    first = load_idx_dataset("mnist", files, tmp_path / "data")
    assert first.notes["classes"] == [str(d) for d in range(10)]
    with no_downloads():
        again = load_idx_dataset("mnist", files, tmp_path / "data")
    assert torch.equal(first.train.images, again.train.images)
    target = tmp_path / "data" / "mnist" / files[0].filename
    target.write_bytes(b"truncated")
    with no_downloads(), pytest.raises(DownloadError, match="fails its checksum"):
        load_idx_dataset("mnist", files, tmp_path / "data")
    assert target.read_bytes() == b"truncated", "left as it was: not moved aside, not fetched again"


def test_checksum_mismatch_is_an_error_and_leaves_nothing_behind(server, tmp_path):
    root, url = server
    (root / "f.gz").write_bytes(b"not what was published")
    remote = RemoteFile("f.gz", url + "f.gz", md5(b"the published bytes"))
    with pytest.raises(DownloadError, match=r"MD5 .* expected .*by hand from http://127\.0\.0\.1"):
        fetch(remote, tmp_path)
    assert list(tmp_path.iterdir()) == [], "no partial or unverified file may stay"


def test_truncated_file_on_disk_is_moved_aside_and_fetched_again(server, tmp_path):
    root, url = server
    files = serve(root, mnist_like_files(), url)
    target = tmp_path / files[0].filename
    target.write_bytes((root / files[0].filename).read_bytes()[:100])  # an interrupted earlier download
    path = fetch(files[0], tmp_path)
    assert path == target and md5(target.read_bytes()) == files[0].md5
    assert (tmp_path / (files[0].filename + ".corrupt")).exists()


def test_truncated_download_is_an_error(server, tmp_path):
    root, url = server
    data = mnist_like_files()["train-images-idx3-ubyte.gz"]
    (root / "t.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DownloadError, match="truncated or changed"):
        fetch(RemoteFile("t.gz", url + "t.gz", md5(data)), tmp_path)
    assert not (tmp_path / "t.gz").exists()


def test_http_404_names_the_url(server, tmp_path):
    _, url = server
    with pytest.raises(DownloadError, match=r"HTTP 404.*by hand from .*missing\.gz"):
        fetch(RemoteFile("missing.gz", url + "missing.gz", "0" * 32), tmp_path)


def test_no_network_gives_the_clear_error(tmp_path):
    remote = RemoteFile("x.gz", f"http://127.0.0.1:{closed_port()}/x.gz", "0" * 32)
    with pytest.raises(DownloadError, match=r"failed: .*offline\?.*put it at"):
        fetch(remote, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cifar10_tarball(server, tmp_path):
    root, url = server
    data = cifar_tarball(train_per_batch=4, test=6)
    (root / "cifar-10-python.tar.gz").write_bytes(data)
    remote = RemoteFile("cifar-10-python.tar.gz", url + "cifar-10-python.tar.gz", md5(data))
    ds = load_cifar10(tmp_path, remote)
    assert ds.train.images.shape == (20, 3, 32, 32) and ds.test.images.shape == (6, 3, 32, 32)
    assert ds.image_size == dataset_resolution("cifar10")
    assert ds.augment and not load_dataset("mnist5k").augment
    assert len(ds.mean) == 3
    assert ds.notes["classes"][:3] == ["airplane", "automobile", "bird"] and len(ds.notes["classes"]) == 10


def test_idx_reader_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc"))
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)


# --- the embedded default and the loaders ---------------------------------------------------------


def test_mnist5k_is_embedded_and_split_as_documented():
    ds = load_dataset("mnist5k")
    assert ds.train.images.shape == (4000, 1, 28, 28) and ds.test.images.shape == (1000, 1, 28, 28)
    assert torch.bincount(ds.train.labels).tolist() == [400] * 10
    assert torch.bincount(ds.test.labels).tolist() == [100] * 10
    assert abs(ds.train.images.mean().item()) < 1e-3 and abs(ds.train.images.std().item() - 1) < 1e-2
    assert torch.equal(load_dataset("mnist5k").test.images, ds.test.images), "the split is fixed"


def test_stratified_split_takes_the_first_of_each_class_round_robin():
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    train, test = stratified_split(labels, 2)
    assert train.tolist() == [0, 3, 1, 4] and test.tolist() == [2, 5]
    ds = load_dataset("mnist5k")
    assert torch.bincount(ds.train.labels[:100]).tolist() == [10] * 10, "every prefix is balanced"


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist5k"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*mnist5k"):
        dataset_resolution("imagenet")


def test_a_datasets_resolution_is_known_before_it_loads_and_holds_once_loaded():
    assert load_dataset("mnist5k").image_size == dataset_resolution("mnist5k") == 28


def test_resized_keeps_labels_and_changes_size():
    ds = load_dataset("mnist5k").resized(32)
    assert ds.train.images.shape == (4000, 1, 32, 32) and ds.image_size == 32


def collect(split, **kwargs):
    return [(x.clone(), y.clone()) for x, y in batches(split, **kwargs)]


def test_batches_repeat_with_the_seed_and_differ_without_it():
    split = load_dataset("mnist5k").test
    one = collect(split, batch_size=128, generator=torch.Generator().manual_seed(1))
    two = collect(split, batch_size=128, generator=torch.Generator().manual_seed(1))
    other = collect(split, batch_size=128, generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(one, two, strict=True))
    assert not torch.equal(one[0][1], other[0][1])
    assert sum(len(y) for _, y in one) == len(split) and len(one[-1][1]) == 1000 % 128
    assert (
        len(collect(split, batch_size=128, generator=torch.Generator().manual_seed(1), drop_last=True)) == 7
    )


def test_evaluation_batches_are_in_order_and_unaugmented():
    split = load_dataset("mnist5k").test
    (x, y), *_ = collect(split, batch_size=10, shuffle=False)
    assert torch.equal(x, split.images[:10]) and torch.equal(y, split.labels[:10])
    with pytest.raises(ValueError, match="Generator"):
        next(batches(split, 10))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(split, 0, shuffle=False))


def test_augmentation_is_seeded_and_only_where_asked():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    a = random_crop_flip(images, torch.Generator().manual_seed(0))
    b = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and torch.equal(a, b)
    crops = {random_crop_flip(images, torch.Generator().manual_seed(s)).sum().item() for s in range(8)}
    assert len(crops) > 1, "different seeds give different crops"
    split = load_dataset("mnist5k").test
    plain = next(batches(split, 16, torch.Generator().manual_seed(0)))
    augmented = next(batches(split, 16, torch.Generator().manual_seed(0), augment=True))
    assert torch.equal(plain[1], augmented[1]) and not torch.equal(plain[0], augmented[0])


# --- the tutorials' image datasets, from generated archives of the same shapes ------------------


def jpeg(color) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (10, 7), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def flowers17_files(per_class: int) -> dict[str, bytes]:
    """17flowers.tgz (jpg/image_NNNN.jpg, class k's images the k-th block, coloured k * 15) and a
    datasplits.mat whose split 1 has, per class, 2 trn, 1 val and the rest tst."""
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        for i in range(1, 17 * per_class + 1):
            data = jpeg(((i - 1) // per_class * 15, 100, 100))
            info = tarfile.TarInfo(f"jpg/image_{i:04d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        notes = tarfile.TarInfo("jpg/files.txt")
        tar.addfile(notes, io.BytesIO(b""))
    blocks = [np.arange(c * per_class + 1, (c + 1) * per_class + 1) for c in range(17)]
    splits = {
        f"{name}{s}": np.concatenate([b[part] for b in blocks])
        for s in (1, 2, 3)
        for name, part in (("trn", slice(0, 2)), ("val", slice(2, 3)), ("tst", slice(3, None)))
    }
    mat = io.BytesIO()
    savemat(mat, splits)
    return {"17flowers.tgz": tgz.getvalue(), "datasplits.mat": mat.getvalue()}


def cats_dogs_zip(train: int, validation: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cats_and_dogs_filtered/vectorize.py", "# not an image")
        for split, n in (("train", train), ("validation", validation)):
            for kind, color in (("cats", (250, 0, 0)), ("dogs", (0, 0, 250))):
                for i in range(n):
                    archive.writestr(
                        f"cats_and_dogs_filtered/{split}/{kind}/{kind[:-1]}.{i}.jpg", jpeg(color)
                    )
    return buffer.getvalue()


def test_oxflower17_downloads_verifies_and_takes_its_own_split(server, tmp_path, monkeypatch):
    root, url = server
    files = tuple(serve(root, flowers17_files(per_class=5), url))
    data = load_oxflower17(tmp_path / "data", 8, files, per_class=5)
    assert data.name == "oxflower17" and data.num_classes == 17 and data.notes["classes"][0] == "daffodil"
    assert (len(data.train), len(data.test)) == (17 * 3, 17 * 2), "trn1 + val1 train, tst1 tests"
    red = data.train.images[:, 0, 4, 4].long()  # each class's colour, through JPEG
    assert (red - data.train.labels * 15).abs().max() <= 3
    assert data.notes["archive_md5"] == files[0].md5 and "split 1" in data.notes["split"]
    offline = tuple(RemoteFile(f.filename, f"http://127.0.0.1:{closed_port()}/x", f.md5) for f in files)
    monkeypatch.setattr(folders, "decode", lambda *a: pytest.fail("decoded again"))
    again = load_oxflower17(tmp_path / "data", 8, offline, per_class=5)
    assert torch.equal(again.train.images, data.train.images)


def test_cats_vs_dogs_is_checked_by_size_and_counts_and_its_sha256_recorded(server, tmp_path, capsys):
    root, url = server
    archive = cats_dogs_zip(train=3, validation=2)
    (root / "cats_and_dogs_filtered.zip").write_bytes(archive)
    remote = RemoteFile("cats_and_dogs_filtered.zip", url + "cats_and_dogs_filtered.zip", None, len(archive))
    data = load_cats_vs_dogs(tmp_path / "data", 8, remote, counts=(6, 4))
    sha256 = hashlib.sha256(archive).hexdigest()
    assert data.notes["archive_sha256"] == sha256 and sha256 in capsys.readouterr().err
    assert data.notes["classes"] == ["cats", "dogs"] and (len(data.train), len(data.test)) == (6, 4)
    with pytest.raises(DatasetError, match="6 training and 4 validation images, expected 2000 and 1000"):
        load_cats_vs_dogs(tmp_path / "data", 8, remote)
    wrong = RemoteFile(remote.filename, remote.url, None, len(archive) + 1)
    with pytest.raises(DownloadError, match=f"arrived with {len(archive):,} bytes, expected"):
        load_cats_vs_dogs(tmp_path / "other", 8, wrong)
    assert dataset_resolution("cats-vs-dogs", 150) == 150 and dataset_resolution("cifar10", 150) == 32
