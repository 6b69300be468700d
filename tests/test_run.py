"""The runner's command line: the smoke profile end to end, skipping finished runs, and clear
errors for bad values."""

import csv
import json
import subprocess
import sys

import pytest
import torch

from cnnrepro.data import default_data_dir
from cnnrepro.experiments import PROFILES, SUITES, plan_suite
from cnnrepro.inspect.stored import recorded_data_dir
from cnnrepro.run import main, parse_args, plan_request


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_all(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    assert main(["--profile", "smoke", "--all", "--out", str(out)]) == 0
    return out


def test_smoke_all_writes_every_file_with_every_model(smoke_all):
    runs = read_csv(smoke_all / "runs.csv")
    expected = {m for ms in SUITES.values() for m in ms}
    assert {r["model"] for r in runs} == expected
    assert all(r["status"] == "finished" and len(r["weights_sha256"]) == 64 for r in runs)
    assert all(int(r["params"]) > 0 and int(r["macs"]) > 0 for r in runs)
    results = read_csv(smoke_all / "results.csv")
    assert {r["key"] for r in results} == {r["key"] for r in runs}
    env = json.loads((smoke_all / "env.json").read_text())
    assert env["build_info"]["torch_matches"] and env["profile"]["name"] == "smoke"
    assert recorded_data_dir(env) == default_data_dir().resolve(), "inspect and the report read it"
    plain, residual = (next(r for r in runs if r["model"] == m) for m in ("plain20", "resnet20"))
    assert plain["params"] == residual["params"]
    # the report is written at the end
    assert {r["model"] for r in read_csv(smoke_all / "summary.csv")} == expected
    assert (smoke_all / "degradation.png").exists() and 'id="claims"' in (
        smoke_all / "index.html"
    ).read_text()


def test_a_rerun_skips_finished_runs_and_keeps_one_row_each(smoke_all, capsys):
    before = read_csv(smoke_all / "runs.csv")
    argv = ["--profile", "smoke", "--models", "lenet5", "resnet20", "--out", str(smoke_all), "--no-report"]
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "lenet5 seed 0" not in said.err
    assert "env.json)" in said.out and "index.html" not in said.out  # --no-report: none is claimed
    after = read_csv(smoke_all / "runs.csv")
    assert sorted(r["key"] for r in after) == sorted(r["key"] for r in before)


def test_force_and_verify_determinism(smoke_all):
    assert (
        main(
            [
                "--profile",
                "smoke",
                "--models",
                "lenet5",
                "--force",
                "--verify-determinism",
                "--out",
                str(smoke_all),
            ]
        )
        == 0
    )
    lenet = [r for r in read_csv(smoke_all / "runs.csv") if r["model"] == "lenet5"]
    assert len(lenet) == 1 and lenet[0]["determinism"] == "matched"
    assert ">matched<" in (smoke_all / "index.html").read_text(), "the report shows the check"


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "say what to run"),
        (["--all", "--profile", "huge"], "invalid choice: 'huge'"),
        (["--all", "--epochs", "0"], "must be >= 1"),
        (["--all", "--dataset", "imagenet"], "invalid choice: 'imagenet'"),
        (["--models", "resnet7"], "matches no model"),
    ],
)
def test_bad_values_get_clear_errors(argv, message, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cnnrepro.run", *argv, "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and message in proc.stderr


def test_a_model_fed_too_small_an_input_is_refused_before_anything_is_written(tmp_path, capsys):
    """The paper profile's recipes are for CIFAR's 32x32: on 28x28 digits VGG-11 and DenseNet get
    too little, each named with what it needs (AlexNet and NiN have their own input sizes)."""
    out = tmp_path / "out"
    assert main(["--suite", "classic", "--profile", "paper", "--dataset", "mnist5k", "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert "the paper profile on mnist5k plans vgg11 at 28x28 (its layers need 32x32 or more)" in said
    assert "densenet-d2l at 28x28 (its layers need 29x29" in said and "alexnet" not in said
    assert not out.exists()


def test_list(capsys):
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "resnet110" in listing and "degradation" in listing and "mnist5k" in listing


def test_no_inspect_leaves_the_reports_inside_section_out(tmp_path):
    argv = ["--profile", "smoke", "--models", "lenet5", "--no-compare"]
    assert main([*argv, "--out", str(tmp_path / "with")]) == 0
    assert main([*argv, "--no-inspect", "--out", str(tmp_path / "without")]) == 0
    assert "Inside the networks" in (tmp_path / "with" / "index.html").read_text()
    assert "Inside the networks" not in (tmp_path / "without" / "index.html").read_text()


def test_speed_flags_name_every_planned_run_and_are_recorded(tmp_path):
    """--channels-last, --compile [MODE] and --amp set every planned config's fields (the profile's
    otherwise: off), and env.json and runs.csv's config say what each run used."""
    profile = PROFILES["smoke"]
    argv = ["--profile", "smoke", "--models", "lenet5"]

    def speeds(*flags) -> set:
        plan = plan_suite(plan_request(parse_args([*argv, *flags])), profile, profile.dataset)
        return {(c.channels_last, c.compile, c.amp) for _, c in plan}

    assert speeds() == {(False, "", "")}
    assert speeds("--channels-last", "--compile", "--amp", "bf16") == {(True, "default", "bf16")}
    assert speeds("--compile", "max-autotune", "--amp", "off", "--no-channels-last") == {
        (False, "max-autotune", "")
    }
    out = tmp_path / "out"
    assert (
        main([*argv, "--channels-last", "--amp", "bf16", "--no-report", "--no-compare", "--out", str(out)])
        == 0
    )
    env = json.loads((out / "env.json").read_text())
    assert env["speed"] == {"channels_last": True, "compile": "", "amp": "bf16"}
    (run,) = read_csv(out / "runs.csv")
    config = json.loads(run["config"])
    assert (config["channels_last"], config["compile"], config["amp"]) == (True, "", "bf16")
    assert run["status"] == "finished"


def test_fp16_autocast_on_the_cpu_is_refused(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cnnrepro.run", "--models", "lenet5", "--amp", "fp16", "--device", "cpu"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "--amp fp16: float16 autocast runs on CUDA only" in proc.stderr
    if not torch.cuda.is_available():  # --device auto picks the CPU: refused before anything is written
        argv = ["--profile", "smoke", "--models", "lenet5", "--amp", "fp16", "--out", str(tmp_path / "auto")]
        assert main(argv) == 2 and not (tmp_path / "auto").exists()
