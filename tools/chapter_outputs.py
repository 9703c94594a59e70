"""Execute the chapters and keep their text outputs, or compare two such runs.

A change that should not alter what the reader sees (a refactoring, a faster kernel) is checked
by running the chapters before and after it and comparing what they print:

    python tools/chapter_outputs.py run before/            # execute every chapter, save text
    ... change the code ...
    python tools/chapter_outputs.py run after/
    python tools/chapter_outputs.py diff before/ after/    # a unified diff per chapter

``run`` writes one ``<chapter>.txt`` per notebook: for every code cell, its printed output and
the text form of its results (tables, reprs), in order, plus a line per figure. Images are not
compared. ``diff`` prints the differences and a summary; with ``--ignore-timings`` it masks
what changes from run to run by itself: numbers with a unit of time (``s``, ``ms``, ``秒``,
``毫秒``), time ratios such as ``1.35x``, rates per second and temporary folders. Tables of
latencies or seconds without units in their cells still differ: read those diffs. It exits
with 1 if any chapter differs.

Run it with the project's environment (``source tools/env.sh``); the chapters run from a fresh
kernel each, as the book build runs them.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: What changes from run to run without the code changing: a number with a unit of time, a
#: time ratio ("1.35x"), a rate per second, a temporary folder.
_TIMING = re.compile(
    r"\d[\d.,]*\s*(?:s|ms|秒|毫秒)\b|\d\.\d+[x×]|per second|/tmp/\S+"
    r"| at 0x[0-9a-f]+|负载|load average",
    re.IGNORECASE,
)


def cell_text(cell) -> str:
    """The text a code cell shows: streams, text results and a marker per image."""
    parts = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            parts.append(f"[{out.get('name', 'stdout')}]\n{out.get('text', '')}")
        elif kind in ("execute_result", "display_data"):
            data = out.get("data", {})
            if "image/png" in data or "image/svg+xml" in data:
                parts.append("[figure]\n")
            elif "text/plain" in data:
                parts.append(f"{data['text/plain']}\n")
        elif kind == "error":
            parts.append(f"[error] {out.get('ename')}: {out.get('evalue')}\n")
    return "".join(parts)


def run(out_dir: Path, names: list[str], timeout: int) -> int:
    import nbformat
    from nbclient import NotebookClient

    out_dir.mkdir(parents=True, exist_ok=True)
    chapters = sorted((ROOT / "chapters").glob("*.ipynb"))
    if names:
        chapters = [p for p in chapters if p.stem in names or p.name in names]
    failed = 0
    for path in chapters:
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        status = "ok"
        try:
            NotebookClient(
                nb,
                timeout=timeout,
                kernel_name="python3",
                resources={"metadata": {"path": str(path.parent)}},
            ).execute()
        except Exception as err:  # keep the outputs up to the failing cell
            status, failed = f"FAILED ({type(err).__name__})", failed + 1
        text = "".join(
            f"--- cell {i}\n{cell_text(c)}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
        )
        target = out_dir / f"{path.stem}.txt"
        tmp = target.with_suffix(".txt.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(target)
        print(f"{path.stem}: {status} in {time.perf_counter() - start:.1f} s", flush=True)
    return 1 if failed else 0


def _comparable(lines: list[str], ignore_timings: bool) -> list[str]:
    return [("<timing>\n" if ignore_timings and _TIMING.search(line) else line) for line in lines]


def diff(before: Path, after: Path, ignore_timings: bool) -> int:
    names = sorted({p.name for p in before.glob("*.txt")} | {p.name for p in after.glob("*.txt")})
    differing = 0
    for name in names:
        a, b = before / name, after / name
        if not a.exists() or not b.exists():
            print(f"{name}: only in {'after' if not a.exists() else 'before'}")
            differing += 1
            continue
        old = _comparable(a.read_text(encoding="utf-8").splitlines(keepends=True), ignore_timings)
        new = _comparable(b.read_text(encoding="utf-8").splitlines(keepends=True), ignore_timings)
        lines = list(difflib.unified_diff(old, new, f"before/{name}", f"after/{name}"))
        if lines:
            differing += 1
            sys.stdout.writelines(lines)
        print(f"{name}: {'differs' if lines else 'same'}")
    print(f"{differing} of {len(names)} chapters differ")
    return 1 if differing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="execute chapters and save their text outputs")
    run_p.add_argument("out_dir", type=Path)
    run_p.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    run_p.add_argument("--timeout", type=int, default=300, help="seconds per cell")
    diff_p = sub.add_parser("diff", help="compare two saved runs")
    diff_p.add_argument("before", type=Path)
    diff_p.add_argument("after", type=Path)
    diff_p.add_argument("--ignore-timings", action="store_true")
    args = parser.parse_args()
    if args.command == "run":
        return run(args.out_dir, args.chapters, args.timeout)
    return diff(args.before, args.after, args.ignore_timings)


if __name__ == "__main__":
    sys.exit(main())
