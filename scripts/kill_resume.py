"""A dropout model's run killed with SIGKILL mid-run, then rerun, must end with the weights hash of
an uninterrupted run: every generator it draws from (the CUDA one on a GPU) is in its checkpoint.

    python scripts/kill_resume.py --device cuda --out reports/gpu/kill-resume

Runs the runner three times as a user would: once uninterrupted, once killed as soon as its first
epoch's checkpoint is on disk, once more to resume. Exit 0 when the hashes match."""

import argparse
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MODEL, EPOCHS = "alexnet", 3  # dropout 0.5 in its classifier


def runner(device: str, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "cnnrepro.run", "--models", MODEL, "--profile", "smoke",
        "--epochs", str(EPOCHS), "--device", device, "--out", str(out), "--no-report",
    ]  # fmt: skip


def weights_hash(out: Path) -> str:
    with open(out / "runs.csv", newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if r["model"] == MODEL]
    return row["weights_sha256"]


def kill_after_first_checkpoint(command: list[str], checkpoints: Path, timeout_s: float = 300) -> None:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while not any(checkpoints.glob("*.pt")):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit("the run ended (or hung) before its first checkpoint: nothing was killed")
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    print(f"killed the run after its first checkpoint (exit {process.returncode})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, default=Path("reports/gpu/kill-resume"))
    args = parser.parse_args()
    clean, killed = args.out / "uninterrupted", args.out / "killed"
    subprocess.run(runner(args.device, clean), check=True)
    kill_after_first_checkpoint(runner(args.device, killed), killed / "checkpoints")
    subprocess.run(runner(args.device, killed), check=True)
    expected, resumed = weights_hash(clean), weights_hash(killed)
    print(f"uninterrupted {expected}\nresumed       {resumed}")
    if resumed != expected:
        print("FAIL: the resumed run's weights differ from the uninterrupted run's", file=sys.stderr)
        return 1
    print("ok: the resumed run ends with the uninterrupted run's weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
