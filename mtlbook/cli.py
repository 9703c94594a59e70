"""The ``train``, ``predict`` and ``evaluate`` commands of ``python -m mtlbook``.

From a user's files to a saved run and its scores::

    python -m mtlbook train train.csv --test test.csv --layout aliexpress --model mmoe \\
        --epochs 5 --out runs/mmoe
    python -m mtlbook predict runs/mmoe requests.csv -o scores.parquet --keep search_id
    python -m mtlbook evaluate runs/mmoe test.csv

``train`` fits the encoding on the training file (:class:`~mtlbook.data.FrameEncoder`),
encodes the validation and test files with it, trains with :func:`mtlbook.fit` (model
selection on the validation data), saves the run with :func:`mtlbook.save` and writes its
metrics to ``RUN/metrics.csv``. ``predict`` and ``evaluate`` load a run with
:func:`mtlbook.load`. An expected error (a missing file or column, a bad option, a run of
another version) prints one line ``error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

if TYPE_CHECKING:
    import pandas as pd

    from .data import MultiTaskData

__all__ = ["EXPECTED_ERRORS", "add_commands", "error_line"]

#: The errors a user can fix (in a file, a column or an option), which the commands report
#: as one line on stderr with exit status 2. A run of another format version raises
#: ``RunFormatError``, a ``ValueError``, and so do bad TOML and JSON.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    KeyError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    FloatingPointError,
)
_TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_SPEC_KEYS = ("dense", "categorical", "group", "tasks", "encoding")
_ENCODING_KEYS = ("min_count", "hash_buckets", "standardize")
_TASK_KEYS = ("kind", "mask")

_TRAIN_EXAMPLES = r"""examples:
  # MTReclib's processed AliExpress files of one country
  python -m mtlbook train AliExpress_NL/train.csv --test AliExpress_NL/test.csv \
      --layout aliexpress --model mmoe --epochs 5 --early-stopping 2 --out runs/nl-mmoe

  # the columns in a TOML file (glob patterns allowed), MMoE with 8 experts
  python -m mtlbook train train.parquet --valid valid.parquet --spec spec.toml \
      --model mmoe --model-args '{"n_experts": 8}' --weighting uncertainty --out runs/mmoe

  # plain columns; buy is defined on clicked rows only
  python -m mtlbook train events.csv --dense 'price,num_*' --categorical user,item \
      --tasks click:binary,buy:binary@click --model shared_bottom --out runs/sb

spec.toml (keys dense, categorical, group, [tasks], [encoding]):
  dense = ["numerical_*"]                      # names or glob patterns
  categorical = ["categorical_*"]
  group = "search_id"                          # optional: GAUC per group
  [tasks]
  click = "binary"
  conversion = {kind = "binary", mask = "click"}
  [encoding]                                   # optional; the command line wins
  min_count = 2
  hash_buckets = 100000
  standardize = true

Glob patterns match the training file's columns in file order, leaving out the task, mask
and group columns. The validation and test files are encoded with the training vocabulary:
values never seen in training get each column's unknown code (the summary counts them).
"""

_PREDICT_EXAMPLES = r"""examples:
  python -m mtlbook predict runs/nl-mmoe AliExpress_NL/test.csv -o scores.parquet \
      --keep search_id
  python -m mtlbook predict runs/sb requests.csv -o scores.csv --overwrite

The output has the kept columns, then one probability per task (plus pctr, pcvr, pctcvr
for ESMM and AITM), in the rows' order. The file needs the feature columns, not the labels.
"""

_EVALUATE_EXAMPLES = r"""examples:
  python -m mtlbook evaluate runs/nl-mmoe AliExpress_NL/test.csv
  python -m mtlbook evaluate runs/sb test.parquet --metrics auc,logloss --csv test-metrics.csv

The file needs the label columns (and mask and group columns) the run was trained with.
"""


# ---------------------------------------------------------------------------- parsers
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _model_epilog() -> str:
    from .analysis.compare import MODEL_NAMES
    from .weighting import standard_strategies

    weightings = [w for w in standard_strategies() if w not in ("fixed", "scheduled")]
    return (
        "models (--model; class names such as MMoE work too; 'single' trains SingleTask, a "
        "network per task):\n  "
        + ", ".join(MODEL_NAMES)
        + "\nweightings (--weighting):\n  "
        + ", ".join(weightings)
    )


def _layouts() -> str:
    from .datasets import PROCESSED_LAYOUTS

    return ", ".join(PROCESSED_LAYOUTS)


def add_commands(commands: Any) -> None:
    """Add ``train``, ``predict`` and ``evaluate`` to the sub-parsers ``commands``."""
    _add_train(commands)
    _add_predict(commands)
    _add_evaluate(commands)


def _add_train(commands: Any) -> None:
    cmd = commands.add_parser(
        "train",
        help="train a model on your files and save the run",
        description="Fit the encoding on TRAIN, train a model (epoch selected on the "
        "validation data), save the run (run.json, model.pt, metrics.csv) and print its "
        "metrics.",
        epilog=_TRAIN_EXAMPLES + "\n" + _model_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("train", metavar="TRAIN", help="training file (.csv, .tsv, .parquet)")
    files = cmd.add_argument_group("validation and test files")
    valid = files.add_mutually_exclusive_group()
    valid.add_argument("--valid", metavar="FILE", help="validation file")
    valid.add_argument(
        "--valid-fraction",
        type=_fraction,
        default=None,
        metavar="F",
        help="without --valid: validate on this random fraction of TRAIN's rows, drawn with "
        "--seed (default: 0.1); the encoding is fitted on all of TRAIN",
    )
    files.add_argument("--test", metavar="FILE", help="test file, scored after training")
    cols = cmd.add_argument_group("columns (one of --layout, --spec, or --tasks with features)")
    cols.add_argument("--layout", metavar="NAME", help=f"a processed layout: {_layouts()}")
    cols.add_argument("--spec", metavar="FILE", help="a TOML file naming the columns")
    cols.add_argument("--dense", type=_names, metavar="COLS", help="numeric feature columns")
    cols.add_argument(
        "--categorical", type=_names, metavar="COLS", help="categorical feature columns"
    )
    cols.add_argument(
        "--tasks",
        metavar="SPEC",
        help="label columns with their kind, e.g. click:binary,buy:binary@click "
        "(@COL: defined where COL is true)",
    )
    cols.add_argument("--group", metavar="COL", help="group ids (e.g. user) for GAUC")
    enc = cmd.add_argument_group("encoding")
    enc.add_argument(
        "--min-count", type=_positive_int, metavar="N", help="rarer values are unknown (1)"
    )
    enc.add_argument(
        "--hash-buckets", type=_positive_int, metavar="N", help="hash categorical columns"
    )
    enc.add_argument(
        "--standardize",
        action="store_const",
        const=True,
        default=None,
        help="standardize dense columns with the training mean and std",
    )
    _add_training_options(cmd)


def _add_training_options(cmd: argparse.ArgumentParser) -> None:
    model = cmd.add_argument_group("model and training")
    model.add_argument("--model", required=True, metavar="NAME", help="e.g. mmoe, esmm, ple")
    model.add_argument(
        "--model-args", metavar="JSON", help="constructor arguments, e.g. '{\"n_experts\": 8}'"
    )
    model.add_argument("--weighting", metavar="NAME", help="loss weighting (default: equal)")
    model.add_argument("--epochs", type=_positive_int, default=10, help="maximum epochs (10)")
    model.add_argument(
        "--early-stopping",
        type=_positive_int,
        metavar="PATIENCE",
        help="stop after this many epochs without validation improvement",
    )
    model.add_argument("--batch-size", type=_positive_int, default=256, help="(256)")
    model.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (0.001)")
    model.add_argument("--seed", type=_count, default=0, help="weights, batches and split (0)")
    model.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    out = cmd.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="RUN", help="the run folder to write")
    out.add_argument("--overwrite", action="store_true", help="replace an existing run")
    out.add_argument("--export", action="store_true", help="also write model.pt2 (serving)")
    out.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    cmd.set_defaults(run=_guarded(_train), command_parser=cmd)


def _add_predict(commands: Any) -> None:
    cmd = commands.add_parser(
        "predict",
        help="score a file with a saved run",
        description="Score every row of FILE with the run RUN and write the scores to OUT "
        "(.parquet or .csv).",
        epilog=_PREDICT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("run_path", metavar="RUN", help="a run folder written by train")
    cmd.add_argument("file", metavar="FILE", help="rows to score (.csv, .tsv, .parquet)")
    cmd.add_argument("-o", "--output", required=True, metavar="OUT", help=".parquet or .csv")
    cmd.add_argument("--batch-size", type=_positive_int, default=8192, help="(8192)")
    cmd.add_argument(
        "--keep", type=_names, default=[], metavar="COLS", help="columns of FILE to copy"
    )
    cmd.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    cmd.set_defaults(run=_guarded(_predict), command_parser=cmd)


def _add_evaluate(commands: Any) -> None:
    cmd = commands.add_parser(
        "evaluate",
        help="print a saved run's metrics on a labelled file",
        description="Score FILE with the run RUN and print the metrics per task.",
        epilog=_EVALUATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("run_path", metavar="RUN", help="a run folder written by train")
    cmd.add_argument("file", metavar="FILE", help="labelled rows (.csv, .tsv, .parquet)")
    cmd.add_argument("--metrics", type=_names, metavar="NAMES", help="e.g. auc,logloss")
    cmd.add_argument("--batch-size", type=_positive_int, default=8192, help="(8192)")
    cmd.add_argument("--csv", metavar="OUT", help="also write the table (task, metric, value)")
    cmd.add_argument("--overwrite", action="store_true", help="replace an existing --csv")
    cmd.set_defaults(run=_guarded(_evaluate), command_parser=cmd)


# ---------------------------------------------------------------------------- errors
def error_line(err: BaseException) -> str:
    """The one-line message of an expected error (no traceback)."""
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    elif isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def _guarded(
    command: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace, argparse.ArgumentParser], int]:
    """``command`` with its expected errors turned into ``error: ...`` and status 2."""

    def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        try:
            return command(args)
        except EXPECTED_ERRORS as err:
            print(f"error: {error_line(err)}", file=sys.stderr)
            return 2

    run.__name__ = command.__name__
    return run


@contextmanager
def _about(what: str) -> Iterator[None]:
    """Prefix the message of a ValueError or KeyError raised inside with ``what``."""
    try:
        yield
    except (ValueError, KeyError) as err:
        text = error_line(err)
        raise ValueError(text if what in text else f"{what}: {text}") from err


# ---------------------------------------------------------------------------- columns
@dataclass
class _Columns:
    """Where the columns come from: a processed ``layout``, or the lists themselves (which
    may hold glob patterns, matched against the training file's header)."""

    layout: str | None = None
    dense: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    tasks: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    encoding: dict[str, Any] = field(default_factory=dict)


def _columns(args: argparse.Namespace) -> _Columns:
    """The column source chosen on the command line (exactly one)."""
    plain = [
        f"--{name}"
        for name in ("dense", "categorical", "tasks", "group")
        if getattr(args, name) is not None
    ]
    chosen = [
        name for name, on in (("--layout", args.layout), ("--spec", args.spec)) if on is not None
    ]
    if plain:
        chosen.append("/".join(plain))
    if len(chosen) != 1:
        given = f"; got {' and '.join(chosen)}" if chosen else ""
        raise ValueError(
            "name the columns with one of --layout NAME, --spec FILE.toml or --tasks SPEC "
            f"(with --dense/--categorical COLS){given}"
        )
    if args.layout is not None:
        columns = _Columns(layout=_layout_name(args.layout))
    elif args.spec is not None:
        columns = _read_spec(args.spec)
    else:
        if args.tasks is None:
            raise ValueError("--tasks is required with --dense/--categorical, e.g. click:binary")
        columns = _Columns(
            dense=args.dense or [],
            categorical=args.categorical or [],
            tasks=_parse_tasks(args.tasks),
            group=args.group,
        )
        if not (columns.dense or columns.categorical):
            raise ValueError("name the feature columns with --dense and/or --categorical")
    options = {key: getattr(args, key) for key in _ENCODING_KEYS}
    columns.encoding.update({k: v for k, v in options.items() if v is not None})
    return columns


def _layout_name(name: str) -> str:
    from .datasets import layout_spec

    with _about("--layout"):
        layout_spec(name)
    return name


def _parse_tasks(text: str) -> dict[str, Any]:
    """``click:binary,buy:binary@click`` → ``{"click": "binary", "buy": {"kind": "binary",
    "mask": "click"}}``."""
    tasks: dict[str, Any] = {}
    for part in _names(text):
        name, colon, rest = part.partition(":")
        kind, at, mask = rest.partition("@")
        name, kind, mask = name.strip(), kind.strip(), mask.strip()
        if not (colon and name and kind) or (at and not mask):
            raise ValueError(
                f"--tasks: expected NAME:KIND or NAME:KIND@MASK (e.g. "
                f"click:binary,buy:binary@click), got {part!r}"
            )
        if name in tasks:
            raise ValueError(f"--tasks: task {name!r} is given twice")
        tasks[name] = {"kind": kind, "mask": mask} if mask else kind
    if not tasks:
        raise ValueError("--tasks: name at least one task, e.g. click:binary")
    return tasks


def _read_spec(path: str) -> _Columns:
    """The columns of a TOML spec (see the ``train`` help)."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(f"--spec: no such file: {path!r}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--spec {path}: not valid TOML: {err}") from None
    where = f"--spec {path}"
    _no_unknown_keys(raw, _SPEC_KEYS, where)
    tasks = raw.get("tasks")
    if not isinstance(tasks, Mapping) or not tasks:
        raise ValueError(
            f'{where}: needs a [tasks] table, e.g. [tasks] click = "binary", got {tasks!r}'
        )
    for name, task in tasks.items():
        if isinstance(task, Mapping):
            _no_unknown_keys(task, _TASK_KEYS, f"{where}: task {name!r}")
        elif not isinstance(task, str):
            raise ValueError(
                f'{where}: task {name!r} must be a kind such as "binary" or a table '
                f"{{kind = ..., mask = ...}}, got {task!r}"
            )
    group = raw.get("group")
    if group is not None and not isinstance(group, str):
        raise ValueError(f"{where}: group must be one column name, got {group!r}")
    encoding = raw.get("encoding", {})
    if not isinstance(encoding, Mapping):
        raise ValueError(f"{where}: [encoding] must be a table, got {encoding!r}")
    _no_unknown_keys(encoding, _ENCODING_KEYS, f"{where}: [encoding]")
    return _Columns(
        dense=_string_list(raw.get("dense", []), f"{where}: dense"),
        categorical=_string_list(raw.get("categorical", []), f"{where}: categorical"),
        tasks={name: dict(t) if isinstance(t, Mapping) else t for name, t in tasks.items()},
        group=group,
        encoding=dict(encoding),
    )


def _no_unknown_keys(table: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; the keys are {list(known)}")


def _string_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of column names or patterns, got {value!r}")
    return list(value)


def _match(
    patterns: Sequence[str], header: Sequence[str], option: str, reserved: set[str], file: str
) -> list[str]:
    """The columns of ``header`` named by ``patterns`` (names or glob patterns), in file
    order. A pattern never matches a ``reserved`` (task, mask or group) column."""
    chosen: set[str] = set()
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            hits = [c for c in header if fnmatch.fnmatchcase(c, pattern) and c not in reserved]
            what = "pattern"
        else:
            hits = [pattern] if pattern in header else []
            what = "column"
        if not hits:
            shown = ", ".join(header[:12]) + (", …" if len(header) > 12 else "")
            raise ValueError(
                f"{option}: {what} {pattern!r} matches no column of {file} (its columns: {shown})"
            )
        chosen.update(hits)
    return [c for c in header if c in chosen]


# ---------------------------------------------------------------------------- reading
def _read_first(path: str, columns: _Columns) -> tuple[MultiTaskData, str]:
    """The training data (fitting the encoder) and a line describing what was read."""
    from .data import MultiTaskData, read_table
    from .data._io import table_columns
    from .datasets import read_processed

    if columns.layout is not None:
        with _about(path):
            data = read_processed(path, columns.layout, **columns.encoding)
        return data, f"read {path}: {len(data):,} rows (layout {columns.layout})"
    header = table_columns(path)
    reserved = set(columns.tasks) | ({columns.group} if columns.group else set())
    reserved |= {t["mask"] for t in columns.tasks.values() if isinstance(t, Mapping)}
    dense = _match(columns.dense, header, "--dense", reserved, path)
    categorical = _match(columns.categorical, header, "--categorical", reserved, path)
    labels = [c for c in header if c in reserved]  # missing ones: from_frame names them
    df = read_table(path, columns=[c for c in header if c in {*dense, *categorical, *labels}])
    with _about(path):
        data = MultiTaskData.from_frame(
            df,
            dense=dense,
            categorical=categorical,
            tasks=columns.tasks,
            group=columns.group,
            **columns.encoding,
        )
    return data, f"read {path}: {len(df):,} rows, {df.shape[1]} of its {len(header)} columns"


def _read_like(path: str, train: MultiTaskData, columns: _Columns) -> MultiTaskData:
    """A validation or test file encoded with the training encoder."""
    from .data import MultiTaskData, read_table
    from .datasets import read_processed

    if columns.layout is not None:
        with _about(path):
            return read_processed(path, columns.layout, like=train)
    enc = train.encoder
    wanted = list(dict.fromkeys(enc.feature_columns() + enc.label_columns()))
    text = [c for c in enc.categorical if enc.kinds.get(c) == "text"]
    df = read_table(path, columns=wanted, text_columns=text)
    with _about(path):
        return MultiTaskData.from_frame(df, like=train)


def _describe_columns(data: MultiTaskData) -> str:
    enc = data.encoder
    tasks = []
    for name, spec in enc.tasks.items():
        mask = f", where {spec['mask']}" if spec.get("mask") else ""
        tasks.append(f"{name} ({spec['kind']}{mask})")
    group = f"; group {enc.group}" if enc.group else ""
    return (
        f"features: {len(enc.dense)} dense, {len(enc.categorical)} categorical; "
        f"tasks: {', '.join(tasks)}{group}"
    )


def _unknown_counts(data: MultiTaskData) -> dict[str, int]:
    """Rows per categorical column that got the unknown code (the column's last code)."""
    enc = data.encoder
    if data.categorical is None:
        return {}
    counts = {
        col: int((data.categorical[:, j] == enc.unknown_code(col)).sum())
        for j, col in enumerate(enc.categorical)
    }
    return {col: n for col, n in counts.items() if n}


# ---------------------------------------------------------------------------- train
def _model_class(name: str) -> type:
    """The model class of a ``compare`` model name (``single`` → SingleTask)."""
    from .analysis.compare import resolve_models
    from .analysis.runs import PerTask

    with _about("--model"):
        (spec,) = resolve_models([name]).values()
    if isinstance(spec, PerTask):  # one model per task cannot be one run: train SingleTask
        spec = spec.factory
    cls = getattr(spec, "cls", None)
    if not isinstance(cls, type):  # pragma: no cover - every name resolves to a class
        raise ValueError(f"--model {name!r} does not name a model class")
    return cls


def _model_args(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--model-args is not valid JSON ({err}): {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(
            f'--model-args must be a JSON object such as {{"n_experts": 8}}, got {text!r}'
        )
    return value


def _weighting(name: str | None) -> Any:
    from .analysis.compare import resolve_weightings

    if name is None:
        return None
    with _about("--weighting"):
        (make,) = resolve_weightings([name]).values()
    return make()


def _check_model_args(cls: type, options: dict[str, Any]) -> None:
    """Refuse, before reading any data, an argument ``cls`` does not take."""
    try:
        inspect.signature(cls).bind(None, seed=0, **options)
    except TypeError as err:
        raise ValueError(f"--model-args for {cls.__name__}: {err}") from None


def _build_model(cls: type, data: MultiTaskData, options: dict[str, Any], seed: int) -> Any:
    try:
        return cls(data.schema, seed=seed, **options)
    except (TypeError, ValueError) as err:
        given = "--model-args" if options else "--model"
        raise ValueError(f"{given} {cls.__name__}: {error_line(err)}") from None


def _check_free(path: str, overwrite: bool, option: str) -> None:
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"{option} {path} exists; pass --overwrite to replace it")


def _check_run_target(out: str, overwrite: bool) -> None:
    """Refuse, before any training, an ``--out`` that :func:`mtlbook.save` would refuse."""
    from .training.artefact import _check_target

    if os.path.lexists(out) and not overwrite:
        raise FileExistsError(f"--out {out} exists; pass --overwrite to replace the run there")
    _check_target(Path(out), overwrite)  # never replaces what is not a run


def _train(args: argparse.Namespace) -> int:
    import torch

    import mtlbook as mb

    _check_run_target(args.out, args.overwrite)
    columns = _columns(args)
    cls, options = _model_class(args.model), _model_args(args.model_args)
    _check_model_args(cls, options)
    weighting = _weighting(args.weighting)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    train, line = _read_first(args.train, columns)
    print(line)
    print(_describe_columns(train))
    if args.valid is not None:
        valid = _read_like(args.valid, train, columns)
        print(f"read {args.valid}: {len(valid):,} rows")
    else:
        fraction = 0.1 if args.valid_fraction is None else args.valid_fraction
        with _about("--valid-fraction"):
            train, valid = train.split((1 - fraction, fraction), seed=args.seed)
        print(f"validation: {len(valid):,} random rows of {args.train} (seed {args.seed})")
    test = None if args.test is None else _read_like(args.test, train, columns)
    if test is not None:
        print(f"read {args.test}: {len(test):,} rows")
    _print_unknown({"valid": valid, "test": test})
    model = _build_model(cls, train, options, args.seed)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = mb.fit(
        model,
        train,
        valid,
        epochs=args.epochs,
        early_stopping=args.early_stopping,
        batch_size=args.batch_size,
        lr=args.lr,
        weighting=weighting,
        seed=args.seed,
        progress=progress,
    )
    metrics = _run_metrics(result, test)
    path = mb.save(
        result.model,
        args.out,
        result=result,
        encoder=train.encoder,
        metadata=_metadata(args, options),
        export=args.export,
        overwrite=args.overwrite,
    )
    _write_table(metrics, Path(path) / "metrics.csv")
    print(
        f"{cls.__name__}, {result.epochs_run} epoch(s) in {result.train_seconds:.2f} s; "
        f"best epoch {result.best_epoch} (valid {result.monitor} {result.best_score:.4f})"
    )
    print(_metric_table(metrics))
    print(f"run saved to {path}")
    return 0


def _print_unknown(parts: Mapping[str, MultiTaskData | None]) -> None:
    for split, data in parts.items():
        counts = {} if data is None else _unknown_counts(data)
        if data is not None and counts:
            shown = ", ".join(f"{col} {n:,} ({n / len(data):.1%})" for col, n in counts.items())
            print(f"unknown values in {split} (not in the training vocabulary): {shown}")


def _run_metrics(result: Any, test: MultiTaskData | None) -> pd.DataFrame:
    """Tidy ``split, task, metric, value``: validation at the best epoch, then test."""
    import pandas as pd

    import mtlbook as mb

    history = result.history
    rows = history[(history["split"] == "valid") & (history["epoch"] == result.best_epoch)]
    # A task's validation loss repeats its logloss or MSE: keep only the total ("all").
    rows = rows[(rows["metric"] != "loss") | (rows["task"] == "all")]
    parts = [rows[["split", "task", "metric", "value"]]]
    if test is not None:
        parts.append(mb.evaluate(result.model, test).assign(split="test"))
    frame = pd.concat(parts, ignore_index=True)
    return frame[["split", "task", "metric", "value"]]


def _metadata(args: argparse.Namespace, options: dict[str, Any]) -> dict[str, Any]:
    def where(path: str | None) -> str | None:
        return None if path is None else str(Path(path).resolve())

    argv = getattr(args, "argv", None)
    return {
        "command": None if argv is None else "python -m mtlbook " + shlex.join(argv),
        "files": {"train": where(args.train), "valid": where(args.valid), "test": where(args.test)},
        "valid_fraction": None if args.valid else (args.valid_fraction or 0.1),
        "layout": args.layout,
        "spec": where(args.spec),
        "model": args.model,
        "model_args": options,
        "weighting": args.weighting or "equal",
        "epochs": args.epochs,
        "early_stopping": args.early_stopping,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
    }


# ---------------------------------------------------------------------------- predict, evaluate
def _predict(args: argparse.Namespace) -> int:
    import pandas as pd

    import mtlbook as mb

    out = Path(args.output)
    _table_format(out, "-o")
    _check_free(args.output, args.overwrite, "-o")
    run = mb.load(args.run_path)
    with _about(args.file):
        scores = run.predict(args.file, batch_size=args.batch_size)
    if args.keep:
        scores = pd.concat([_kept(args.file, args.keep, scores), scores], axis=1)
    _write_table(scores, out)
    print(f"wrote {len(scores):,} rows ({', '.join(map(str, scores.columns))}) to {out}")
    return 0


def _kept(path: str, keep: list[str], scores: pd.DataFrame) -> pd.DataFrame:
    from .data import read_table

    clash = [c for c in keep if c in scores.columns]
    if clash:
        raise ValueError(
            f"--keep {clash}: the output already has score column(s) of that name "
            f"({', '.join(map(str, scores.columns))})"
        )
    with _about(f"--keep {','.join(keep)}"):
        kept = read_table(path, columns=keep)
    if len(kept) != len(scores):  # pragma: no cover - the same file, read twice
        raise ValueError(f"--keep: {path} has {len(kept)} rows, the scores {len(scores)}")
    return kept[keep].reset_index(drop=True).set_axis(scores.index)


def _evaluate(args: argparse.Namespace) -> int:
    import mtlbook as mb

    if args.csv is not None:
        _table_format(Path(args.csv), "--csv")
        _check_free(args.csv, args.overwrite, "--csv")
    run = mb.load(args.run_path)
    with _about(args.file):
        table = run.evaluate(args.file, metrics=args.metrics, batch_size=args.batch_size)
    print(f"{type(run.model).__name__} run {args.run_path} on {args.file}:")
    print(_metric_table(table))
    if args.csv is not None:
        _write_table(table, Path(args.csv))
        print(f"metrics written to {args.csv}")
    return 0


# ---------------------------------------------------------------------------- output
def _metric_table(tidy: pd.DataFrame) -> str:
    """``task × metric`` (rows ``split, task`` when there is a split column), 4 decimals, in
    the order the rows come."""
    import pandas as pd

    index = ["split", "task"] if "split" in tidy.columns else ["task"]
    order = tidy[index].drop_duplicates()
    wide = tidy.pivot(index=index, columns="metric", values="value")
    rows = pd.MultiIndex.from_frame(order) if len(index) > 1 else pd.Index(order["task"])
    wide = wide.reindex(index=rows, columns=list(dict.fromkeys(tidy["metric"])))
    wide.columns.name = None
    return wide.to_string(float_format=lambda v: f"{v:.4f}", na_rep="")


def _table_format(path: Path, option: str) -> str:
    fmt = _TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{option} {str(path)!r}: write .parquet or .csv (by the suffix), got "
            f"{path.suffix or 'no suffix'}"
        )
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a folder; give a file name")
    return fmt


def _write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV or Parquet (by the suffix) to a temporary file beside ``path``,
    then rename it: a reader never sees half a file, and a crash leaves no partial file."""
    fmt = _table_format(path, "output")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            if fmt == "csv":
                frame.to_csv(file, index=False)
            else:
                frame.to_parquet(file, index=False)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
