"""Looking inside trained networks (python -m cnnrepro.inspect, the report's Inside the networks
section): hooks record exactly what each layer returns, on both backends; inspecting writes nothing
of the store outside inspect/; other weights than runs.csv's are refused in one line; the same run
and image give the same PNG bytes; the report's section renders, in Chromium where it is installed."""

import csv
import hashlib
import io
import json
import shutil

import pytest
import torch
from matplotlib.image import imread
from PIL import Image
from test_report import CHROMIUM, CHROMIUM_FLAGS, page_tables, probe_images

from cnnrepro import models
from cnnrepro.inspect import capture, default_layers, select_layers, stored
from cnnrepro.inspect.__main__ import main as inspect_main
from cnnrepro.inspect.inspection import file_image
from cnnrepro.inspect.layers import FAMILY_RULES, feature_maps
from cnnrepro.inspect.stored import find_run, load_run
from cnnrepro.report.__main__ import main as report_main
from cnnrepro.run import main as run_main
from cnnrepro.train import weights_sha256

SMALL = {"num_classes": 10, "width": 0.125}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A smoke-profile store of one classic model, with its checkpoint (trained once)."""
    out = tmp_path_factory.mktemp("store")
    assert run_main(["--profile", "smoke", "--models", "lenet5", "--out", str(out), "--no-report"]) == 0
    return out


@pytest.fixture
def copy_of(store, tmp_path):
    """A copy of the store to change, without what other tests inspected."""
    return shutil.copytree(store, tmp_path / "copy", ignore=shutil.ignore_patterns("inspect"))


def said(capsys) -> str:
    """What the command wrote to stderr, which must be one line."""
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    return error


def file_digests(directory) -> dict:
    """Every file under ``directory`` but inspect/, by relative path: its content's sha256 and mtime."""
    return {
        str(p.relative_to(directory)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.relative_to(directory).parts[0] != "inspect"
    }


def small_model(name: str, backend: str) -> torch.nn.Module:
    """An eval-mode model at width 1/8 for input_for's size, with BatchNorm's running statistics
    made non-trivial so eval mode matters."""
    size = input_size(models.model_info(name))
    extra = {"input_size": size} if models.builder_accepts(name, "input_size") else {}
    model = models.get_model(name, backend=backend, **SMALL, **extra)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def input_size(info) -> int:
    return max(32, info.min_input_size)


def input_for(model: torch.nn.Module) -> torch.Tensor:
    size = input_size(model.info)
    return torch.randn(1, model.info.in_channels, size, size, generator=torch.Generator().manual_seed(0))


# --- hooks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["custom", "native"])
@pytest.mark.parametrize("name", ["vgg11", "alexnet", "googlenet", "resnet20", "densenet-d2l"])
@pytest.mark.parametrize("level", ["*", "*.*"])
def test_recorded_maps_are_exactly_what_each_layer_returns(name, backend, level):
    """net.<path>(its input of a forward pass) equals what the hook recorded, for every module at
    one depth: the hook keeps the layer's own output, before a later in-place ReLU changes it. (A
    hook on a child of conv-BN-ReLU makes the block run unfused, so the depths are captured apart.)"""
    torch.manual_seed(0)
    model = small_model(name, backend)
    x = input_for(model)
    paths = select_layers(model, [level])
    inputs = {}

    def keep_input(path):
        def keep(module, args):  # returns None: the forward pass goes on with its own input
            inputs[path] = args[0].clone()

        return keep

    handles = [model.get_submodule(p).register_forward_pre_hook(keep_input(p)) for p in paths]
    before = weights_sha256(model)
    outputs, logits = capture(model, x, paths)
    for handle in handles:
        handle.remove()
    assert len(outputs) >= 3
    with torch.no_grad():
        for path, output in outputs.items():
            assert torch.equal(model.get_submodule(path)(inputs[path]), output), path
        if level == "*":
            assert torch.equal(model(x), logits)
    assert weights_sha256(model) == before and not model.training, "the model is unchanged"
    assert all(not m._forward_hooks for m in model.modules()), "every hook removed"


@pytest.mark.parametrize("family", sorted({models.model_info(n).family for n in models.list_models()}))
def test_every_family_has_a_rule_that_finds_feature_maps(family):
    name = min(
        (n for n in models.list_models() if models.model_info(n).family == family), key=lambda n: (len(n), n)
    )
    assert family in FAMILY_RULES, f"{family}: add a rule to cnnrepro.inspect.layers.FAMILY_RULES"
    model = small_model(name, "native")
    outputs, _ = capture(model, input_for(model), default_layers(model))
    maps, _ = feature_maps(outputs)
    assert len(maps) >= 3, f"{name}: {list(outputs)}"


def test_patterns_stay_within_a_segment_and_a_missing_path_names_the_nearest():
    model = small_model("resnet20", "native")
    assert select_layers(model, ["layer*"]) == ["layer1", "layer2", "layer3"]
    assert select_layers(model, ["layer2.0"]) == ["layer2.0"]
    with pytest.raises(LookupError, match=r"no layer 'layer4' in resnet20; nearest: layer3, layer2, layer1"):
        select_layers(model, ["layer4"])


# --- the command ---------------------------------------------------------------------------------


def test_inspect_writes_its_pictures_and_nothing_else_of_the_store(store, capsys):
    before = file_digests(store)
    assert inspect_main([str(store), "--model", "lenet5", "--image", "3"]) == 0
    assert file_digests(store) == before, "no store file changed, none added outside inspect/"
    (run_dir,) = (store / "inspect").iterdir()
    pictures = run_dir / "test-3"
    summary = json.loads((pictures / "predictions.json").read_text())
    row = find_run(store, "lenet5", 0)
    run = load_run(store, row)
    assert run_dir.name == f"lenet5-seed0-{row['key']}"
    assert summary["true_class"] == int(run.dataset.test.labels[3])
    probabilities = [p["probability"] for p in summary["top5"]]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert [layer["path"] for layer in summary["layers"]] == ["1", "2", "4", "5"]  # LeNet's rule
    assert summary["not_feature_maps"] == ["8", "10"]
    for layer in summary["layers"]:
        image = imread(io.BytesIO((pictures / layer["file"]).read_bytes()), format="png")
        assert image.shape[0] > 50 and image.std() > 0, layer["file"]
    assert {"filters.png", "input.png"} <= {p.name for p in pictures.iterdir()}


def test_the_same_run_and_image_give_the_same_bytes(copy_of, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(torch.randint(0, 255, (50, 40, 3), dtype=torch.uint8).numpy()).save(photo)
    argv = [str(copy_of), "--model", "lenet5", "--image", str(photo), "--layers", "[0-5]", "2"]

    def pictures() -> dict:
        shutil.rmtree(copy_of / "inspect", ignore_errors=True)  # the first time: none
        assert inspect_main(argv) == 0
        return {p.name: p.read_bytes() for p in (copy_of / "inspect").rglob("*") if p.is_file()}

    first = pictures()
    assert pictures() == first
    layers = {f"{i:02d}-{i}.png" for i in range(6)}  # "2" is named twice, drawn once
    assert set(first) == layers | {"filters.png", "input.png", "predictions.json"}


def test_other_weights_than_runs_csv_records_are_refused_in_one_line(copy_of, capsys):
    (checkpoint,) = (copy_of / "checkpoints").glob("*.pt")
    state = torch.load(checkpoint, weights_only=True)
    first = next(iter(state["model"]))
    state["model"][first] = state["model"][first] + 1e-3
    torch.save(state, checkpoint)
    assert inspect_main([str(copy_of), "--model", "lenet5"]) == 2
    assert "holds other weights than runs.csv records for lenet5 seed 0" in said(capsys)
    assert not (copy_of / "inspect").exists()
    assert report_main([str(copy_of)]) == 0, "the report says so, and goes on"
    page = (copy_of / "index.html").read_text()
    assert "holds other weights than runs.csv records" in page and "figure-inside-lenet5" not in page


def test_an_image_file_is_preprocessed_as_the_runs_dataset(store, tmp_path):
    """Grey or RGB, any size: the run's channels and input size, then the dataset's mean and std."""
    run = load_run(store, find_run(store, "lenet5", 0))
    photo = tmp_path / "grey.png"
    Image.new("RGB", (50, 40), (90, 90, 90)).save(photo)
    image = file_image(run, photo)
    channels, size = run.dataset.in_channels, run.dataset.image_size
    assert image.shape == (channels, size, size) == run.dataset.test.images[0].shape
    expected = (90 / 255 - run.dataset.mean[0]) / run.dataset.std[0]
    assert torch.allclose(image, torch.full_like(image, expected))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "alexnet"], "no run of alexnet in"),
        (["--model", "lenet5", "--seed", "7"], "no run of lenet5 with seed 7"),
        (
            ["--model", "lenet5", "--image", "100000"],
            "--image 100000: the test split of mnist5k has images 0 to",
        ),
        (["--model", "lenet5", "--layers", "conv1"], "no layer 'conv1' in lenet5; nearest: "),
        (["--model", "lenet5", "--image", "nowhere.png"], "--image nowhere.png: not an image"),
    ],
)
def test_bad_arguments_are_one_line(store, argv, message, capsys):
    assert inspect_main([str(store), *argv]) == 2
    assert message in said(capsys)


def test_a_store_without_checkpoints_says_so(copy_of, capsys):
    shutil.rmtree(copy_of / "checkpoints")
    assert inspect_main([str(copy_of), "--model", "lenet5"]) == 2
    assert "no checkpoint for lenet5 seed 0:" in said(capsys)
    assert report_main([str(copy_of)]) == 0
    page = (copy_of / "index.html").read_text()
    assert '<section id="inside">' in page and "This store has no checkpoints" in page


# --- the report ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert report_main([str(store), "--out", str(out)]) == 0
    return out


def test_the_report_shows_inside_the_networks(store, report):
    page = (report / "index.html").read_text()
    assert '<section id="inside">' in page and 'href="#inside"' in page
    assert 'id="figure-inside-lenet5"' in page
    rows = page_tables(report)["confusion-lenet5"]
    classes = [str(c) for c in range(10)]
    assert list(rows[0]) == ["true", *classes, "accuracy"] and len(rows) == 10
    counts = [[int(row[c]) for c in classes] for row in rows]
    with open(store / "runs.csv", newline="") as f:
        (run,) = csv.DictReader(f)
    assert sum(map(sum, counts)) == 64, "the smoke profile's test subset"
    correct = sum(counts[i][i] for i in range(10))
    assert correct / 64 == pytest.approx(float(run["test_acc"])), "the accuracy the run recorded"
    for row, count in zip(rows, counts, strict=True):
        assert float(row["accuracy"]) == pytest.approx(count[int(row["true"])] / max(1, sum(count)), abs=5e-4)
    full_size = list((report / "inside").rglob("*.png"))
    assert len(full_size) >= 4 and not list(store.glob("inside")), "PNGs beside index.html, not in the store"


def test_no_inspect_leaves_the_section_out(store, tmp_path):
    assert report_main([str(store), "--out", str(tmp_path), "--no-inspect"]) == 0
    assert 'id="inside"' not in (tmp_path / "index.html").read_text()
    assert not (tmp_path / "inside").exists()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_chromium_renders_the_section_with_no_broken_image(report, tmp_path):
    flags = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    images, broken = probe_images(flags, report / "index.html", tmp_path)
    assert broken == 0
    assert images >= 3, "the section's overview and mistakes figures besides the report's own"


def test_an_image_folder_of_three_classes(tmp_path, monkeypatch, capsys):
    """A run on one's own images (a memory-mapped uint8 split, normalized per batch): the classes
    are the folder's three, named in the predictions; the report's confusion matrix is 3 x 3."""
    monkeypatch.setenv("CNNREPRO_DATA", str(tmp_path / "data"))
    for label, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (tmp_path / "images" / f"c{label}").mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (36, 30), tuple(v + 3 * i for v in color)).save(
                tmp_path / "images" / f"c{label}" / f"{i}.png"
            )
    out = tmp_path / "store"
    dataset = f"folder:{tmp_path / 'images'}"
    assert (
        run_main(["--profile", "smoke", "--models", "lenet5", "--dataset", dataset, "--out", str(out)]) == 0
    )
    assert inspect_main([str(out), "--model", "lenet5", "--image", "1"]) == 0
    (summary,) = (out / "inspect").rglob("predictions.json")
    predictions = json.loads(summary.read_text())
    assert [p["name"] for p in predictions["top5"]] == [f"c{p['class']}" for p in predictions["top5"]]
    assert len(predictions["top5"]) == 3
    rows = page_tables(out)["confusion-lenet5"]
    assert list(rows[0]) == ["true", "0", "1", "2", "accuracy"] and len(rows) == 3


def test_a_run_is_inspected_from_its_own_data_directory_even_with_its_folder_gone(tmp_path, monkeypatch):
    """A store trained with --data-dir: inspect and the report's Inside section read the decoded
    images env.json names there (what the run trained on), not the default data directory, and
    need neither the folder nor a --data-dir of their own."""
    monkeypatch.setenv("CNNREPRO_DATA", str(tmp_path / "elsewhere"))
    for label, color in enumerate([(200, 30, 30), (30, 30, 200)]):
        (tmp_path / "images" / f"c{label}").mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (20, 20), tuple(v + 3 * i for v in color)).save(
                tmp_path / "images" / f"c{label}" / f"{i}.png"
            )
    out, data = tmp_path / "store", tmp_path / "own-data"
    argv = ["--profile", "smoke", "--models", "lenet5", "--dataset", f"folder:{tmp_path / 'images'}"]
    assert run_main([*argv, "--out", str(out), "--data-dir", str(data), "--no-report"]) == 0
    env = json.loads((out / "env.json").read_text())
    assert stored.recorded_data_dir(env) == data and stored.recorded_cache(env, env["dataset"]["name"])
    shutil.rmtree(tmp_path / "images")
    stored.run_dataset.cache_clear()
    assert inspect_main([str(out), "--model", "lenet5", "--image", "1"]) == 0
    assert report_main([str(out)]) == 0
    page = (out / "index.html").read_text()
    assert 'id="figure-inside-lenet5"' in page and 'id="figure-images-0"' in page
    assert not (tmp_path / "elsewhere").exists(), "nothing read from, or made in, the default"
