"""Execute one notebook with nbclient and save the result, also when a cell fails.

This script runs with the interpreter of the Colab-like virtual environment built by
``tests/test_colab_path.py``, so it imports only what that environment has (nbclient,
nbformat and the standard library), never mtlbook::

    python run_notebook.py NOTEBOOK EXECUTED --kernel NAME [--cell-timeout SECONDS]

The notebook runs in its own folder (the kernel's working directory). The executed copy,
with every output produced up to the first error, is written to EXECUTED. The exit status
is 0 when every cell ran, 1 when a cell raised (its error is printed to stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path, help="the notebook to execute")
    parser.add_argument("executed", type=Path, help="where to write the executed copy")
    parser.add_argument("--kernel", required=True, help="name of the kernel spec to start")
    parser.add_argument(
        "--cell-timeout", type=int, default=300, help="seconds one cell may run (default: 300)"
    )
    args = parser.parse_args(argv)

    notebook = nbformat.read(args.notebook, as_version=4)
    client = NotebookClient(
        notebook,
        kernel_name=args.kernel,
        timeout=args.cell_timeout,
        startup_timeout=120,
        resources={"metadata": {"path": str(args.notebook.resolve().parent)}},
    )
    status = 0
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as error:
        print(f"{args.notebook.name}: a cell failed\n{error}", file=sys.stderr)
        status = 1
    finally:
        nbformat.write(notebook, args.executed)
    return status


if __name__ == "__main__":
    sys.exit(main())
