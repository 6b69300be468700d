"""The recorded search behind the quick profile's recipes (cnnrepro/experiments/profiles.py).

For each model, every learning rate, epoch count and width of its grid, under everything else the
quick profile fixes (input size, batch, schedule, weight decay, init, layer sequence), trained on
search seeds only (100 and 101, never a reported seed), each run's final accuracies appended to
scripts/recipe_search.csv. A recipe's comment cites the row it took.

    python scripts/search_recipes.py                 # the whole grid (about 15 minutes on 2 cores)
    python scripts/search_recipes.py --models vgg11  # one model's
"""

import argparse
import csv
import dataclasses
import itertools
import tempfile
import time
from pathlib import Path

from cnnrepro.data import load_dataset
from cnnrepro.experiments import PROFILES, plan_runs
from cnnrepro.train import set_deterministic, train_run

SEARCH_SEEDS = (100, 101)
GRID = {  # model -> (learning rates, epoch counts, widths)
    "lenet5": ((0.05, 0.1), (6,), (0.25, 1.0)),
    "vgg11": ((0.01, 0.02, 0.05), (6,), (0.25,)),
    "nin": ((0.02, 0.05, 0.1), (6,), (0.25,)),
}
OUT = Path(__file__).with_name("recipe_search.csv")
FIELDS = ["model", "lr", "epochs", "width", "seed", "train_acc", "test_acc", "status", "train_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(GRID), choices=list(GRID))
    args = parser.parse_args()
    set_deterministic()
    profile = PROFILES["quick"]
    dataset = load_dataset(profile.dataset)
    new_file = not OUT.exists()
    with open(OUT, "a", newline="") as f, tempfile.TemporaryDirectory() as checkpoints:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for model in args.models:
            rates, epoch_counts, widths = GRID[model]
            for lr, epochs, width, seed in itertools.product(rates, epoch_counts, widths, SEARCH_SEEDS):
                (config,) = plan_runs([model], profile, [seed], epochs=epochs)
                config = dataclasses.replace(config, lr=lr, width=width)
                start = time.perf_counter()
                result = train_run(config, dataset, Path(checkpoints))
                last = result.history[-1] if result.history else None
                row = {
                    "model": model,
                    "lr": lr,
                    "epochs": epochs,
                    "width": width,
                    "seed": seed,
                    "train_acc": f"{last.train_acc:.4f}" if last else "",
                    "test_acc": f"{last.test_acc:.4f}" if last else "",
                    "status": result.status,
                    "train_time_s": f"{time.perf_counter() - start:.1f}",
                }
                writer.writerow(row)
                f.flush()
                print(row, flush=True)


if __name__ == "__main__":
    main()
