"""``python -m mtlbook.book.reproduce NAME|all [--check] [--reduced] [--root DIR]``."""

from __future__ import annotations

import argparse
import sys
import time

from . import STUDIES, check, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mtlbook.book.reproduce",
        description="Run the book's full-tier studies and store their results with provenance.",
        epilog="examples:\n  python -m mtlbook.book.reproduce mmoe\n"
        "  python -m mtlbook.book.reproduce all\n"
        "  python -m mtlbook.book.reproduce mmoe --check",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("study", choices=[*STUDIES, "all"], help="a study, or all of them")
    parser.add_argument(
        "--check",
        action="store_true",
        help="re-run reduced and compare with the stored results (exit 1 if outside)",
    )
    parser.add_argument(
        "--reduced", action="store_true", help="run the reduced settings and store them apart"
    )
    parser.add_argument("--root", help="results folder (default: mtlbook/book/results)")
    args = parser.parse_args(argv)
    names = list(STUDIES) if args.study == "all" else [args.study]
    failed = False
    total = time.perf_counter()
    for name in names:
        start = time.perf_counter()
        if args.check:
            table = check(name, args.root)
            print(table.to_string(index=False))
            failed |= not bool(table["inside"].all())
        else:
            folder = run(name, args.root, reduced=args.reduced)
            print(f"{name}: results in {folder}")
        print(f"{name}: {time.perf_counter() - start:.0f} s", flush=True)
    print(f"total: {time.perf_counter() - total:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
