"""``python -m cnnrepro.compare A B``: did the runs of results store B reproduce those of store A?

Prints a verdict per run (identical, within noise, differs, only in A / B), what differs between
the environments where the bits differ, and the counts; writes the table to compare.csv. Exit
status (docs/running.md#exit-codes): 0 when nothing differs beyond noise, 1 when something does
(for CI), 2 for bad input or usage (not two stores, an unwritable --out), 130 when interrupted.

(This is the command line; the verdicts themselves are cnnrepro.report.verdicts's.)
"""

import argparse
import sys
from pathlib import Path

from cnnrepro.files import write_atomic
from cnnrepro.report.verdicts import compare, load_store, reproduced, verdict_counts
from cnnrepro.store import StoreError

SHOWN = ["model", "seed", "verdict", "test acc A", "test acc B", "tolerance", "environment differences"]


def build_parser() -> argparse.ArgumentParser:
    """The command's parser (the docs' examples are checked against it: tests/test_docs.py)."""
    parser = argparse.ArgumentParser(prog="python -m cnnrepro.compare", description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, metavar="A", help="the reference store (a runner output directory)")
    parser.add_argument("b", type=Path, metavar="B", help="the store to judge against it")
    parser.add_argument("--out", type=Path, help="where compare.csv goes (default: B/compare.csv)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return judge(args)
    except KeyboardInterrupt:
        print("\ninterrupted; compare.csv is written whole or not at all", file=sys.stderr)
        return 130


def judge(args: argparse.Namespace) -> int:
    """Compares the two stores, prints and writes the table; returns the exit status."""
    out = args.out or args.b / "compare.csv"
    try:
        table = compare(load_store(args.a, "A"), load_store(args.b, "B"))
        write_atomic(out, table.to_csv(index=False))
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: writing {out} failed: {error.strerror}", file=sys.stderr)
        return 2
    with_format = table[SHOWN].to_string(index=False, float_format=lambda x: f"{x:.4f}", max_colwidth=70)
    print(with_format)
    print(f"\n{args.b} against {args.a}: {verdict_counts(table)} (table: {out})")
    return 0 if reproduced(table) else 1


if __name__ == "__main__":
    sys.exit(main())
