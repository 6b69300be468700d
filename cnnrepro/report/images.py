"""The report's "Training images" section: per dataset of the store, the tutorials' 4x4 grid of
training images with their class names and, beside it, the same images augmented, what the network
trains on. They are the first 16 images of one run's first training batch, drawn as its training
draws it: the order from the run's seeded data generator, the batch at its batch size and input
size, augmented by the run's own augmentation (its Keras augmentation, else the dataset's: CIFAR's
crop + flip) from its seeded augmentation generator. The same run gives the same picture.

Datasets are found without downloading or decoding anything: an image dataset from the decoded
cache env.json names (a folder, 17 Flowers, cats vs dogs), the others from the files in the store's
data directory (env.json's, else the default). A dataset not on this machine gets a note."""

import dataclasses
import json

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from cnnrepro.data import (
    DATASETS,
    Dataset,
    DatasetError,
    DownloadError,
    batches,
    dataset_label,
    load_dataset,
    no_downloads,
    open_cache,
)
from cnnrepro.data.augment import batch_augmentation
from cnnrepro.data.folders import is_folder_name
from cnnrepro.inspect.pictures import input_image
from cnnrepro.inspect.stored import recorded_cache, recorded_data_dir
from cnnrepro.report import html
from cnnrepro.report.figures import png_bytes
from cnnrepro.report.results import Results
from cnnrepro.train import derive_seed

GRID = 4  # a GRID x GRID grid: the tutorials' 16 images
NAME_BAND = 0.28  # the class name's band under each image, as a fraction of the image's height
PANEL_INCHES = 4.6


@dataclasses.dataclass(frozen=True)
class Shown:
    """What one dataset's figure shows: the run whose augmentation it draws, and how."""

    dataset: str
    model: str
    seed: int
    input_size: int | None
    augment: tuple  # RunConfig.augment's pairs; () for the dataset's own augmentation
    batch_size: int = GRID * GRID
    train_subset: int | None = None


def shown_runs(runs: pd.DataFrame) -> list[Shown]:
    """Per dataset, in the order the store ran them, the first run of each distinct augmentation."""
    found = {}
    for _, row in runs.iterrows():
        config = json.loads(row["config"]) if isinstance(row.get("config"), str) else {}
        augment = tuple(tuple(pair) for pair in config.get("augment", ()))
        dataset = config.get("dataset", row["dataset"])
        found.setdefault(
            (dataset, augment),
            Shown(
                dataset,
                row["model"],
                int(row["seed"]),
                config.get("input_size"),
                augment,
                int(config.get("batch_size", GRID * GRID)),
                config.get("train_subset"),
            ),
        )
    return list(found.values())


def stored_dataset(name: str, env: dict) -> Dataset:
    """The dataset ``name`` as the store's runs read it, without downloading or decoding: a
    DatasetError or DownloadError (one line) where it is not on this machine."""
    cache = recorded_cache(env, name)
    if cache is not None:
        return open_cache(cache, name)
    if is_folder_name(name) or DATASETS[name].resolution is None:
        raise DatasetError(f"{name}: the decoded images it trained on are not here (env.json names no cache)")
    with no_downloads():
        return load_dataset(name, recorded_data_dir(env))


def first_batch(dataset: Dataset, shown: Shown) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(the first GRID**2 images of the run's first training batch at its input size, their labels,
    and the same images as that batch's augmentation made them; None where the run has none). The
    batch is drawn as the engine draws it: a permutation of the training split (the profile's
    subset) from the run's data generator, the run's batch size, its augmentation from its
    augmentation generator, over the whole batch."""
    train = dataset.train if shown.train_subset is None else dataset.train.head(shown.train_subset)
    order = torch.randperm(len(train), generator=seeded(shown.seed, "data"))
    index = order[: shown.batch_size]
    batch = dataclasses.replace(train, images=train.images[index], labels=train.labels[index])
    head = dataclasses.replace(dataset, train=batch, test=dataset.test.head(1))
    if shown.input_size:
        head = head.resized(shown.input_size)
    n = min(GRID * GRID, len(batch))
    images, labels = head.train.rows(slice(0, n)), head.train.labels[:n]
    augmentation = batch_augmentation(shown.augment, head)
    if not augmentation:
        return images, labels, None
    whole = batches(
        head.train, len(batch), seeded(shown.seed, "augment"), shuffle=False, augment=augmentation
    )
    augmented, _ = next(whole)
    return images, labels, augmented[:n]


def seeded(seed: int, purpose: str) -> torch.Generator:
    """The run's generator for ``purpose`` at its start (train.seeding's, on the CPU)."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


def grid_panel(ax, pixels: list[np.ndarray], names: list[str], title: str) -> None:
    """Images in [0, 1] on a GRID x GRID grid, each with its class name in a band beneath it."""
    height, width = pixels[0].shape[:2]
    band = max(1, round(NAME_BAND * height))
    cell_h, cell_w = height + band, width + 1
    colour = pixels[0].ndim == 3
    canvas = np.ones((GRID * cell_h, GRID * cell_w - 1, *((3,) if colour else ())))
    for i, (image, name) in enumerate(zip(pixels, names, strict=True)):
        top, left = (i // GRID) * cell_h, (i % GRID) * cell_w
        canvas[top : top + height, left : left + width] = image
        ax.text(left + width / 2, top + height + band / 2, name, ha="center", va="center", fontsize=7)
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def images_figure(dataset: Dataset, shown: Shown) -> Figure:
    """The grid of training images and, beside it, the same images as one augmented batch."""
    images, labels, augmented = first_batch(dataset, shown)
    classes = dataset.notes.get("classes") or [str(c) for c in range(dataset.num_classes)]
    names = [str(classes[int(label)]) for label in labels]

    def pictures(batch: torch.Tensor) -> list[np.ndarray]:
        return [input_image(image, dataset.mean, dataset.std) for image in batch]

    panels = 1 if augmented is None else 2
    fig = Figure(figsize=(PANEL_INCHES * panels, PANEL_INCHES + 0.3))
    size = images.shape[-1]
    grid_panel(
        fig.add_axes((0.01, 0.01, 0.98 / panels, 0.93)),
        pictures(images),
        names,
        f"{dataset_label(dataset.name)}: {len(images)} training images, {size} x {size}",
    )
    if augmented is not None:
        grid_panel(
            fig.add_axes((0.51, 0.01, 0.48, 0.93)),
            pictures(augmented),
            names,
            f"as {shown.model} seed {shown.seed} trains on them",
        )
    return fig


def describe_augmentation(shown: Shown, dataset: Dataset) -> str:
    if shown.augment:
        return "Keras' ImageDataGenerator with " + ", ".join(f"{k}={v}" for k, v in shown.augment)
    if dataset.augment:
        return "the dataset's own: pad 4, random crop and horizontal flip (He et al.)"
    return "none: the network trains on these images as they are"


INTRO = (
    f"The first {GRID * GRID} images of the first training batch of the run named, with their class "
    "names, at its input size, and beside them the same images as that batch's augmentation made them: "
    "what the network trains on. The batch is drawn as the run's training drew it (the order from its "
    "seeded data generator, its batch size, the augmentation from its seeded augmentation generator), "
    "so the same run gives the same picture. Each dataset is shown once per distinct augmentation among "
    "its runs."
)


def images_section(results: Results) -> str:
    """The section's HTML: per dataset and augmentation, the figure and what it shows."""
    parts = [html.paragraph(INTRO)]
    loaded: dict[str, Dataset | Exception] = {}
    for number, shown in enumerate(shown_runs(results.runs)):
        if shown.dataset not in loaded:
            try:
                loaded[shown.dataset] = stored_dataset(shown.dataset, results.env)
            except (DatasetError, DownloadError, ValueError, OSError) as error:
                loaded[shown.dataset] = error
        dataset = loaded[shown.dataset]
        if isinstance(dataset, Exception):
            parts.append(html.paragraph(f"{shown.dataset}: not shown, not on this machine ({dataset})."))
            continue
        try:
            figure = images_figure(dataset, shown)
        except (DatasetError, ValueError, OSError) as error:  # a cache gone or cut short meanwhile
            parts.append(html.paragraph(f"{shown.dataset}: not shown ({error})."))
            continue
        parts += [
            html.paragraph(
                f"{shown.dataset} ({dataset.num_classes} classes, {len(dataset.train):,} training and "
                f"{len(dataset.test):,} test images); augmentation of {shown.model} seed {shown.seed}: "
                f"{describe_augmentation(shown, dataset)}."
            ),
            html.figure(
                png_bytes(figure),
                f"{shown.dataset}: training images and one augmented batch",
                f"figure-images-{number}",
            ),
        ]
    return "\n".join(parts)
