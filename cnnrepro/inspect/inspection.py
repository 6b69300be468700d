"""One image through one stored run: the layers' feature maps, the first convolution's filters and
the top-5 predictions, written as PNGs and a JSON file under ``OUT/inspect/<run>/<image>/``."""

import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from cnnrepro.data.dataset import normalized
from cnnrepro.files import write_atomic
from cnnrepro.inspect import layers, pictures
from cnnrepro.inspect.stored import InspectError, StoredRun

TOP = 5


def test_image(run: StoredRun, index: int) -> tuple[torch.Tensor, int]:
    """Test image ``index`` of the run's dataset (C, H, W), as the run saw it, and its class."""
    test = run.dataset.test
    if not 0 <= index < len(test):
        raise InspectError(
            f"--image {index}: the test split of {run.config.dataset} has images 0 to {len(test) - 1}"
        )
    return test.rows(slice(index, index + 1))[0], int(test.labels[index])


def file_image(run: StoredRun, path: Path) -> torch.Tensor:
    """An image file preprocessed as the run's dataset was: the run's channels (grey or RGB) and
    input size (bilinear), then the training split's per-channel mean and std."""
    dataset = run.dataset
    try:
        with Image.open(path) as image:
            image = image.convert("RGB" if dataset.in_channels == 3 else "L")
            image = image.resize((dataset.image_size, dataset.image_size), Image.Resampling.BILINEAR)
            pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    except (OSError, UnidentifiedImageError) as error:
        raise InspectError(f"--image {path}: not an image this can read ({error})") from None
    size = dataset.image_size
    pixels = pixels.view(size, size, -1).permute(2, 0, 1).unsqueeze(0)
    return normalized(pixels, dataset.mean, dataset.std)[0]


def top_predictions(logits: torch.Tensor, k: int = TOP, names: list[str] | None = None) -> list[dict]:
    """The ``k`` most probable classes of one image's logits, with their softmax probabilities (and
    their ``names``, where the dataset has them: an image folder's class folders)."""
    probabilities = torch.softmax(logits.double(), dim=0)
    values, classes = probabilities.topk(min(k, len(probabilities)))
    return [
        {"class": int(c), "probability": round(float(p), 6)} | ({"name": names[c]} if names else {})
        for c, p in zip(classes, values, strict=True)
    ]


def inspect_image(
    run: StoredRun, image: torch.Tensor, patterns: list[str] | None
) -> tuple[dict, torch.Tensor, list[str]]:
    """(each selected layer's maps for ``image``, the logits, the selected layers that returned no
    maps) from one forward pass of the run's model."""
    paths = layers.select_layers(run.model, patterns)
    device = next(run.model.parameters()).device
    outputs, logits = layers.capture(run.model, image.unsqueeze(0).to(device), paths)
    maps, not_maps = layers.feature_maps(outputs)
    return {path: output[0].cpu() for path, output in maps.items()}, logits[0].cpu(), not_maps


def layer_file(index: int, path: str) -> str:
    return f"{index:02d}-{path}.png"


def layer_pictures(run: StoredRun, maps: dict) -> tuple[dict, list[dict]]:
    """(a figure per layer of ``maps`` by file name, each layer's path, class, shape and file)."""
    modules = dict(run.model.named_modules())
    figures, entries = {}, []
    for index, (path, output) in enumerate(maps.items()):
        kind, name = type(modules[path]).__name__, layer_file(index, path)
        figures[name] = pictures.layer_figure(path, kind, output)
        entries.append({"path": path, "kind": kind, "shape": list(output.shape), "file": name})
    return figures, entries


def write_inspection(
    run: StoredRun,
    directory: Path,
    image: torch.Tensor,
    label: int | None,
    source: str,
    patterns: list[str] | None,
) -> Path:
    """Writes ``image``'s pictures through the run into ``directory`` (created): input.png, one
    PNG per layer, filters.png and predictions.json. Returns predictions.json's path."""
    # The report's PNG writer (no timestamp: same run, same bytes). Imported here, not above: the
    # report imports this module for its Inside the networks section.
    from cnnrepro.report.figures import png_bytes

    maps, logits, not_maps = inspect_image(run, image, patterns)
    if not maps:
        raise InspectError(f"no layer of {', '.join(not_maps)} returns feature maps (N, C, H, W)")
    figures, entries = layer_pictures(run, maps)
    figures["input.png"] = pictures.image_figure(
        pictures.input_image(image, run.dataset.mean, run.dataset.std), source
    )
    convolution = layers.first_convolution(run.model)
    if convolution is not None:
        figures["filters.png"] = pictures.filters_figure(convolution[0], convolution[1].weight)
    directory.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        write_atomic(directory / name, png_bytes(figure))
    summary = {
        "run": run.row["key"],
        "model": run.config.model,
        "seed": run.config.seed,
        "image": source,
        "true_class": label,
        "top5": top_predictions(logits, names=run.dataset.notes.get("classes")),
        "layers": entries,
        "not_feature_maps": not_maps,
        "first_convolution": convolution[0] if convolution else None,
    }
    predictions = directory / "predictions.json"
    write_atomic(predictions, json.dumps(summary, indent=2) + "\n")
    return predictions
