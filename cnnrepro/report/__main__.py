"""``python -m cnnrepro.report DIR``: regenerate DIR's report from its results store alone."""

import argparse
import sys
from pathlib import Path

from cnnrepro.report import NoResultsError, write_report
from cnnrepro.store import StoreError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnnrepro.report", description=__doc__)
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
    args = parser.parse_args(argv)
    try:
        index = write_report(args.directory, args.bench, args.against)
    except (NoResultsError, StoreError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
