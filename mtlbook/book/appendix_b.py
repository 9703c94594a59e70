"""Launch a training script under ``torchrun`` from Python and collect its result.

:func:`run_torchrun` starts ``python -m torch.distributed.run --standalone
--nproc_per_node=P script.py ARGS...`` in a subprocess with a time limit, passes the script the
path of a JSON file in the environment variable ``MTLBOOK_RESULT`` (rank 0 writes its result
there, see :func:`write_result`) and returns the parsed JSON with the wall time of the whole
launch. A failed launch raises with the tail of the processes' output, so that a notebook shows
why a worker died instead of hanging or printing nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["RESULT_ENV", "run_torchrun", "write_result"]

#: The environment variable that names the JSON file the script's rank 0 writes.
RESULT_ENV = "MTLBOOK_RESULT"


def write_result(result: Mapping[str, Any]) -> bool:
    """Write ``result`` (JSON-serialisable) to the file :func:`run_torchrun` expects.

    Call it on every process: only rank 0 (the ``RANK`` environment variable, 0 when unset)
    writes, atomically. Outside :func:`run_torchrun` (``MTLBOOK_RESULT`` unset) nothing is
    written.

    Args:
        result: a mapping of JSON-serialisable values.

    Returns:
        Whether this process wrote the file.

    Raises:
        ValueError: when ``result`` is not a mapping.
        TypeError: when it cannot be serialised to JSON.

    Example:
        >>> from mtlbook.book.appendix_b import write_result
        >>> write_result({"loss": 0.5})  # not started by run_torchrun: nothing written
        False
    """
    if not isinstance(result, Mapping):
        raise ValueError(f"result must be a mapping, got {type(result).__name__}")
    target = os.environ.get(RESULT_ENV)
    if not target or int(os.environ.get("RANK", "0")) != 0:
        return False
    text = json.dumps(dict(result))
    path = Path(target)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
    os.replace(f.name, path)
    return True


def run_torchrun(
    script: str | os.PathLike,
    nproc: int,
    args: Sequence[str] = (),
    *,
    timeout_s: float = 120.0,
    threads: int = 1,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``script`` on ``nproc`` local processes with ``torchrun --standalone``.

    Args:
        script: the Python file to run; it must call :func:`write_result` on its processes.
        nproc: number of processes (``--nproc_per_node``).
        args: command-line arguments passed to the script.
        timeout_s: the launch is killed after this many seconds.
        threads: ``OMP_NUM_THREADS`` of every process.
        env: extra environment variables.

    Returns:
        The JSON object rank 0 wrote, with ``"launch_seconds"`` added (the wall time of the
        whole launch: interpreter start-up, rendezvous, training and shutdown).

    Raises:
        ValueError: for a non-positive ``nproc``, ``timeout_s`` or ``threads``.
        FileNotFoundError: when ``script`` does not exist.
        RuntimeError: when the launch fails, times out or writes no result; the message holds
            the end of the processes' output.

    Example:
        >>> from mtlbook.book.appendix_b import run_torchrun
        >>> run_torchrun("train.py", 2, ["--epochs", "3"])  # doctest: +SKIP
        {'samples_per_s': 41234.5, ..., 'launch_seconds': 6.1}
    """
    for name, value in (("nproc", nproc), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(timeout_s, int | float) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"script {str(script)!r} does not exist")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(script),
            *map(str, args),
        ]
        full_env = {
            **os.environ,
            **(env or {}),
            RESULT_ENV: str(out),
            "OMP_NUM_THREADS": str(threads),
        }
        start = time.perf_counter()
        # A session of its own, so that a timeout can signal torchrun's whole group.
        process = subprocess.Popen(
            command,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            output = _stop(process)
            raise RuntimeError(
                f"torchrun with {nproc} processes timed out after "
                f"{timeout_s} s; output:\n{output[-3000:]}"
            ) from None
        seconds = time.perf_counter() - start
        if process.returncode != 0 or not out.exists():
            reason = (
                f"exit status {process.returncode}"
                if process.returncode != 0
                else "no result written (does the script call write_result?)"
            )
            raise RuntimeError(
                f"torchrun with {nproc} processes failed ({reason}); output:\n{output[-3000:]}"
            )
        result = json.loads(out.read_text())
    result["launch_seconds"] = seconds
    return result


def _stop(process: subprocess.Popen) -> str:
    """End a launch that timed out and return its output so far. SIGTERM first: torchrun
    passes it on to its workers, which run in sessions of their own (a signal to torchrun's
    group alone would leave them running and holding the output pipe); then SIGKILL for
    whatever is left of the group."""
    for sig, grace_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.communicate(timeout=grace_s)[0] or ""
    return ""
