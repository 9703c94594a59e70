"""KuaiRand-Pure (Gao et al., CIKM 2022): short-video feedback logs as a :class:`MultiTaskData`.

The published archive ``KuaiRand-Pure.tar.gz`` holds ``KuaiRand-Pure/data/`` with three
comma-separated logs with a header line — ``log_standard_4_08_to_4_21_pure.csv`` and
``log_standard_4_22_to_5_08_pure.csv`` (the standard recommendation feeds) and
``log_random_4_22_to_5_08_pure.csv`` (randomly exposed videos) — and the side files
``user_features_pure.csv``, ``video_features_basic_pure.csv`` and
``video_features_statistic_pure.csv`` (plus ``LICENSE`` and ``load_data_pure.py``).
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import pandas as pd

from ..data import MultiTaskData, TaskSpec
from ._loaders import check_no_leak

__all__ = [
    "ARCHIVE",
    "KUAIRAND_DEFAULT_TASKS",
    "KUAIRAND_FORBIDDEN",
    "KUAIRAND_LOGS",
    "KUAIRAND_SIGNALS",
    "LOG_COLUMNS",
    "load_kuairand",
    "select_logs",
]

ARCHIVE = "KuaiRand-Pure.tar.gz"
#: The header of every log file, in file order (KuaiRand README, "Descriptions of the fields").
LOG_COLUMNS = (
    "user_id",
    "video_id",
    "date",
    "hourmin",
    "time_ms",
    "is_click",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "long_view",
    "play_time_ms",
    "duration_ms",
    "profile_stay_time",
    "comment_stay_time",
    "is_profile_enter",
    "is_rand",
    "tab",
)
#: The binary feedback signals of a log line; any of them can be a task.
KUAIRAND_SIGNALS = (
    "is_click",
    "long_view",
    "is_like",
    "is_follow",
    "is_comment",
    "is_forward",
    "is_hate",
    "is_profile_enter",
)
KUAIRAND_DEFAULT_TASKS = ("is_click", "long_view", "is_like")
#: log file → (exposure, period); ``max_rows`` counts rows in this order.
KUAIRAND_LOGS: dict[str, tuple[str, str]] = {
    "log_standard_4_08_to_4_21_pure.csv": ("standard", "4_08_to_4_21"),
    "log_standard_4_22_to_5_08_pure.csv": ("standard", "4_22_to_5_08"),
    "log_random_4_22_to_5_08_pure.csv": ("random", "4_22_to_5_08"),
}
_USER_FILE = "user_features_pure.csv"
_VIDEO_FILE = "video_features_basic_pure.csv"
# Columns of video_features_statistic_pure.csv: averages of the outcomes (plays, likes, follows,
# shares, ...) over a month that overlaps the logs. The file is never read.
_STATISTIC_COLUMNS = (
    "counts",
    "show_cnt",
    "show_user_num",
    "play_cnt",
    "play_user_num",
    "play_duration",
    "complete_play_cnt",
    "complete_play_user_num",
    "valid_play_cnt",
    "valid_play_user_num",
    "long_time_play_cnt",
    "long_time_play_user_num",
    "short_time_play_cnt",
    "short_time_play_user_num",
    "play_progress",
    "comment_stay_duration",
    "like_cnt",
    "like_user_num",
    "click_like_cnt",
    "double_click_cnt",
    "cancel_like_cnt",
    "cancel_like_user_num",
    "comment_cnt",
    "comment_user_num",
    "direct_comment_cnt",
    "reply_comment_cnt",
    "delete_comment_cnt",
    "delete_comment_user_num",
    "comment_like_cnt",
    "comment_like_user_num",
    "follow_cnt",
    "cancel_follow_cnt",
    "cancel_follow_user_num",
    "share_cnt",
    "share_user_num",
    "download_cnt",
    "download_user_num",
    "report_cnt",
    "report_user_num",
    "reduce_similar_cnt",
    "reduce_similar_user_num",
    "collect_cnt",
    "collect_user_num",
    "cancel_collect_cnt",
    "cancel_collect_user_num",
    "direct_comment_user_num",
    "reply_comment_user_num",
    "share_all_cnt",
    "share_all_user_num",
    "outsite_share_all_cnt",
)
#: Labels and everything observed only after (or because of) the exposure: never features.
#: (The statistic file's ``follow_user_num`` is left out of this set: the user feature of the
#: same name, the number of accounts the user follows, is known before the exposure.)
KUAIRAND_FORBIDDEN = frozenset(
    {
        *KUAIRAND_SIGNALS,
        "play_time_ms",
        "profile_stay_time",
        "comment_stay_time",
        *_STATISTIC_COLUMNS,
    }
)

_MISSING = "<missing>"
# Fixed vocabularies published in the KuaiRand README; code 0 is "<missing>" (no feature row,
# an empty cell, or a value outside the list).
_USER_VOCAB: dict[str, tuple[str, ...]] = {
    "user_active_degree": ("high_active", "full_active", "middle_active", "UNKNOWN"),
    "follow_user_num_range": (
        "0",
        "(0,10]",
        "(10,50]",
        "(50,100]",
        "(100,150]",
        "(150,250]",
        "(250,500]",
        "500+",
    ),
    "fans_user_num_range": (
        "0",
        "[1,10)",
        "[10,100)",
        "[100,1k)",
        "[1k,5k)",
        "[5k,1w)",
        "[1w,10w)",
    ),
    "friend_user_num_range": ("0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+"),
    "register_days_range": ("15-30", "31-60", "61-90", "91-180", "181-365", "366-730", "730+"),
}
_USER_BINARY = ("is_lowactive_period", "is_live_streamer", "is_video_author")
# onehot_featK takes the values 0 .. size-1 (README ranges).
_ONEHOT_SIZES = (2, 7, 50, 1471, 15, 34, 3, 118, 454, 7, 5, 5, 2, 2, 2, 2, 2, 2)
# Dense user counts: log1p(x) / scale, fixed; missing → 0.
_USER_DENSE = {
    "follow_user_num": 7.0,
    "fans_user_num": 10.0,
    "friend_user_num": 6.0,
    "register_days": 8.0,
}
# Video columns whose vocabulary is read from video_features_basic_pure.csv.
_VIDEO_FILE_VOCAB = ("upload_type", "visible_status", "music_type", "tag")
_N_TABS = 15
_CHUNK_ROWS = 200_000


def _check_tasks(tasks: object) -> tuple[str, ...]:
    if isinstance(tasks, str):
        chosen: tuple[str, ...] = (tasks,)
    elif isinstance(tasks, Sequence):
        chosen = tuple(tasks)
    else:
        raise ValueError(f"tasks must be a signal name or a sequence of names, got {tasks!r}")
    if not chosen:
        raise ValueError(f"tasks must name at least one of {list(KUAIRAND_SIGNALS)}")
    unknown = [t for t in chosen if t not in KUAIRAND_SIGNALS]
    if unknown:
        raise ValueError(
            f"tasks {unknown} are not KuaiRand feedback signals; choose from "
            f"{list(KUAIRAND_SIGNALS)}"
        )
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"tasks must be distinct, got {list(chosen)}")
    return chosen


def select_logs(period: str, exposure: str) -> list[str]:
    """The log files for ``period`` and ``exposure``, in the order ``max_rows`` counts them."""
    periods = ("4_08_to_4_21", "4_22_to_5_08", "all")
    exposures = ("standard", "random", "both")
    if period not in periods:
        raise ValueError(f"period must be one of {list(periods)}, got {period!r}")
    if exposure not in exposures:
        raise ValueError(f"exposure must be one of {list(exposures)}, got {exposure!r}")
    logs = [
        name
        for name, (exp, per) in KUAIRAND_LOGS.items()
        if exposure in (exp, "both") and period in (per, "all")
    ]
    if not logs:
        raise ValueError(
            f"KuaiRand-Pure has no {exposure} log for period {period!r}: the "
            "random-exposure log covers 4_22_to_5_08 only"
        )
    return logs


def _read_log(
    stream: IO[bytes], name: str, tasks: Sequence[str], limit: int | None
) -> dict[str, np.ndarray]:
    """Parse one log in chunks after checking its header; the first ``limit`` rows."""
    header = stream.readline().decode("utf-8-sig").strip()
    if tuple(header.split(",")) != LOG_COLUMNS:
        raise ValueError(
            f"{name}: header {header[:200]!r} is not the published KuaiRand log "
            f"header {','.join(LOG_COLUMNS)!r}"
        )
    ints = ["user_id", "video_id", "date", "hourmin", "time_ms", "tab"]
    usecols = [*ints, "duration_ms", *tasks]
    out: dict[str, list[np.ndarray]] = {c: [] for c in usecols}
    try:
        reader = pd.read_csv(
            stream,
            header=None,
            names=list(LOG_COLUMNS),
            usecols=usecols,
            dtype=dict.fromkeys(usecols, "float64"),
            chunksize=_CHUNK_ROWS,
            nrows=limit,
        )
    except pd.errors.EmptyDataError:  # a header and no data line
        reader = iter(())
    seen = 0
    for chunk in reader:
        for c in [*ints, *tasks]:
            x = chunk[c].to_numpy()
            bad = np.isnan(x) | (x != np.round(x))
            if c in tasks:
                bad |= (x != 0) & (x != 1)
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                why = "a feedback signal must be 0 or 1" if c in tasks else "expected an integer"
                raise ValueError(
                    f"{name}: data line {seen + first + 1} has {c}="
                    f"{float(chunk[c].iloc[first]):g}; {why}"
                )
        for c in usecols:
            out[c].append(chunk[c].to_numpy())
        seen += len(chunk)
    cols = {c: (np.concatenate(v) if v else np.zeros(0)) for c, v in out.items()}
    for c in ints:
        cols[c] = cols[c].astype(np.int64)
    return cols


def _read_table(stream: IO[bytes], name: str, required: Sequence[str]) -> pd.DataFrame:
    """Read a small side file (user or video features), checking its columns."""
    table = pd.read_csv(stream, dtype=str, keep_default_na=False, na_values=[""])
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(
            f"{name}: missing columns {missing}; its columns are {list(table.columns)[:20]}"
        )
    return table


def _vocab_codes(values: np.ndarray, vocab: Sequence[str]) -> np.ndarray:
    """Codes 1.. for values of ``vocab``, 0 for missing and anything else."""
    index = {v: i for i, v in enumerate(vocab, start=1)}
    return np.array([index.get(v, 0) for v in values], dtype=np.int64)


def _int_codes(values: pd.Series, size: int) -> np.ndarray:
    """Codes ``value + 1`` for integer values in ``0 .. size-1``, else 0."""
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(x) & (x >= 0) & (x < size) & (x == np.round(x))
    return np.where(ok, np.nan_to_num(x) + 1, 0).astype(np.int64)


def _id_rows(file_ids: pd.Series, ids: np.ndarray, name: str) -> np.ndarray:
    """Row of each id in a feature file (-1 when absent); the file's ids must be unique."""
    as_num = pd.to_numeric(file_ids, errors="coerce")
    if as_num.isna().any() or as_num.duplicated().any() or (as_num != as_num.round()).any():
        raise ValueError(f"{name}: the id column must hold unique integers")
    return pd.Index(as_num.astype(np.int64)).get_indexer(ids)


def _take(codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``codes[rows]``, with 0 where ``rows`` is -1 (absent from the feature file)."""
    return np.where(rows >= 0, codes[np.maximum(rows, 0)], 0)


def _sorted_values(values: np.ndarray) -> list[str]:
    """The distinct present values of a feature-file column, integers in numeric order."""
    distinct = set(values) - {_MISSING}
    return sorted(distinct, key=lambda v: (0, int(v), v) if v.lstrip("-").isdigit() else (1, 0, v))


def _feature_names() -> tuple[list[str], list[str]]:
    """The categorical and the dense feature names, in the order of the feature matrices."""
    cat_names = [
        "user_id",
        "video_id",
        "author_id",
        "tab",
        "hour",
        "weekday",
        *_USER_VOCAB,
        *_USER_BINARY,
        *(f"onehot_feat{k}" for k in range(len(_ONEHOT_SIZES))),
        "video_type",
        *_VIDEO_FILE_VOCAB,
    ]
    dense_names = ["duration", *_USER_DENSE]
    return cat_names, dense_names


def _read_archive(
    archive: Path, logs: Sequence[str], tasks: Sequence[str], max_rows: int | None
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, pd.DataFrame]]:
    """Stream the archive once: the chosen logs (``max_rows`` rows in all, counted in the order
    of ``logs``) and the user and video feature files; every one of them must be there."""
    read: dict[str, dict[str, np.ndarray]] = {}
    side: dict[str, pd.DataFrame] = {}
    required = {
        _USER_FILE: [
            "user_id",
            *_USER_VOCAB,
            *_USER_BINARY,
            *_USER_DENSE,
            *(f"onehot_feat{k}" for k in range(len(_ONEHOT_SIZES))),
        ],
        _VIDEO_FILE: ["video_id", "author_id", "video_type", *_VIDEO_FILE_VOCAB],
    }
    with tarfile.open(archive, mode="r|gz") as tar:
        for member in tar:
            base = PurePosixPath(member.name).name
            if not member.isfile() or base not in (*logs, *required):
                continue
            stream = tar.extractfile(member)
            assert stream is not None
            if base in required:
                side[base] = _read_table(stream, base, required[base])
                continue
            limit = max_rows
            earlier = logs[: logs.index(base)]
            if max_rows is not None and all(e in read for e in earlier):
                limit = max_rows - sum(len(read[e]["user_id"]) for e in earlier)
            if limit is None or limit > 0:
                read[base] = _read_log(stream, base, tasks, limit)
            else:  # the logs before it already give max_rows rows
                read[base] = {"user_id": np.zeros(0)}
    missing = [f for f in (*logs, *required) if f not in read and f not in side]
    if missing:
        raise ValueError(
            f"{archive} has no member(s) {missing} (looked for these base "
            "names under KuaiRand-Pure/data/)"
        )
    return read, side


def _join_logs(
    read: Mapping[str, dict[str, np.ndarray]], logs: Sequence[str], max_rows: int | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The columns of the logs read, end to end and cut to ``max_rows`` rows, and for each row
    the index in ``logs`` of its log."""
    parts = [(i, read[f]) for i, f in enumerate(logs) if len(read[f]["user_id"])]
    if not parts:
        raise ValueError(f"the selected KuaiRand logs {logs} have no data lines")
    cols = {c: np.concatenate([p[c] for _, p in parts]) for c in parts[0][1]}
    log_of = np.concatenate([np.full(len(p["user_id"]), i) for i, p in parts])
    if max_rows is not None:
        cols = {c: v[:max_rows] for c, v in cols.items()}
        log_of = log_of[:max_rows]
    return cols, log_of


class _Categoricals:
    """The categorical feature matrix, filled column by column, with each column's
    vocabulary (code 0 = ``<missing>``) and its number of missing values."""

    def __init__(self, n: int, names: Sequence[str]) -> None:
        self.names = list(names)
        self.matrix = np.empty((n, len(self.names)), dtype=np.int64)
        self.vocabs: dict[str, pd.Index] = {}
        self.missing: dict[str, int] = {}

    def put(self, name: str, codes: np.ndarray, vocab: Sequence[object]) -> None:
        """Store a categorical column (code 0 = missing) straight into the feature matrix."""
        self.matrix[:, self.names.index(name)] = codes
        self.vocabs[name] = pd.Index([_MISSING, *vocab], dtype=object)
        self.missing[name] = int((codes == 0).sum())


def _put_ids(
    out: _Categoricals,
    users: pd.DataFrame,
    videos: pd.DataFrame,
    u_row: np.ndarray,
    v_row: np.ndarray,
) -> None:
    """``user_id``, ``video_id`` and ``author_id``: vocabularies from the feature files (stable
    across options), 0 = not in the file."""
    for c, rows, table in (("user_id", u_row, users), ("video_id", v_row, videos)):
        ids = pd.to_numeric(table[c]).to_numpy().astype(np.int64)
        order = np.argsort(ids, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(1, len(ids) + 1)
        out.put(c, _take(rank, rows), ids[order])
    authors = videos["author_id"].fillna(_MISSING).to_numpy()
    author_vocab = _sorted_values(authors)
    out.put("author_id", _take(_vocab_codes(authors, author_vocab), v_row), author_vocab)


def _put_context(out: _Categoricals, cols: Mapping[str, np.ndarray]) -> None:
    """The context of the impression: ``tab``, ``hour`` and ``weekday``."""
    tab = cols["tab"]
    out.put("tab", np.where((tab >= 0) & (tab < _N_TABS), tab + 1, 0), range(_N_TABS))
    hour = cols["hourmin"] // 100
    out.put(
        "hour",
        np.where((hour >= 0) & (hour < 24) & (cols["hourmin"] % 100 < 60), hour + 1, 0),
        range(24),
    )
    dates, inverse = np.unique(cols["date"], return_inverse=True)
    days = pd.to_datetime(pd.Series(dates.astype(str)), format="%Y%m%d", errors="coerce")
    out.put(
        "weekday",
        (days.dt.day_of_week + 1).fillna(0).to_numpy(dtype=np.int64)[inverse],
        ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
    )


def _put_user_features(out: _Categoricals, users: pd.DataFrame, u_row: np.ndarray) -> None:
    """The user's categorical features, joined on ``user_id`` (fixed vocabularies)."""
    for c, vocab in _USER_VOCAB.items():
        out.put(c, _take(_vocab_codes(users[c].fillna(_MISSING).to_numpy(), vocab), u_row), vocab)
    for c in _USER_BINARY:
        out.put(c, _take(_int_codes(users[c], 2), u_row), (0, 1))
    for k, size in enumerate(_ONEHOT_SIZES):
        c = f"onehot_feat{k}"
        out.put(c, _take(_int_codes(users[c], size), u_row), range(size))


def _put_video_features(out: _Categoricals, videos: pd.DataFrame, v_row: np.ndarray) -> None:
    """The video's categorical features, joined on ``video_id``: ``video_type`` (fixed) and
    the columns whose vocabularies are read from the video feature file."""
    video_type = videos["video_type"].fillna(_MISSING).to_numpy()
    out.put(
        "video_type", _take(_vocab_codes(video_type, ("NORMAL", "AD")), v_row), ("NORMAL", "AD")
    )
    for c in _VIDEO_FILE_VOCAB:
        values = videos[c].str.strip()
        if c == "tag":  # a comma-separated list: keep the first tag
            values = values.str.split(",").str[0].str.strip()
        values = values.replace("", np.nan).fillna(_MISSING).to_numpy()
        vocab = _sorted_values(values)
        out.put(c, _take(_vocab_codes(values, vocab), v_row), vocab)


def _dense_features(
    cols: Mapping[str, np.ndarray],
    users: pd.DataFrame,
    u_row: np.ndarray,
    dense_names: Sequence[str],
) -> tuple[np.ndarray, int]:
    """The dense features (fixed transforms, missing → 0) and the number of rows without a
    valid ``duration_ms``."""
    dense = np.empty((len(cols["user_id"]), len(dense_names)), dtype=np.float32)
    duration = cols["duration_ms"]
    ok = np.isfinite(duration) & (duration >= 0)
    n_missing_duration = int((~ok).sum())
    dense[:, 0] = np.where(ok, np.log1p(np.where(ok, duration, 0.0) / 1000.0), 0.0) / 5.0
    for j, (c, scale) in enumerate(_USER_DENSE.items(), start=1):
        x = pd.to_numeric(users[c], errors="coerce").to_numpy(dtype=np.float64)
        ok = np.isfinite(x) & (x >= 0)
        dense[:, j] = _take(np.where(ok, np.log1p(np.where(ok, x, 0.0)), 0.0), u_row) / scale
    return dense, n_missing_duration


def _per_log(values: list[str], log_of: np.ndarray) -> pd.Categorical:
    """Each row's entry of ``values`` (one per log), as a categorical in order of appearance."""
    names = list(dict.fromkeys(values))
    return pd.Categorical.from_codes(np.array([names.index(v) for v in values])[log_of], names)


def _truth(cols: Mapping[str, np.ndarray], logs: Sequence[str], log_of: np.ndarray) -> pd.DataFrame:
    """``exposure``, ``period``, ``date`` and ``time_ms`` of every row."""
    return pd.DataFrame(
        {
            "exposure": _per_log([KUAIRAND_LOGS[f][0] for f in logs], log_of),
            "period": _per_log([KUAIRAND_LOGS[f][1] for f in logs], log_of),
            "date": cols["date"],
            "time_ms": cols["time_ms"],
        }
    )


def _meta(
    labels: Mapping[str, np.ndarray],
    logs: list[str],
    log_of: np.ndarray,
    options: Mapping[str, object],
    vocabs: Mapping[str, pd.Index],
    missing: Mapping[str, int],
) -> dict[str, object]:
    """The ``meta`` of a load: its options, rows per log, positive rates and encodings."""
    task_names = list(labels)
    meta = {
        "dataset": "kuairand",
        "tasks": task_names,
        **options,
        "logs": logs,
        "rows_per_log": {f: int((log_of == i).sum()) for i, f in enumerate(logs)},
        "positive_rates": {t: float(labels[t].mean()) for t in task_names},
        "categories": vocabs,
        "missing": missing,
        "dense_transforms": {
            "duration": "log1p(duration_ms / 1000) / 5",
            **{c: f"log1p({c}) / {s:g}" for c, s in _USER_DENSE.items()},
        },
    }
    if {"is_click", "long_view"} <= set(task_names):
        meta["long_view_without_click"] = int(
            ((labels["long_view"] == 1) & (labels["is_click"] == 0)).sum()
        )
    return meta


def load_kuairand(
    paths: Mapping[str, Path],
    *,
    tasks: str | Sequence[str] = KUAIRAND_DEFAULT_TASKS,
    period: str = "all",
    exposure: str = "standard",
    max_rows: int | None = None,
) -> MultiTaskData:
    """Build multi-task impressions from the KuaiRand-Pure logs.

    Every log line is an impression of a video to a user. The archive is streamed once; the
    logs are parsed in chunks, the two small side files whole.

    Tasks (binary, on every impression, no masks): any of :data:`KUAIRAND_SIGNALS` as
    published; default ``is_click``, ``long_view``, ``is_like``. ``is_click`` is a click in
    the two-column UI and a "valid play" in the single-column one; ``long_view`` means watching
    at least 18 s (or the whole video when it is shorter). By these definitions a long view
    implies a click (valid play), so ``is_click`` → ``long_view`` is a CTR → CTCVR pair for
    ESMM/AITM (``ESMM(schema, ctr_task="is_click", ctcvr_task="long_view")``); the number of
    lines that break this is ``meta["long_view_without_click"]``. ``is_follow``,
    ``is_comment``, ``is_forward`` and ``is_hate`` are very rare and ``is_like`` and
    ``is_profile_enter`` rare: ``meta["positive_rates"]`` gives each task's rate in the rows
    read.

    Features: categorical ``user_id``, ``video_id``, ``author_id`` (vocabularies from the user
    and video feature files, so the codes do not depend on the options; 0 = not in the file),
    the context ``tab`` (scenario 0-14), ``hour`` (from ``hourmin``) and ``weekday`` (from
    ``date``); the user's ``user_active_degree``, ``is_lowactive_period``,
    ``is_live_streamer``, ``is_video_author``, the four ``*_range`` buckets and
    ``onehot_feat0`` .. ``onehot_feat17`` (fixed vocabularies and ranges of the KuaiRand
    README); the video's ``video_type`` (fixed) and ``upload_type``, ``visible_status``,
    ``music_type`` and ``tag`` (its first tag), whose vocabularies are read from
    video_features_basic_pure.csv. Code 0 means missing or outside the vocabulary. Dense:
    ``duration`` = log1p(duration_ms / 1000) / 5 and log1p(count) / scale of the user's
    ``follow_user_num``, ``fans_user_num``, ``friend_user_num`` and ``register_days``
    (fixed scales, missing → 0). The user features are snapshots published with the data
    without a date: counts such as ``follow_user_num`` may include what happened during the
    logs (a weak, aggregate link to ``is_follow``). Never features
    (:data:`KUAIRAND_FORBIDDEN`): every feedback
    signal (also those not chosen as tasks), ``play_time_ms``, ``profile_stay_time``,
    ``comment_stay_time``, and the whole of video_features_statistic_pure.csv (outcome
    averages over a month that overlaps the logs), which is not read.

    Args:
        paths: file name → path; needs ``KuaiRand-Pure.tar.gz``.
        tasks: feedback signals to predict (a name or a sequence of names).
        period: ``"4_08_to_4_21"``, ``"4_22_to_5_08"`` or ``"all"``.
        exposure: ``"standard"`` (the recommendation feeds), ``"random"`` (the randomly exposed
            videos; 4_22_to_5_08 only) or ``"both"``.
        max_rows: read only the first ``max_rows`` impressions, counting the logs in the order
            standard 4_08_to_4_21, standard 4_22_to_5_08, random 4_22_to_5_08.

    Returns:
        The :class:`MultiTaskData`; ``groups`` are the raw user ids; ``truth`` has the columns
        ``exposure``, ``period``, ``date`` and ``time_ms`` (for time-based splits).

    Example:
        >>> from mtlbook import datasets
        >>> data = datasets.load("kuairand", tasks=["is_click", "long_view"],
        ...                      max_rows=100_000)             # doctest: +SKIP
        >>> data.task_names                                     # doctest: +SKIP
        ('is_click', 'long_view')
    """
    task_names = _check_tasks(tasks)
    logs = select_logs(period, exposure)
    if max_rows is not None and (
        isinstance(max_rows, bool) or not isinstance(max_rows, int | np.integer) or max_rows < 1
    ):
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    if ARCHIVE not in paths:
        raise ValueError(f"kuairand needs the file {ARCHIVE}; got files {sorted(paths)}")
    cat_names, dense_names = _feature_names()
    check_no_leak(cat_names + dense_names, KUAIRAND_FORBIDDEN, "kuairand")

    read, side = _read_archive(paths[ARCHIVE], logs, task_names, max_rows)
    users, videos = side[_USER_FILE], side[_VIDEO_FILE]
    cols, log_of = _join_logs(read, logs, max_rows)

    u_row = _id_rows(users["user_id"], cols["user_id"], _USER_FILE)
    v_row = _id_rows(videos["video_id"], cols["video_id"], _VIDEO_FILE)
    categorical = _Categoricals(len(cols["user_id"]), cat_names)
    _put_ids(categorical, users, videos, u_row, v_row)
    _put_context(categorical, cols)
    _put_user_features(categorical, users, u_row)
    _put_video_features(categorical, videos, v_row)
    assert list(categorical.vocabs) == cat_names
    dense, categorical.missing["duration"] = _dense_features(cols, users, u_row, dense_names)

    labels = {t: cols[t].astype(np.float64) for t in task_names}
    return MultiTaskData(
        dense=dense,
        categorical=categorical.matrix,
        labels=labels,
        tasks=[TaskSpec(t, "binary") for t in task_names],
        dense_names=dense_names,
        categorical_names=cat_names,
        cardinalities=[len(categorical.vocabs[c]) for c in cat_names],
        groups=cols["user_id"],
        truth=_truth(cols, logs, log_of),
        meta=_meta(
            labels,
            logs,
            log_of,
            {"period": period, "exposure": exposure, "max_rows": max_rows},
            categorical.vocabs,
            categorical.missing,
        ),
    )
