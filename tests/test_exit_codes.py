"""One exit-code contract for every command (docs/running.md#exit-codes): 0 done, 1 the result
differs (compare) or a run failed or trained twice to other bits (run), 2 bad input or usage, 130
interrupted. Each code of each command where it applies, with the one line it says; in process
(each command's main), and Ctrl-C for real, as a signal to the command's own process."""

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_compare import make_store, run

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "reports" / "reference" / "quick-mnist5k"
COMMANDS = ["cnnrepro.run", "cnnrepro.compare", "cnnrepro.report", "cnnrepro.inspect", "cnnrepro.demo"]
SMOKE = ["--profile", "smoke", "--models", "lenet5", "--epochs", "1", "--no-report", "--no-compare"]


def command(name: str):
    """The module whose main() ``python -m name`` runs."""
    module = importlib.import_module(name)
    return importlib.import_module(f"{name}.__main__") if hasattr(module, "__path__") else module


def exit_code(name: str, argv: list[str]) -> int:
    """What ``python -m name *argv`` exits with, run in this process."""
    try:
        return command(name).main(argv)
    except SystemExit as exit:
        return exit.code


def one_line(capsys) -> str:
    """What the command said on stderr: one line (after any progress bar's)."""
    error = capsys.readouterr().err
    assert "Traceback" not in error, error
    bars = ("%|", "\x1b[")  # tqdm's progress bars, and its cursor moves clearing them
    lines = [line for line in error.splitlines() if line.strip() and not any(b in line for b in bars)]
    assert len(lines) == 1, error
    return lines[0]


def interrupted_by(monkeypatch, target: str) -> None:
    """``target`` (module.attribute) raises KeyboardInterrupt, as Ctrl-C would there."""
    module, _, attribute = target.rpartition(".")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), attribute, interrupt)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A store with one smoke-trained lenet5 and its checkpoint (for inspect)."""
    out = tmp_path_factory.mktemp("trained")
    assert exit_code("cnnrepro.run", [*SMOKE, "--out", str(out)]) == 0
    return out


# --- 0: done ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_help_exits_0(name, capsys):
    assert exit_code(name, ["--help"]) == 0
    assert f"python -m {name}" in capsys.readouterr().out


def test_run_list_exits_0(capsys):
    assert exit_code("cnnrepro.run", ["--list"]) == 0
    assert "models:" in capsys.readouterr().out


def test_compare_of_a_store_with_itself_exits_0(tmp_path, capsys):
    assert (
        exit_code("cnnrepro.compare", [str(REFERENCE), str(REFERENCE), "--out", str(tmp_path / "c.csv")]) == 0
    )
    assert "0 differ" in capsys.readouterr().out


@pytest.mark.slow  # writes a report
def test_report_of_the_shipped_reference_exits_0(tmp_path, capsys):
    assert exit_code("cnnrepro.report", [str(REFERENCE), "--out", str(tmp_path), "--no-inspect"]) == 0
    assert (tmp_path / "index.html").exists()


@pytest.mark.slow  # trains
def test_inspect_of_a_trained_run_exits_0(trained, capsys):
    assert exit_code("cnnrepro.inspect", [str(trained), "--model", "lenet5"]) == 0
    assert "inspect:" in capsys.readouterr().out


@pytest.mark.slow  # times each op
def test_demo_exits_0(capsys):
    assert exit_code("cnnrepro.demo", []) == 0
    assert "speedup" in capsys.readouterr().out


# --- 1: the result differs ------------------------------------------------------------------


def test_compare_of_stores_that_differ_exits_1(tmp_path, capsys):
    a = make_store(tmp_path / "a", [run("lenet5", 0, 0.95, 0.96, weights="a")])
    b = make_store(tmp_path / "b", [run("lenet5", 0, 0.80, 0.81, weights="b")])
    assert exit_code("cnnrepro.compare", [str(a), str(b)]) == 1
    assert "1 differ" in capsys.readouterr().out


def test_a_store_with_runs_of_one_side_only_is_not_a_difference(tmp_path):
    a = make_store(tmp_path / "a", [run("lenet5", 0, 0.95, 0.96, weights="a")])
    b = make_store(tmp_path / "b", [run("lenet5", 0, 0.95, 0.96, weights="a"), run("nin", 0, 0.9, 0.9)])
    assert exit_code("cnnrepro.compare", [str(a), str(b)]) == 0


def test_run_with_a_run_that_failed_exits_1(tmp_path, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(importlib.import_module("cnnrepro.executors"), "train_job", fail)
    assert exit_code("cnnrepro.run", [*SMOKE, "--out", str(tmp_path)]) == 1
    assert "FAILED lenet5: planted failure" in capsys.readouterr().err


def test_run_whose_verify_determinism_finds_a_mismatch_exits_1(tmp_path, monkeypatch, capsys):
    """The second training of --verify-determinism ends with other weights, as a nondeterministic
    kernel would make it: the run is recorded (runs.csv's determinism says MISMATCH), the exit is 1."""
    executors = importlib.import_module("cnnrepro.executors")
    train_run = executors.train_run

    def other_bits_the_second_time(config, dataset, checkpoint_dir, *args, **kwargs):
        result = train_run(config, dataset, checkpoint_dir, *args, **kwargs)
        if checkpoint_dir.name == "verify":
            result.weights_sha256 = "0" * 64
        return result

    monkeypatch.setattr(executors, "train_run", other_bits_the_second_time)
    assert exit_code("cnnrepro.run", [*SMOKE, "--verify-determinism", "--out", str(tmp_path)]) == 1
    assert "MISMATCH lenet5 seed 0: trained twice (--verify-determinism)" in capsys.readouterr().err
    assert "MISMATCH" in (tmp_path / "runs.csv").read_text()


# --- 2: bad input or usage ------------------------------------------------------------------


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_argument_exits_2(name, capsys):
    assert exit_code(name, ["--no-such-option"]) == 2
    assert f"python -m {name}: error:" in capsys.readouterr().err  # argparse's usage, then the error


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--all", "--profile", "huge"], "invalid choice: 'huge'"),
        (["--models", "nosuch", "--profile", "smoke"], "--models nosuch matches no model"),
        ([], "say what to run"),
    ],
)
def test_run_usage_errors_exit_2(argv, said, capsys):
    assert exit_code("cnnrepro.run", argv) == 2
    assert said in capsys.readouterr().err


def test_run_with_an_out_that_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert exit_code("cnnrepro.run", [*SMOKE, "--out", str(tmp_path / "file")]) == 2
    assert one_line(capsys).startswith("error: --out")


def test_compare_of_what_is_not_a_store_exits_2(tmp_path, capsys):
    assert exit_code("cnnrepro.compare", [str(REFERENCE), str(tmp_path)]) == 2
    assert one_line(capsys).startswith("error:")


def test_report_of_what_is_not_a_store_exits_2(tmp_path, capsys):
    assert exit_code("cnnrepro.report", [str(tmp_path)]) == 2
    assert one_line(capsys).startswith("error:")


@pytest.mark.parametrize(
    "argv, said",
    [
        (["--model", "lenet5"], "no checkpoint for lenet5"),  # the shipped reference has none
        (["--model", "resnet1001"], "no run of resnet1001"),
    ],
)
def test_inspect_of_what_cannot_be_inspected_exits_2(argv, said, capsys):
    assert exit_code("cnnrepro.inspect", [str(REFERENCE), *argv]) == 2
    assert said in one_line(capsys)


def test_inspect_without_its_model_exits_2(capsys):
    assert exit_code("cnnrepro.inspect", [str(REFERENCE)]) == 2
    assert "--model" in capsys.readouterr().err


# --- 130: interrupted -----------------------------------------------------------------------


# Each command, its arguments and a function it calls while working: (name, argv, target).
INTERRUPTIBLE = [
    ("cnnrepro.run", [*SMOKE, "--out", "{tmp}/out"], "cnnrepro.executors.train_job"),
    (
        "cnnrepro.compare",
        [str(REFERENCE), str(REFERENCE), "--out", "{tmp}/c.csv"],
        "cnnrepro.compare.compare",
    ),
    ("cnnrepro.report", [str(REFERENCE), "--out", "{tmp}"], "cnnrepro.report.__main__.write_report"),
    ("cnnrepro.inspect", [str(REFERENCE), "--model", "lenet5"], "cnnrepro.inspect.__main__.inspect_run"),
    ("cnnrepro.demo", [], "cnnrepro.demo.tour"),
]
INTERRUPTIBLE_IDS = ["run", "compare", "report", "inspect", "demo"]


@pytest.mark.parametrize(
    "name, argv, target",
    [
        ("cnnrepro.run", [*SMOKE, "--out", "{tmp}/out"], "cnnrepro.run.plan_suite"),
        ("cnnrepro.run", [*SMOKE, "--out", "{tmp}/out"], "cnnrepro.run.load_dataset"),
        *INTERRUPTIBLE,
    ],
    ids=["run-planning", "run-loading", *INTERRUPTIBLE_IDS],
)
def test_ctrl_c_exits_130_with_one_line(name, argv, target, tmp_path, monkeypatch, capsys):
    interrupted_by(monkeypatch, target)
    assert exit_code(name, [a.format(tmp=tmp_path) for a in argv]) == 130
    assert one_line(capsys).startswith("interrupted")


# What the child runs: SIGINT sent to itself where ``target`` is called, as a terminal's Ctrl-C.
CHILD = """
import importlib, os, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may start us ignoring it)
name, target, *argv = sys.argv[1:]
module, _, attribute = target.rpartition(".")
def interrupt(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    signal.pause()
setattr(importlib.import_module(module), attribute, interrupt)
command = importlib.import_module(name)
command = importlib.import_module(name + ".__main__") if hasattr(command, "__path__") else command
sys.exit(command.main(argv))
"""


@pytest.mark.slow  # a process per command
@pytest.mark.parametrize("name, argv, target", INTERRUPTIBLE, ids=INTERRUPTIBLE_IDS)
def test_a_real_sigint_exits_130(name, argv, target, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    child = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), name, target, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert child.returncode == 130, child.stderr[-2000:]
    assert child.stderr.strip().splitlines()[-1].startswith("interrupted"), child.stderr[-2000:]
    assert "Traceback" not in child.stderr


def test_the_shipped_reference_was_read_never_written():
    """The commands above read the shipped reference in place (inspect, report and compare with it
    as their input); none of them wrote into it."""
    assert sorted(p.name for p in REFERENCE.iterdir()) == ["env.json", "results.csv", "runs.csv"]
