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

**A run of fit.** With ``fit(..., checkpoint=PATH)`` the run is saved to that one file after
every ``checkpoint_every`` epochs (counted from the start of the run, resumed or not) and after
the last epoch (also when early stopping ends the run). The file holds the model's weights, the
optimiser's state, the weighting's state (:meth:`~mtlbook.weighting.Weighting.state_dict`), the
loader's shuffling state, the random number generators' states, the epoch, the step, the
history so far, the best score, epoch and weights, the early-stopping counter and the
fingerprint (:func:`run_fingerprint`). :class:`RunCheckpoint` checks ``fit``'s checkpoint
arguments, reads and writes the file.

**Resuming.** ``resume=True`` continues from the file ``checkpoint`` names; ``resume=PATH``
from another file (then ``checkpoint``, if given, receives the following checkpoints).
Build ``model`` and ``weighting`` as for the first run and pass the same arguments: the
run continues after the checkpoint's epoch, and its weights, history, best epoch and
score are the same as those of the run that was never interrupted (bitwise on the CPU;
the time in ``train_seconds`` adds up both parts). Since nothing in a run depends on the
total number of epochs, ``epochs`` may also be raised to train a finished run further:
it then ends as a run started with the larger ``epochs``. A checkpoint of a run that
already stopped early, or that already ran ``epochs``, gives its result without training.
``callbacks`` are not saved: they see the resumed epochs only, and their
``on_train_begin`` is called again. The epoch of a checkpoint is complete: an interrupted
epoch is run again from its start. A common pattern for jobs that may be stopped at any
time is ``fit(..., checkpoint=path, resume=os.path.exists(path))``.

**What is never overwritten.** If ``checkpoint`` names an existing file and the run does
not resume from it, that file must be a checkpoint of the same configuration (the same
run started again); any other file is refused with ``FileExistsError`` before training.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "RUN_STATE_KEYS",
    "CheckpointError",
    "RunCheckpoint",
    "describe",
    "differences",
    "load_checkpoint",
    "run_fingerprint",
    "save_checkpoint",
]

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
        raise IsADirectoryError(
            f"the checkpoint path {str(path)!r} is a folder; give a file "
            "path such as 'runs/model.pt'"
        )
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
        raise CheckpointError(
            f"{str(path)!r} is not a readable mtlbook checkpoint (corrupt, "
            f"truncated or another kind of file): {type(err).__name__}: "
            f"{str(err)[:300]}"
        ) from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(path)!r} is not an mtlbook checkpoint (it has no "
            f"'format': {CHECKPOINT_FORMAT!r} entry)"
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} is an mtlbook checkpoint of format version "
            f"{state.get('version')!r}; this mtlbook reads version "
            f"{CHECKPOINT_VERSION} only"
        )
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


# ---------------------------------------------------------------------- a run's checkpoints
#: What a checkpoint of :func:`mtlbook.fit` holds besides the format and version.
RUN_STATE_KEYS = (
    "fingerprint",
    "epoch",
    "step",
    "stopped",
    "history",
    "best_score",
    "best_epoch",
    "best_state",
    "stale",
    "model",
    "optimizer",
    "weighting",
    "loader",
    "rng",
    "train_seconds",
)


def run_fingerprint(
    model: torch.nn.Module,
    train: Any,
    valid: Any,
    *,
    weighting: Any,
    device: torch.device,
    **settings: Any,
) -> dict[str, str]:
    """What must not change between a run of :func:`mtlbook.fit` and its resumption, as text:
    the model's class, structure and parameter shapes, the schema, the data sizes, the
    weighting and its arguments, the device and every other setting given."""
    cls = type(model)
    shapes = [(k, list(v.shape), str(v.dtype)) for k, v in model.state_dict().items()]
    return {
        "model": f"{cls.__module__}.{cls.__qualname__}",
        "model structure": repr(model),
        "model parameters": describe(shapes),
        "schema": repr(train.schema),
        "train samples": str(len(train)),
        "valid samples": str(len(valid)),
        **{name: describe(value) for name, value in settings.items()},
        # One entry per argument of the strategy, so that a difference names the argument.
        **{
            ("weighting" if name == "class" else f"weighting {name}"): describe(value)
            for name, value in weighting.config().items()
        },
        "device": device.type,
    }


class RunCheckpoint:
    """Where a run of :func:`mtlbook.fit` is saved (``checkpoint``) and resumed from
    (``resume``); the arguments are ``fit``'s, checked here.

    :meth:`open` reads the checkpoint to resume from (refusing one of another configuration)
    and refuses to overwrite a file that is not a checkpoint of the same run; :meth:`due`
    says after which epochs to save; :meth:`write` writes atomically and remembers the epoch.
    """

    def __init__(
        self, checkpoint: str | os.PathLike | None, every: int, resume: bool | str | os.PathLike
    ) -> None:
        self.save_path: Path | None = None
        if checkpoint is not None:
            if isinstance(checkpoint, bool) or not isinstance(checkpoint, str | os.PathLike):
                raise TypeError(
                    f"checkpoint must be None or a file path (str or os.PathLike), "
                    f"got {checkpoint!r}"
                )
            self.save_path = Path(checkpoint)
            if self.save_path.is_dir():
                raise IsADirectoryError(
                    f"checkpoint={str(self.save_path)!r} is a folder; give "
                    "a file path such as 'runs/model.pt'"
                )
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
        self.every = every
        if resume is True and self.save_path is None:
            raise ValueError(
                "resume=True continues from the file that checkpoint names, but "
                "checkpoint is None; give checkpoint=PATH or resume=PATH"
            )
        if not isinstance(resume, bool | str | os.PathLike):
            raise TypeError(f"resume must be False, True or a checkpoint path, got {resume!r}")
        self.resume_path = (
            None if resume is False else self.save_path if resume is True else Path(resume)
        )
        #: The epoch whose state the file at ``save_path`` holds (``None``: none of this run).
        self.written: int | None = None

    def _in_place(self) -> bool:
        """Whether the run resumes from the file it saves to."""
        return (
            self.save_path is not None
            and self.resume_path is not None
            and os.path.abspath(self.save_path) == os.path.abspath(self.resume_path)
        )

    def open(self, fingerprint: dict[str, str], epochs: int) -> dict[str, Any] | None:
        """The state to resume from (``None``: start afresh), after the checks."""
        saved = None
        if self.resume_path is not None:
            saved = _read_resumable(self.resume_path, fingerprint, epochs)
        if self.save_path is not None and self.save_path.exists() and not self._in_place():
            _check_overwritable(self.save_path, fingerprint)
        if saved is not None and self._in_place():
            self.written = saved["epoch"]
        return saved

    def due(self, epoch: int, epochs: int, stopped: bool) -> bool:
        """Whether to save after ``epoch``: every ``checkpoint_every`` epochs, after the last
        one and when early stopping ends the run."""
        return self.save_path is not None and (
            epoch % self.every == 0 or epoch == epochs or stopped
        )

    def pending(self, epoch: int) -> bool:
        """Whether the file does not hold ``epoch`` yet (a run resumed from another file with
        nothing left to train)."""
        return self.save_path is not None and self.written != epoch

    def write(self, state: Mapping[str, Any]) -> None:
        """Save ``state`` (a dict with :data:`RUN_STATE_KEYS`) atomically."""
        assert self.save_path is not None
        save_checkpoint(self.save_path, state)


def _read_resumable(path: Path, fingerprint: dict[str, str], epochs: int) -> dict[str, Any]:
    """The checkpoint at ``path``, checked against this run's configuration."""
    try:
        state = load_checkpoint(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}, so there is nothing to resume; to start afresh when no "
            "checkpoint exists yet, pass resume=os.path.exists(path)"
        ) from err
    missing = [k for k in RUN_STATE_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"the checkpoint {str(path)!r} lacks {missing}; it was not written by mtlbook.fit"
        )
    differ = differences(state["fingerprint"], fingerprint)
    if differ:
        raise CheckpointError(
            f"the checkpoint {str(path)!r} was written by a run with another configuration, so "
            "resuming it would not continue that run:\n  "
            + "\n  ".join(differ)
            + "\nPass the model, data and arguments of that run (epochs may be raised)."
        )
    if state["epoch"] > epochs:
        raise CheckpointError(
            f"the checkpoint {str(path)!r} has already run {state['epoch']} "
            f"epochs, more than epochs={epochs}; pass epochs >= "
            f"{state['epoch']}"
        )
    return state


def _check_overwritable(path: Path, fingerprint: dict[str, str]) -> None:
    """Refuse to replace a file that is not a checkpoint of this configuration."""
    try:
        state = load_checkpoint(path)
    except CheckpointError as err:
        raise FileExistsError(
            f"checkpoint={str(path)!r} names an existing file that is not a "
            f"checkpoint of this run, and it is not overwritten: {err}. "
            "Choose another path or remove the file"
        ) from err
    differ = differences(state.get("fingerprint") or {}, fingerprint)
    if differ:
        raise FileExistsError(
            f"checkpoint={str(path)!r} holds the checkpoint of a run with another "
            "configuration, and it is not overwritten:\n  "
            + "\n  ".join(differ)
            + "\nChoose another path, remove the file, or resume that run with its own "
            "configuration"
        )
