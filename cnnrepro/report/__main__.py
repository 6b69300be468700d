"""``python -m cnnrepro.report DIR``: regenerate DIR's report from its results store alone.

Exit status (docs/running.md#exit-codes): 0 done, 2 bad input or usage (no store, a damaged one,
an unwritable output directory), 130 interrupted."""

import argparse
import sys
from pathlib import Path

from cnnrepro.report import NoResultsError, write_report
from cnnrepro.store import StoreError


def build_parser() -> argparse.ArgumentParser:
    """The command's parser (the docs' examples are checked against it: tests/test_docs.py)."""
    parser = argparse.ArgumentParser(prog="python -m cnnrepro.report", description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a runner output directory (holds runs.csv)")
    parser.add_argument(
        "--bench",
        type=Path,
        help="benchmark results to include (default: DIR/../bench, where make bench writes)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="REF",
        help="add a Reproduction section: these runs judged against REF's",
    )
    parser.add_argument(
        "--out", type=Path, help="write the report here instead of into DIR (e.g. when DIR is read-only)"
    )
    parser.add_argument(
        "--no-inspect",
        action="store_true",
        help="skip the Inside the networks section (it loads every classic run's checkpoint)",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.directory
    try:
        index = write_report(args.directory, args.bench, args.against, out=out, inspect=not args.no_inspect)
    except (NoResultsError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        hint = "" if args.out else "; --out DIR2 writes it elsewhere"
        print(f"error: cannot write the report into {out}: {error.strerror or error}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; each report file is written whole or not at all", file=sys.stderr)
        return 130
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
