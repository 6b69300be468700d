"""The report's Training images section: the grid is the first batch a run trained on, bit for bit,
its augmentation included; class names under each image; a dataset not on this machine is a note,
never a download."""

import base64
import io
import re

import pytest
import torch
from matplotlib.image import imread
from PIL import Image
from test_report import page_tables, record

from cnnrepro.data import Dataset, Split, download
from cnnrepro.report import images, write_report
from cnnrepro.report.__main__ import main as report_main
from cnnrepro.report.results import load_results
from cnnrepro.run import main as run_main
from cnnrepro.store import ResultsStore
from cnnrepro.train import engine

CLASSES = ("daisy", "iris", "tulip")


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    """Three classes of 12 noisy images each, train/ and validation/: augmentation shows on them."""
    root = tmp_path_factory.mktemp("flowers")
    noise = torch.Generator().manual_seed(0)
    for split, n in (("train", 12), ("validation", 3)):
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (30, 24, 3), generator=noise, dtype=torch.uint8)
                pixels[..., k] = 255 - 10 * i  # each class its own dominant colour
                Image.fromarray(pixels.numpy()).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def keras_store(flowers, tmp_path_factory):
    """The keras profile's LeNet (batch 32 at 28 x 28, shear + zoom + flip) for one epoch on the
    folder, with the engine's first training batch recorded as it was drawn."""
    out, data = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("data")
    seen = []
    drawn = engine.batches

    def recording(*args, **kwargs):
        for batch in drawn(*args, **kwargs):
            if kwargs.get("augment_generator") is not None and not seen:
                seen.append(batch)
            yield batch

    argv = ["--profile", "keras", "--models", "lenet5", "--dataset", f"folder:{flowers}", "--epochs", "1"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine, "batches", recording)
        assert run_main([*argv, "--out", str(out), "--data-dir", str(data), "--no-report"]) == 0
    return out, seen[0]


def test_the_grid_is_the_first_batch_the_run_trained_on(keras_store):
    out, (trained, trained_labels) = keras_store
    results = load_results(out)
    (shown,) = images.shown_runs(results.runs)
    assert (shown.batch_size, shown.input_size, dict(shown.augment)["horizontal_flip"]) == (32, 28, True)
    dataset = images.stored_dataset(shown.dataset, results.env)
    originals, labels, augmented = images.first_batch(dataset, shown)
    assert augmented.shape == (16, 3, 28, 28) and torch.equal(labels, trained_labels[:16])
    assert torch.equal(augmented, trained[:16]), (
        "the augmented grid is the run's own first batch, bit for bit"
    )
    assert not torch.equal(augmented, originals), "and it is augmented"


def test_the_section_shows_both_grids_with_the_class_names(keras_store, tmp_path):
    out, _ = keras_store
    assert report_main([str(out), "--out", str(tmp_path), "--no-inspect"]) == 0
    page = (tmp_path / "index.html").read_text()
    assert '<section id="images">' in page and 'href="#images"' in page
    section = page[page.index('<section id="images">') : page.index("</section>", page.index('id="images"'))]
    assert "shear_range=0.2" in section and "zoom_range=0.2" in section and "lenet5 seed 0" in section
    (png,) = re.findall(r'id="figure-images-0"[^>]*src="data:image/png;base64,([^"]+)"', section)
    picture = imread(io.BytesIO(base64.b64decode(png)), format="png")
    assert picture.shape[1] > 1.5 * picture.shape[0], "two grids side by side"
    fig = images.images_figure(*first_dataset_and_run(out))
    names = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert names == set(CLASSES), "every image named by its class folder"
    assert "3 classes (daisy, iris, tulip)" in page, "the summary names the dataset and its classes"
    assert 'id="figure-learning_curves"' in page, "the learning curves of a 3-class dataset"
    claims = {row["claim"]: row for row in page_tables(tmp_path)["claims-table"]}
    lenet = claims["LeNet (tanh, max-pool) reaches 98.69% MNIST test accuracy in 5 epochs"]
    assert lenet["verdict"] == "not measured" and "keras on folder:" in lenet["why"], "the keras claims"


def first_dataset_and_run(out):
    results = load_results(out)
    (shown,) = images.shown_runs(results.runs)
    return images.stored_dataset(shown.dataset, results.env), shown


def test_the_datasets_own_augmentation_is_cifars_crop_and_flip():
    generator = torch.Generator().manual_seed(1)
    train = Split(torch.randn(40, 3, 8, 8, generator=generator), torch.arange(40) % 10)
    dataset = Dataset("cifar10", train, train.head(4), 10, (0.0,) * 3, (1.0,) * 3, augment=True)
    shown = images.Shown("cifar10", "resnet20", 2, None, (), batch_size=20)
    originals, labels, augmented = images.first_batch(dataset, shown)
    order = torch.randperm(40, generator=images.seeded(2, "data"))[:16]
    assert torch.equal(originals, train.images[order]) and torch.equal(labels, train.labels[order])
    assert augmented.shape == originals.shape and not torch.equal(augmented, originals)
    assert "random crop" in images.describe_augmentation(shown, dataset)
    again = images.first_batch(dataset, shown)[2]
    assert torch.equal(again, augmented), "the same run, the same picture"


def test_a_dataset_not_here_is_a_note_and_nothing_is_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_download", lambda *a: pytest.fail("the report downloaded"))
    store = ResultsStore(tmp_path / "store")
    record(store, "classic", "resnet20", 0, 0.9, 0.8, dataset="cifar10", profile="paper")
    store.write_env({"data_dir": str(tmp_path / "nodata"), "dataset": {"name": "cifar10"}})
    page = write_report(store.directory, inspect=False).read_text()
    assert "cifar10: not shown, not on this machine" in page and "nodata/cifar10" in page
    assert not (tmp_path / "nodata").exists(), "nothing made in the data directory"
    assert "figure-images" not in page


def test_mnist5k_needs_nothing_but_the_package(tmp_path):
    """The default dataset is embedded: the grid shows from any store of it, the summary's dataset
    sentence names it, and with no augmentation one grid says so."""
    store = ResultsStore(tmp_path / "store")
    record(store, "classic", "lenet5", 0, 0.9, 0.8)
    store.write_env({"dataset": {"name": "mnist5k", "classes": [str(d) for d in range(10)]}})
    page = write_report(store.directory, inspect=False).read_text()
    assert 'id="figure-images-0"' in page and "the network trains on these images as they are" in page
    assert "Dataset: mnist5k: 10 classes (0, 1, 2" in page
    assert page_tables(store.directory)["summary-table"][0]["dataset"] == "mnist5k"
