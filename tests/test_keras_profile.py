"""The keras profile: the Keras tutorials' recipes planned as they wrote them, each runnable (at
smoke size here: the same recipes at a sixteenth of the width on a generated image folder), and
their published results checked only against the profile's own runs on the tutorial's dataset."""

import dataclasses
import json

import pandas as pd
import pytest
from PIL import Image

from cnnrepro.data import load_dataset
from cnnrepro.data.augment import KerasAugment
from cnnrepro.experiments import PROFILES, Request, plan_suite
from cnnrepro.models.facts import FAILS, HOLDS, NOT_MEASURED
from cnnrepro.report import claims
from cnnrepro.run import main
from cnnrepro.train import train_run


def plan(request: Request, dataset: str = "oxflower17") -> dict:
    return {c.model: c for _, c in plan_suite(request, PROFILES["keras"], dataset)}


@pytest.fixture(scope="module")
def flowers(tmp_path_factory):
    """A 3-class image folder, train/ and validation/, 4 and 2 images a class."""
    root = tmp_path_factory.mktemp("flowers")
    for split, n in (("train", 4), ("validation", 2)):
        for k, name in enumerate(("daisy", "iris", "tulip")):
            for i in range(n):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20, 16), (k * 90, i * 40, 50)).save(root / split / name / f"{i}.jpg")
    return root


def test_the_profile_plans_the_tutorials_recipes():
    planned = plan(Request(suites=("keras",)))
    assert sorted(planned) == ["alexnet", "googlenet", "resnet34", "vgg16"]
    for model, config in planned.items():
        assert (config.dataset, config.optimizer, config.eps, config.weight_decay) == (
            "oxflower17",
            "adam",
            1e-7,
            0.0,
        )
        assert (config.batch_size, config.epochs, config.input_size, config.schedule) == (
            16,
            30,
            224,
            "constant",
        )
        assert KerasAugment.from_pairs(config.augment) == KerasAugment(
            shear_range=0.2, zoom_range=0.2, horizontal_flip=True, centre_offset=0.5
        )
        assert config.lr == (1e-5 if model in ("vgg16", "googlenet") else 1e-3)
    lenet = plan(Request(models=("lenet5",)), "mnist")["lenet5"]
    assert (lenet.dataset, lenet.lr, lenet.batch_size, lenet.epochs) == ("mnist", 1e-3, 32, 5)
    assert dict(lenet.model_config) == {"activation": "tanh", "pooling": "max"}


@pytest.mark.parametrize("model", ["alexnet", "vgg16", "googlenet", "resnet34"])
def test_each_recipe_trains_at_smoke_size(flowers, tmp_path, model):
    config = plan(Request(suites=("keras",)))[model]
    small = dataclasses.replace(config, width=0.0625, input_size=64, epochs=1, dataset=f"folder:{flowers}")
    data = load_dataset(small.dataset, tmp_path / "data", size=64)
    result = train_run(small, data, tmp_path / "checkpoints")
    assert result.status == "finished" and len(result.history) == 1


def test_lenets_recipe_runs_through_the_runner_and_records_adam_and_the_augmentation(flowers, tmp_path):
    out = tmp_path / "out"
    argv = ["--profile", "keras", "--models", "lenet5", "--dataset", f"folder:{flowers}", "--epochs", "1"]
    assert main([*argv, "--out", str(out), "--data-dir", str(tmp_path / "data"), "--no-report"]) == 0
    config = json.loads(pd.read_csv(out / "runs.csv")["config"].iloc[0])
    assert config["optimizer"] == "adam" and ["horizontal_flip", True] in config["augment"]


def test_the_tutorials_results_are_measured_only_from_the_keras_profile_on_their_dataset():
    runs = pd.DataFrame(
        [
            ("lenet5", "mnist", "keras", "finished", 0.985, 61_706),
            ("alexnet", "mnist5k", "keras", "finished", 0.9, 58_000_000),
            ("vgg16", "oxflower17", "keras", "finished", 0.2, 134_000_000),
            ("googlenet", "oxflower17", "keras", "finished", 0.2, 6_500_000),
        ],
        columns=["model", "dataset", "profile", "status", "test_acc", "params"],
    )
    rows = {c.claim: c for c in claims.keras_result_claims(runs)}
    lenet = rows["LeNet (tanh, max-pool) reaches 98.69% MNIST test accuracy in 5 epochs"]
    assert lenet.verdict == HOLDS and lenet.measured.startswith("98.50%")
    alexnet = rows["AlexNet reaches about 55% 17 Flowers test accuracy in 30 epochs"]
    assert alexnet.verdict == NOT_MEASURED and "keras on mnist5k" in alexnet.why
    inception = rows["Inception v1 has about 1/20 of VGG-16's parameters"]
    assert inception.verdict == HOLDS and inception.measured.startswith("20.62x")
    assert rows["VGG-16 has about 3x AlexNet's parameters"].verdict == NOT_MEASURED, "AlexNet ran on mnist5k"
    runs.loc[0, "test_acc"] = 0.97
    assert claims.keras_result_claims(runs)[0].verdict == FAILS
