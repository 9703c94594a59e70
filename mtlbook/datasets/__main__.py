"""Command line: ``python -m mtlbook.datasets list`` / ``fetch NAME``."""

from __future__ import annotations

import argparse
import sys

from . import DatasetError, RegistryError, available, fetch


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Example:
        >>> main(["list"])                                    # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(
        prog="python -m mtlbook.datasets", description="List and fetch mtlbook's public datasets."
    )
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default $MTLBOOK_DATA or ~/.cache/mtlbook)"
    )
    parser.add_argument("--registry", default=None, help="another datasets.toml")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the datasets and whether they are cached")
    p_fetch = sub.add_parser("fetch", help="download and verify the files of a dataset")
    p_fetch.add_argument("name")
    p_fetch.add_argument("--timeout", type=float, default=30.0, help="seconds per source")
    p_fetch.add_argument(
        "--trust-unverified",
        action="store_true",
        help="accept files that have no published hash and record their sha256",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            table = available(cache_dir=args.cache_dir, registry=args.registry)
            print(table.to_string(index=False))
        else:
            paths = fetch(
                args.name,
                cache_dir=args.cache_dir,
                timeout=args.timeout,
                registry=args.registry,
                trust_unverified=args.trust_unverified,
            )
            for fname, path in paths.items():
                print(f"{fname}\t{path}")
    except (DatasetError, RegistryError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
