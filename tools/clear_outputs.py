"""Clear, or check, the outputs of the book's notebooks.

Chapters are committed without outputs: the book build and CI execute them. Use

    python tools/clear_outputs.py                 # clear chapters/*.ipynb in place
    python tools/clear_outputs.py --check         # list notebooks with outputs, exit 1 if any
    python tools/clear_outputs.py path/to/a.ipynb # only these notebooks

Run it with the project's environment (`source tools/env.sh`), which provides nbformat.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def has_outputs(nb: nbformat.NotebookNode) -> bool:
    """True if any code cell has outputs, an execution count or execution timestamps."""
    return any(
        cell.get("outputs")
        or cell.get("execution_count") is not None
        or "execution" in cell.get("metadata", {})
        for cell in nb.cells
        if cell.cell_type == "code"
    )


def clear(nb: nbformat.NotebookNode) -> None:
    """Remove outputs, execution counts and execution timestamps from code cells, in place."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: chapters/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if outputs")
    args = parser.parse_args(argv)

    paths = args.paths or sorted((ROOT / "chapters").glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if not has_outputs(nb):
            continue
        dirty.append(path)
        if not args.check:
            clear(nb)
            nbformat.write(nb, path)
            print(f"cleared {path}")

    if args.check and dirty:
        for path in dirty:
            print(f"has outputs: {path}", file=sys.stderr)
        print(
            "error: notebooks must be committed without outputs; "
            "run `python tools/clear_outputs.py` and commit again",
            file=sys.stderr,
        )
        return 1
    if args.check:
        print(f"ok: {len(paths)} notebook(s) without outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
