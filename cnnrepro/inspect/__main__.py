"""``python -m cnnrepro.inspect OUT --model M``: one image through a stored run's final weights,
pictured: every chosen layer's feature maps, the first convolution's filters and the top-5
predictions, under OUT/inspect/<run>/<image>/. Exit status (docs/running.md#exit-codes): 0 done,
2 bad input or usage (one line: no such run, other weights than runs.csv's, an unknown layer),
130 interrupted."""

import argparse
import sys
from pathlib import Path

from cnnrepro.inspect.inspection import file_image, test_image, write_inspection
from cnnrepro.inspect.layers import FAMILY_RULES
from cnnrepro.inspect.stored import InspectError, find_run, load_run


def build_parser() -> argparse.ArgumentParser:
    """The command's parser (the docs' examples are checked against it: tests/test_docs.py)."""
    parser = argparse.ArgumentParser(
        prog="python -m cnnrepro.inspect",
        description=__doc__,
        epilog="Default layers: per family, the children of its trunk but for the classes it skips ("
        + "; ".join(
            f"{family}: {rule.trunk or '<model>'} but {' '.join(rule.skip)}"
            for family, rule in FAMILY_RULES.items()
        )
        + "), those that return feature maps",
    )
    parser.add_argument(
        "directory", type=Path, metavar="OUT", help="a runner output directory (runs.csv, checkpoints/)"
    )
    parser.add_argument("--model", required=True, help="the run's model, as runs.csv names it")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed (default: 0)")
    parser.add_argument("--key", help="the run's key, where several runs of the model have the seed")
    parser.add_argument(
        "--image", default="0", help="test image N of the run's dataset (default: 0), or an image file's path"
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        metavar="PATH",
        help="module paths or patterns (* within one dot-separated segment)",
    )
    parser.add_argument("--device", default="cpu", help="where the forward pass runs (default: cpu)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where datasets are (default: the store's own, as its env.json records it; else "
        "$CNNREPRO_DATA or ~/.cache/cnnrepro)",
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def inspect_run(args: argparse.Namespace) -> Path:
    """Writes the pictures the arguments ask for; returns predictions.json's path."""
    row = find_run(args.directory, args.model, args.seed, args.key)
    run = load_run(args.directory, row, args.device, args.data_dir)
    if args.image.isdigit():
        (image, label), source = test_image(run, int(args.image)), f"test-{args.image}"
    else:
        image, label, source = file_image(run, Path(args.image)), None, f"file-{Path(args.image).stem}"
    try:
        return write_inspection(
            run, args.directory / "inspect" / run.name / source, image, label, source, args.layers
        )
    except LookupError as error:
        raise InspectError(str(error.args[0])) from None


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        predictions = inspect_run(args)
    except InspectError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(
            f"error: cannot write into {args.directory / 'inspect'}: {error.strerror or error}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; each picture is written whole or not at all", file=sys.stderr)
        return 130
    print(f"inspect: {predictions.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
