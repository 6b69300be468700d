"""Fault injection: the runner killed or interrupted at named points, and its store damaged in the
ways a crash, a full disk or a stray editor leave it. For each, a rerun recovers to the weights an
uninterrupted run ends with, or the user gets one line naming the file and the way out (exit 2).

The smoke profile and one small model keep each case to seconds. Kills happen in a subprocess
whose runner has one function wrapped to SIGKILL (or SIGINT) itself at that point."""

import csv
import errno
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from cnnrepro.report.__main__ import main as report_main
from cnnrepro.run import main

ARGV = ["--profile", "smoke", "--models", "lenet5", "--epochs", "2", "--no-report"]

# What the subprocess's runner has wrapped: each SIGKILLs itself at one moment.
KILL_INSIDE_CHECKPOINT_SAVE = """
real_replace, saves = os.replace, []
def replace(src, dst):
    if str(dst).endswith(".pt"):
        saves.append(dst)
        if len(saves) == 2:  # epoch 2's checkpoint: written to its temp file, not yet renamed
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace
"""
KILL_BETWEEN_CSV_WRITES = """
from cnnrepro.store import RESULTS_CSV, ResultsStore
real = ResultsStore._replace_rows
def replace_rows(self, name, key, rows):
    real(self, name, key, rows)
    if name == RESULTS_CSV:  # results.csv has the run, runs.csv does not yet
        os.kill(os.getpid(), signal.SIGKILL)
ResultsStore._replace_rows = replace_rows
"""
KILL_DURING_REPORT = """
import cnnrepro.report.writer as writer
real = writer.write_atomic
def write(path, data):
    if str(path).endswith(".png"):
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, data)
writer.write_atomic = write
"""
CTRL_C_AFTER_FIRST_CHECKPOINT = """
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (CI may start us ignoring it)
import cnnrepro.train.engine as engine
real = engine.save_atomic
def save(state, path):
    real(state, path)
    os.kill(os.getpid(), signal.SIGINT)
engine.save_atomic = save
"""


def run_patched(argv: list[str], patch: str = "") -> subprocess.CompletedProcess:
    code = "\n".join(
        [
            "import os, signal, sys, torch",
            f"torch.set_num_threads({torch.get_num_threads()})",
            textwrap.dedent(patch),
            "from cnnrepro.run import main",
            f"sys.exit(main({argv!r}))",
        ]
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def said(capsys) -> str:
    """Everything the runner printed (its progress lines go to stdout, errors to stderr)."""
    captured = capsys.readouterr()
    return captured.out + captured.err


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def only_run(out) -> dict:
    (row,) = rows(out / "runs.csv")
    return row


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """An uninterrupted run's store: the hash every recovery must end with."""
    out = tmp_path_factory.mktemp("clean")
    assert main([*ARGV, "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy_of(clean, tmp_path):
    out = tmp_path / "store"
    shutil.copytree(clean, out)
    return out


@pytest.mark.parametrize(
    "point, patch, argv",
    [
        ("inside the checkpoint save", KILL_INSIDE_CHECKPOINT_SAVE, ARGV),
        ("between the CSV writes", KILL_BETWEEN_CSV_WRITES, ARGV),
        ("during the report", KILL_DURING_REPORT, ARGV[:-1]),
    ],
)
def test_killed_then_rerun_ends_as_an_uninterrupted_run(clean, tmp_path, point, patch, argv):
    argv = [*argv, "--out", str(tmp_path)]
    killed = run_patched(argv, patch)
    assert killed.returncode == -signal.SIGKILL, f"{point}: {killed.stderr[-2000:]}"
    assert main(argv) == 0, point
    assert only_run(tmp_path)["weights_sha256"] == only_run(clean)["weights_sha256"]
    assert len(rows(tmp_path / "results.csv")) == 2, "each epoch once"
    assert not list(tmp_path.rglob("*.tmp")), "the killed write's temp file is cleaned up"
    if point == "during the report":
        assert (tmp_path / "index.html").exists()


def test_ctrl_c_says_where_it_stopped_in_one_line_and_a_rerun_resumes(clean, tmp_path):
    argv = [*ARGV, "--out", str(tmp_path)]
    interrupted = run_patched(argv, CTRL_C_AFTER_FIRST_CHECKPOINT)
    assert interrupted.returncode == 130
    assert "Traceback" not in interrupted.stderr
    assert "interrupted: lenet5 seed 0 stopped after its last checkpointed epoch" in interrupted.stderr
    assert main(argv) == 0
    assert only_run(tmp_path)["weights_sha256"] == only_run(clean)["weights_sha256"]


def test_a_full_disk_is_one_line_and_nothing_half_written(copy_of, capsys, monkeypatch):
    runs_csv = copy_of / "runs.csv"
    runs_csv.write_text(runs_csv.read_text().splitlines()[0] + "\n")  # the run must be recorded again
    header_only = runs_csv.read_bytes()
    real_fsync = os.fsync

    def fsync(fd):  # the disk fills up as a CSV of the store is written
        if ".csv." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert main([*ARGV, "--out", str(copy_of)]) == 2
    assert "No space left on device; nothing was half-written" in said(capsys)
    assert runs_csv.read_bytes() == header_only, "the old file, whole"
    assert not list(copy_of.glob(".*.tmp"))


def test_a_damaged_row_is_named_and_repair_records_the_run_again(clean, copy_of, capsys):
    runs_csv = copy_of / "runs.csv"
    text = runs_csv.read_text()
    runs_csv.write_text(text[: text.rindex(only_run(clean)["weights_sha256"]) + 52])  # cut inside the hash
    assert main([*ARGV, "--out", str(copy_of)]) == 2
    error = said(capsys)
    assert f"{runs_csv} is damaged: line 2: cut short" in error and "--repair" in error
    assert report_main([str(copy_of)]) == 2 and "line 2" in said(capsys)
    assert main([*ARGV, "--out", str(copy_of), "--repair"]) == 0
    assert "line 2: cut short (no " in said(capsys), "the dropped row is said aloud"
    assert only_run(copy_of)["weights_sha256"] == only_run(clean)["weights_sha256"]
    assert (copy_of / "runs.csv.damaged").read_text() == text[
        : text.rindex(only_run(clean)["weights_sha256"]) + 52
    ]


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.write_bytes(os.urandom(300) + b"\xff\xfe"), "is damaged: not text"),
        (lambda p: p.write_text("a,b\n1,2\n"), "is damaged: line 1: not a runs.csv header"),
    ],
)
def test_unreadable_runs_csv_is_one_line_for_runner_and_report(copy_of, capsys, damage, expected):
    damage(copy_of / "runs.csv")
    assert main([*ARGV, "--out", str(copy_of)]) == 2
    assert expected in said(capsys)
    assert report_main([str(copy_of)]) == 2
    assert expected in said(capsys)


def test_empty_runs_csv_and_torn_env_json(clean, copy_of, capsys):
    (copy_of / "env.json").write_text('{"torch": "2.')
    assert report_main([str(copy_of)]) == 2
    assert f"{copy_of / 'env.json'} is damaged" in said(capsys)
    (copy_of / "runs.csv").write_bytes(b"")
    assert report_main([str(copy_of)]) == 2 and "holds no rows" in said(capsys)
    assert main([*ARGV, "--out", str(copy_of)]) == 0, "recorded again from its finished checkpoint"
    assert only_run(copy_of)["weights_sha256"] == only_run(clean)["weights_sha256"]


def test_a_truncated_results_csv_is_recorded_again_from_the_checkpoint(copy_of, capsys):
    results = copy_of / "results.csv"
    results.write_text("".join(results.read_text().splitlines(keepends=True)[:-1]))  # the last epoch lost
    assert main([*ARGV, "--out", str(copy_of)]) == 0
    assert "results.csv lacks epochs; recording again" in said(capsys)
    assert [r["epoch"] for r in rows(results)] == ["1", "2"]


def test_a_corrupt_checkpoint_is_moved_aside_and_the_run_trains_again(clean, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoints" / f"{only_run(clean)['key']}.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"not a checkpoint")
    assert main([*ARGV, "--out", str(tmp_path)]) == 0
    assert f"checkpoint {checkpoint} is damaged" in said(capsys)
    assert checkpoint.with_name(checkpoint.name + ".corrupt").read_bytes() == b"not a checkpoint"
    assert only_run(tmp_path)["weights_sha256"] == only_run(clean)["weights_sha256"]


def test_force_resets_the_verification_too(copy_of):
    assert main([*ARGV, "--out", str(copy_of), "--force", "--verify-determinism"]) == 0
    verify = next((copy_of / "checkpoints" / "verify").glob("*.pt"))
    state = torch.load(verify, weights_only=False)
    state["model"] = {k: torch.zeros_like(v) for k, v in state["model"].items()}  # a stale verification
    torch.save(state, verify)
    assert main([*ARGV, "--out", str(copy_of), "--force", "--verify-determinism"]) == 0
    assert only_run(copy_of)["determinism"] == "matched"


def test_resuming_with_other_threads_is_refused(tmp_path, capsys, monkeypatch):
    import cnnrepro.train.engine as engine

    def save_then_stop(state, path):
        real_save(state, path)
        raise KeyboardInterrupt

    real_save = engine.save_atomic
    argv = [*ARGV, "--out", str(tmp_path)]
    monkeypatch.setattr(engine, "save_atomic", save_then_stop)
    assert main([*argv, "--threads", "1"]) == 130
    monkeypatch.setattr(engine, "save_atomic", real_save)
    assert main([*argv, "--threads", "2"]) == 1
    assert "written with 1 CPU threads, but it would resume with 2" in said(capsys)
    torch.set_num_threads(min(2, os.cpu_count()))


@pytest.mark.parametrize(
    "arrange, argv, expected",
    [
        (lambda d: (d / "file").write_text("x"), ["--out", "{d}/file"], "--out {d}/file is not a directory"),
        (
            lambda d: (d / "file").write_text("x"),
            ["--out", "{d}/file/below"],
            "--out {d}/file/below is not a directory (it would be below {d}/file, a file)",
        ),
        (
            lambda d: (d / "file").write_text("x"),
            ["--out", "{d}/out", "--dataset", "mnist", "--data-dir", "{d}/file"],
            "cannot use {d}/file/mnist for datasets",
        ),
    ],
)
def test_path_problems_are_one_line_and_leave_nothing(tmp_path, capsys, arrange, argv, expected):
    arrange(tmp_path)
    argv = [a.format(d=tmp_path) for a in argv]
    assert main([*ARGV, *argv]) == 2
    error = said(capsys)
    assert expected.format(d=tmp_path) in error and "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], "nothing created"


def test_cnnrepro_data_below_a_file_is_the_same_one_line_as_data_dir(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CNNREPRO_DATA", str(tmp_path / "file"))
    assert main([*ARGV, "--out", str(tmp_path / "out"), "--dataset", "mnist"]) == 2
    error = said(capsys)
    assert f"cannot use {tmp_path}/file/mnist for datasets" in error and "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"], "nothing created"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_a_read_only_out_is_one_line(tmp_path, capsys):
    tmp_path.chmod(0o555)
    try:
        assert main([*ARGV, "--out", str(tmp_path / "out")]) == 2
        assert "is not writable" in said(capsys)
    finally:
        tmp_path.chmod(0o755)


def test_a_failed_command_changes_nothing(copy_of):
    env = (copy_of / "env.json").read_bytes()
    assert main(["--profile", "smoke", "--models", "nosuch", "--out", str(copy_of)]) == 2
    assert (copy_of / "env.json").read_bytes() == env


def test_each_run_records_where_it_ran_with_the_umask_honoured(clean):
    row = only_run(clean)
    assert row["device"] == "cpu" and int(row["threads"]) == torch.get_num_threads()
    assert row["torch"] == torch.__version__ and row["code_revision"]
    umask = os.umask(0)
    os.umask(umask)
    assert (clean / "runs.csv").stat().st_mode & 0o777 == 0o666 & ~umask


def test_argument_slips_users_make(tmp_path, capsys):
    out = ["--out", str(tmp_path)]
    assert (
        main(["--profile", "smoke", "--models", "lenet5", "--models", "nin", "--seeds", "0", "0", *out]) == 0
    )
    runs = rows(tmp_path / "runs.csv")
    assert sorted(r["model"] for r in runs) == ["lenet5", "nin"], "--models given twice: both"
    assert "repeats a seed" in said(capsys)
    assert {r["suite"] for r in runs} == {"classic"}
    elsewhere = ["--out", str(tmp_path / "elsewhere")]
    assert main(["--profile", "smoke", "--suite", "degradation", "--models", "lenet5", *elsewhere]) == 0
    assert only_run(tmp_path / "elsewhere")["suite"] == "selected", "in no suite asked for"
    assert "note: lenet5 in no suite asked for (--suite degradation)" in said(capsys)
    with pytest.raises(SystemExit):
        main(["--all", "--epochs", "two"])
    assert "--epochs: must be a whole number >= 1, got 'two'" in said(capsys)
