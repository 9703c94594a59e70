"""Checkpoint files of :func:`mtlbook.fit`: written atomically, read with checks.

A checkpoint is one file written by ``torch.save`` that holds a dict of plain tensors, numbers,
strings and containers, so :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``
(no arbitrary code runs when a file is read). Besides the training state (model, optimiser,
weighting, data loader and random number generators, history, model selection), it holds
the checkpoint format and version and a *fingerprint* of the run's configuration: resuming a
run with another configuration is refused with an error that names what differs.

:func:`save_checkpoint` never leaves a half-written file under the checkpoint's name: it writes
a temporary file in the same folder, flushes it to disk and renames it over the old checkpoint
in one step (``os.replace``), so a crash while saving keeps the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CheckpointError", "describe",
           "differences", "load_checkpoint", "save_checkpoint"]

#: What the ``format`` entry of every checkpoint of :func:`mtlbook.fit` says.
CHECKPOINT_FORMAT = "mtlbook.fit checkpoint"
#: The layout version; a checkpoint of another version is refused.
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable or corrupt, not a checkpoint of
    :func:`mtlbook.fit`, of another format version, or written by another configuration."""


def _as_path(path: str | os.PathLike, argument: str) -> Path:
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"{argument} must be a file path (str or os.PathLike), got {path!r}")
    return Path(path)


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> None:
    """Write ``state`` (plus the format and version) to ``path`` atomically.

    The data go to a temporary file in the same folder, which is flushed and synced to disk
    and then renamed to ``path`` (replacing any file there in one step). If anything fails,
    the temporary file is removed and a previous file at ``path`` is left as it was. The
    folder is created when missing.

    Args:
        path: the checkpoint file.
        state: a dict of tensors, numbers, strings, ``None`` and containers of these.

    Example:
        >>> import tempfile, pathlib
        >>> from mtlbook.training.checkpoint import load_checkpoint, save_checkpoint
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "run.pt"
        ...     save_checkpoint(path, {"epoch": 3})
        ...     load_checkpoint(path)["epoch"]
        3
    """
    path = _as_path(path, "path")
    if path.is_dir():
        raise IsADirectoryError(f"the checkpoint path {str(path)!r} is a folder; give a file "
                                "path such as 'runs/model.pt'")
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`mtlbook.fit` (or :func:`save_checkpoint`).

    Tensors come back on the device they were saved from. The result holds, among others,
    ``epoch`` (epochs finished), ``history`` (rows ``[epoch, split, task, metric, value]``),
    ``best_epoch``, ``best_score`` and ``fingerprint`` (the run's configuration).

    Raises:
        FileNotFoundError: when there is no file at ``path``.
        CheckpointError: when the file cannot be read (corrupt, truncated, or not written
            by ``torch.save``), is not an mtlbook checkpoint, or has another format version.

    Example:
        >>> import tempfile, pathlib
        >>> from mtlbook.training.checkpoint import CheckpointError, load_checkpoint
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = pathlib.Path(folder) / "notes.txt"
        ...     _ = path.write_text("not a checkpoint")
        ...     try:
        ...         load_checkpoint(path)
        ...     except CheckpointError:
        ...         print("refused")
        refused
    """
    path = _as_path(path, "path")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    if path.is_dir():
        raise CheckpointError(f"{str(path)!r} is a folder, not a checkpoint file")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # pickle, zip and torch errors all mean: not readable
        raise CheckpointError(f"{str(path)!r} is not a readable mtlbook checkpoint (corrupt, "
                              f"truncated or another kind of file): {type(err).__name__}: "
                              f"{str(err)[:300]}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an mtlbook checkpoint (it has no "
                              f"'format': {CHECKPOINT_FORMAT!r} entry)")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{str(path)!r} is an mtlbook checkpoint of format version "
                              f"{state.get('version')!r}; this mtlbook reads version "
                              f"{CHECKPOINT_VERSION} only")
    return state


# ---------------------------------------------------------------------- fingerprints
def describe(value: Any) -> str:
    """A canonical text for a configuration value: tensors by shape and dtype (not their
    values, which training changes), mappings sorted by key, objects without a stable
    ``repr`` by their type."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={list(value.shape)}, dtype={value.dtype})"
    if isinstance(value, Mapping):
        items = sorted((describe(k), describe(v)) for k, v in value.items())
        return "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        inner = ", ".join(describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    text = repr(value)
    if " at 0x" in text:  # a default object repr: its address changes from run to run
        cls = type(value)
        return f"<{cls.__module__}.{cls.__qualname__}>"
    return text


def differences(saved: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """One line per fingerprint entry that differs: ``key: checkpoint …, now …``."""
    lines = []
    for key in list(current) + [k for k in saved if k not in current]:
        old, new = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if old != new:
            lines.append(f"{key}: checkpoint {_first_difference(old, new)}")
    return lines


def _first_difference(old: str, new: str) -> str:
    """``old``, now ``new``; for long multi-line values only the first differing line."""
    if len(old) + len(new) <= 240:
        return f"{old}, now {new}"
    if "\n" not in old and "\n" not in new:
        return f"{old[:150]}…, now {new[:150]}…"
    old_lines, new_lines = old.splitlines(), new.splitlines()
    for i in range(max(len(old_lines), len(new_lines))):
        a = old_lines[i].strip() if i < len(old_lines) else "<end>"
        b = new_lines[i].strip() if i < len(new_lines) else "<end>"
        if a != b:
            return f"line {i + 1} {a[:200]!r}, now {b[:200]!r}"
    return f"{old[:100]!r}…, now {new[:100]!r}…"
