"""Readers for the processed files people already hold, in the layouts their authors published.

Three layouts, each checked column by column against the published header:

* ``"aliexpress"`` — MTReclib's ``train.csv`` / ``test.csv`` of one AliExpress country
  (``data/preprocess.py`` of easezyc/Multitask-Recommendation-Library); torch-rechub ships the
  same layout as ``aliexpress_{train,test}_sample.csv``. 82 columns: ``search_id``,
  ``categorical_1..16``, ``numerical_1..63``, ``click``, ``conversion``. Tasks ``click`` and
  ``conversion`` (clicked *and* bought: raw label 2), both on every impression;
  ``search_id`` (the search page) is the group for GAUC, never a feature.
* ``"ali-ccp"`` — torch-rechub's preprocessed Ali-CCP (``preprocess_ali_ccp.py``;
  ``ali_ccp_{train,val,test}_sample.csv``). 33 columns: ``click``, ``purchase``, 23 sparse
  fields (integer codes; 0 is their code of a value seen fewer than 10 times in training) and
  8 dense ``D...`` columns (min-max scaled). Tasks ``click`` and ``purchase`` (click and
  buy; the preprocessing dropped the rows with a purchase but no click). The file keeps no
  intact user id (field ``101`` codes rare users as 0), so there is no group.
* ``"census-income"`` — torch-rechub's preprocessed UCI Census-Income (KDD)
  (``preprocess_census.py``; ``census_income_{train,val,test}_sample.csv``). 41 columns: 7
  dense (min-max scaled), label-encoded categoricals, ``income`` (1 = 50000+) and ``marital
  status`` (1 = never married). Tasks ``income`` and ``never_married``, the names of
  ``mtlbook.datasets.load("census-income")``. Never features, as in that loader: the labels
  and three proxies of marital status (``tax filer status``, ``detailed household and family
  stat``, ``detailed household summary in household``); the sampling weight is not in the file.

The columns may come in any order (they are selected by name); a missing or unexpected column
is an error. A test file is encoded with the training file's vocabulary (``like=train``), so a
category it never saw in training gets the unknown code instead of a code of its own.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import FrameEncoder, MultiTaskData, read_table
from ..data._io import table_columns
from ._ali_ccp import ALICCP_FORBIDDEN
from ._aliexpress import ALIEXPRESS_FORBIDDEN
from ._census import CENSUS_EXCLUDED, CENSUS_FORBIDDEN, _check_max_rows, feature_name
from ._loaders import check_no_leak

__all__ = ["PROCESSED_LAYOUTS", "ProcessedLayout", "layout_spec", "read_processed"]

#: The FrameEncoder options :func:`read_processed` passes on for a training file.
ENCODING_OPTIONS = ("min_count", "hash_buckets", "standardize")


@dataclasses.dataclass(frozen=True, eq=False)
class ProcessedLayout:
    """One published layout of a processed file.

    Attributes:
        name: the layout's name (a key of ``PROCESSED_LAYOUTS``).
        header: the published header, in the published order.
        dense: the dense feature columns.
        categorical: the categorical feature columns (the file's integer codes, encoded
            again with a vocabulary of the training file).
        tasks: task name (after renaming) → kind.
        rename: label column of the file → task name, where they differ.
        group: the column of group ids (for GAUC), or ``None``.
        excluded: every column of the file that is not a feature → why.
        implies: ``(task, other)``: a row with ``task`` = 1 must have ``other`` = 1.
        forbidden: names that are labels or reveal one (the file's and the raw loader's).
        source: where the layout is published.
        raw_names: file column → the raw data's name where they differ, so that the raw
            loader's guard (in its names) applies to the processed file's spelling too.
    """

    name: str
    header: tuple[str, ...]
    dense: tuple[str, ...]
    categorical: tuple[str, ...]
    tasks: Mapping[str, str]
    rename: Mapping[str, str]
    group: str | None
    excluded: Mapping[str, str]
    implies: tuple[str, str] | None
    forbidden: frozenset[str]
    source: str
    raw_names: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        features = self.dense + self.categorical
        check_no_leak(self.guarded_names(features), self.forbidden, self.name)
        kept_apart = {*self.label_columns(), *([self.group] if self.group else [])}
        listed = [*features, *self.excluded]
        if sorted(listed) != sorted(self.header) or not kept_apart <= set(self.excluded):
            raise ValueError(
                f"layout {self.name!r}: the features and the excluded columns must partition "
                "the header, and the labels and the group must be among the excluded"
            )

    def guarded_names(self, columns: Sequence[str]) -> list[str]:
        """The columns, their raw names and the snake_case forms of both (``tax filer status``
        → ``tax filer stat`` → ``tax_filer_stat``): what the leakage guard checks."""
        raw = [self.raw_names.get(c, c) for c in columns]
        return list(dict.fromkeys([*columns, *raw, *(feature_name(c) for c in raw)]))

    def label_columns(self) -> list[str]:
        """The label columns as the file names them, in task order."""
        back = {task: col for col, task in self.rename.items()}
        return [back.get(task, task) for task in self.tasks]

    def columns_read(self) -> list[str]:
        """The columns :func:`read_processed` reads: features, labels, group."""
        group = [self.group] if self.group else []
        return [*self.dense, *self.categorical, *self.label_columns(), *group]

    def spec(self) -> dict[str, Any]:
        """The column spec after renaming (see :func:`layout_spec`)."""
        return {
            "dense": list(self.dense),
            "categorical": list(self.categorical),
            "tasks": dict(self.tasks),
            "group": self.group,
            "rename": dict(self.rename),
        }


def _layout(
    name: str,
    header: Sequence[str],
    *,
    dense: Sequence[str],
    tasks: Mapping[str, str],
    excluded: Mapping[str, str],
    forbidden: frozenset[str],
    source: str,
    group: str | None = None,
    implies: tuple[str, str] | None = None,
    raw_names: Mapping[str, str] | None = None,
) -> ProcessedLayout:
    """A layout whose categorical columns are the rest of the header (file order); ``tasks``
    maps each label column of the file to its task name."""
    categorical = [c for c in header if c not in set(dense) | set(excluded)]
    return ProcessedLayout(
        name=name,
        header=tuple(header),
        dense=tuple(dense),
        categorical=tuple(categorical),
        tasks=types.MappingProxyType(dict.fromkeys(tasks.values(), "binary")),
        rename=types.MappingProxyType({c: t for c, t in tasks.items() if c != t}),
        group=group,
        excluded=types.MappingProxyType(dict(excluded)),
        implies=implies,
        forbidden=frozenset(forbidden | set(tasks) | set(tasks.values()) | set(excluded))
        - ({group} if group else set()),
        source=source,
        raw_names=types.MappingProxyType(dict(raw_names or {})),
    )


_ALIEXPRESS_HEADER = (
    "search_id",
    *(f"categorical_{i}" for i in range(1, 17)),
    *(f"numerical_{i}" for i in range(1, 64)),
    "click",
    "conversion",
)
_ALI_CCP_HEADER = (
    "click,purchase,101,121,122,124,125,126,127,128,129,205,206,207,210,216,508,509,702,853,"
    "301,109_14,110_14,127_14,150_14,D109_14,D110_14,D127_14,D150_14,D508,D509,D702,D853"
).split(",")
_CENSUS_HEADER = (
    "age",
    "class of worker",
    "industry code",
    "occupation code",
    "education",
    "wage per hour",
    "enrolled in edu inst last wk",
    "marital status",
    "major industry code",
    "major occupation code",
    "race",
    "hispanic origin",
    "sex",
    "member of a labor union",
    "reason for unemployment",
    "full or part time employment stat",
    "capital gains",
    "capital losses",
    "divdends from stocks",  # sic, as published
    "tax filer status",
    "region of previous residence",
    "state of previous residence",
    "detailed household and family stat",
    "detailed household summary in household",
    "migration code-change in msa",
    "migration code-change in reg",
    "migration code-move within reg",
    "live in this house 1 year ago",
    "migration prev res in sunbelt",
    "num persons worked for employer",
    "family members under 18",
    "country of birth father",
    "country of birth mother",
    "country of birth self",
    "citizenship",
    "own business or self employed",
    "fill inc questionnaire for veterans admin",
    "veterans benefits",
    "weeks worked in year",
    "year",
    "income",
)

# The processed census file's names that differ from census-income.names (CENSUS_COLUMNS).
_CENSUS_RAW_NAMES = {
    "industry code": "detailed industry recode",
    "occupation code": "detailed occupation recode",
    "enrolled in edu inst last wk": "enroll in edu inst last wk",
    "marital status": "marital stat",
    "divdends from stocks": "dividends from stocks",
    "tax filer status": "tax filer stat",
    "fill inc questionnaire for veterans admin": "fill inc questionnaire for veteran's admin",
}

_LAYOUTS = (
    _layout(
        "aliexpress",
        _ALIEXPRESS_HEADER,
        dense=[f"numerical_{i}" for i in range(1, 64)],
        tasks={"click": "click", "conversion": "conversion"},
        group="search_id",
        excluded={
            "search_id": "the search page id: the group for GAUC, not a feature",
            "click": "the click label",
            "conversion": "the conversion label (clicked and bought)",
        },
        implies=("conversion", "click"),
        forbidden=ALIEXPRESS_FORBIDDEN,
        source="MTReclib (easezyc/Multitask-Recommendation-Library) data/preprocess.py: "
        "data/AliExpress_<country>/train.csv and test.csv; torch-rechub "
        "examples/ranking/data/aliexpress/aliexpress_{train,test}_sample.csv. Data: "
        "AliExpress search logs, Tianchi dataset 74690 (Li et al., CIKM 2020)",
    ),
    _layout(
        "ali-ccp",
        _ALI_CCP_HEADER,
        dense=[c for c in _ALI_CCP_HEADER if c.startswith("D")],
        tasks={"click": "click", "purchase": "purchase"},
        excluded={"click": "the click label", "purchase": "the purchase label (click and buy)"},
        implies=("purchase", "click"),
        forbidden=ALICCP_FORBIDDEN,
        source="torch-rechub (datawhalechina/torch-rechub) "
        "examples/ranking/data/ali-ccp/preprocess_ali_ccp.py: ali_ccp_{train,val,test}.csv "
        "and the ali_ccp_*_sample.csv files. Data: Ali-CCP, Tianchi dataset 408 (Ma et al., "
        "SIGIR 2018)",
    ),
    _layout(
        "census-income",
        _CENSUS_HEADER,
        dense=[
            "age",
            "wage per hour",
            "capital gains",
            "capital losses",
            "divdends from stocks",
            "num persons worked for employer",
            "weeks worked in year",
        ],
        tasks={"income": "income", "marital status": "never_married"},
        excluded={
            "income": "the income label (1 = income class 50000+)",
            "marital status": "the never_married label (1 = never married)",
            "tax filer status": CENSUS_EXCLUDED["tax filer stat"],
            "detailed household and family stat": CENSUS_EXCLUDED[
                "detailed household and family stat"
            ],
            "detailed household summary in household": CENSUS_EXCLUDED[
                "detailed household summary in household"
            ],
        },
        forbidden=CENSUS_FORBIDDEN,
        raw_names=_CENSUS_RAW_NAMES,
        source="torch-rechub (datawhalechina/torch-rechub) "
        "examples/ranking/data/census-income/preprocess_census.py: "
        "census_income_{train,val,test}.csv and the census_income_*_sample.csv files. Data: "
        "UCI Census-Income (KDD), the census data of the MMoE paper (Ma et al., KDD 2018)",
    ),
)
#: Layout name → :class:`ProcessedLayout` (read-only).
PROCESSED_LAYOUTS: Mapping[str, ProcessedLayout] = types.MappingProxyType(
    {layout.name: layout for layout in _LAYOUTS}
)


def _get_layout(layout: object) -> ProcessedLayout:
    if not isinstance(layout, str) or layout not in PROCESSED_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; the layouts are {sorted(PROCESSED_LAYOUTS)}")
    return PROCESSED_LAYOUTS[layout]


def layout_spec(layout: str) -> dict[str, Any]:
    """The column spec of a published layout, with the task names after renaming.

    Returns ``{"dense": [...], "categorical": [...], "tasks": {task: kind}, "group": column or
    None, "rename": {file column: task}}``: rename the frame's columns with ``rename``, then
    pass the rest to :meth:`MultiTaskData.from_frame <mtlbook.data.MultiTaskData.from_frame>`.

    Raises:
        ValueError: for an unknown layout (the message lists the layouts).

    Example:
        >>> from mtlbook.datasets import layout_spec
        >>> spec = layout_spec("census-income")
        >>> spec["tasks"], spec["rename"]
        ({'income': 'binary', 'never_married': 'binary'}, {'marital status': 'never_married'})
        >>> len(spec["dense"]), len(spec["categorical"]), spec["group"]
        (7, 29, None)
    """
    return _get_layout(layout).spec()


def _shown(names: Sequence[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{list(names[:limit])}{more}"


def _check_header(columns: Sequence[str], layout: ProcessedLayout, where: str) -> None:
    """Raise unless ``columns`` are exactly the layout's header (in any order)."""
    missing = [c for c in layout.header if c not in set(columns)]
    unexpected = [c for c in columns if c not in set(layout.header)]
    if not missing and not unexpected:
        return
    found = [f"missing column(s) {_shown(missing)}"] if missing else []
    found += [f"unexpected column(s) {_shown(unexpected)}"] if unexpected else []
    hints = [
        f"its columns are those of the {other!r} layout: read it with layout={other!r}"
        for other, spec in PROCESSED_LAYOUTS.items()
        if sorted(spec.header) == sorted(columns)
    ]
    if any(str(c).startswith("Unnamed: ") for c in unexpected):
        hints.append("an 'Unnamed: ...' column is a saved row index (write with index=False)")
    if not hints and len(missing) == len(layout.header):
        hints.append("does the file start with its header line, and is it comma-separated?")
    raise ValueError(
        f"{where} is not in the published {layout.name!r} layout: {'; '.join(found)}. The "
        f"layout has {len(layout.header)} columns, {layout.header[0]!r} … {layout.header[-1]!r} "
        f"(from {layout.source.split(':')[0]})" + "".join(f"; {h}" for h in hints)
    )


def _read(path: Path, layout: ProcessedLayout, max_rows: int | None) -> pd.DataFrame:
    """The layout's columns of the file, after checking its header."""
    try:
        columns = table_columns(path)
    except pd.errors.EmptyDataError:
        columns = []
    _check_header(columns, layout, str(path))
    return read_table(path, columns=layout.columns_read(), max_rows=max_rows)


def _check_like(like: Any, layout: ProcessedLayout) -> None:
    """Refuse a training set of another layout, and an encoder that would use a label, a
    label-revealing column or the group as a feature."""
    meta = getattr(like, "meta", None)
    trained_on = meta.get("layout") if isinstance(meta, Mapping) else None
    if trained_on is not None and trained_on != layout.name:
        raise ValueError(
            f"like= was read in the {trained_on!r} layout; this file is read in the "
            f"{layout.name!r} layout: read both in the same layout"
        )
    encoder = like if isinstance(like, FrameEncoder) else getattr(like, "encoder", None)
    if isinstance(encoder, FrameEncoder):
        features = encoder.feature_columns()
        check_no_leak(layout.guarded_names(features), layout.forbidden, layout.name)
        if layout.group in features:
            raise ValueError(
                f"{layout.name}: {layout.group!r} is the group column and never a feature"
            )


def read_processed(
    path: str | os.PathLike[str],
    layout: str,
    *,
    like: Any = None,
    max_rows: int | None = None,
    **encoding: Any,
) -> MultiTaskData:
    """Read a processed file in a published layout (see ``PROCESSED_LAYOUTS``).

    Read the training file first, then every later file (validation, test) with
    ``like=train``: its categories are encoded with the training vocabulary, and a value that
    training never saw gets the column's unknown code. The header must hold exactly the
    layout's columns, in any order; the file must have the label columns (to score rows
    without labels, use a saved run's ``predict``).

    Args:
        path: a file with the layout's columns, in a format of
            :func:`~mtlbook.data.read_table` (``.csv`` as published, ``.csv.gz``, ``.parquet``).
        layout: ``"aliexpress"``, ``"ali-ccp"`` or ``"census-income"``.
        like: the training data set (or a fitted :class:`~mtlbook.data.FrameEncoder`, or a
            loaded run) whose encoding to reuse.
        max_rows: keep only the first rows of the file.
        **encoding: options of :class:`~mtlbook.data.FrameEncoder` for a training file:
            ``min_count``, ``hash_buckets``, ``standardize`` (not with ``like``).

    Returns:
        The rows as a :class:`~mtlbook.data.MultiTaskData` with the layout's tasks (and
        groups); ``data.meta`` records ``layout`` and ``source`` (the file name).

    Raises:
        FileNotFoundError: if ``path`` is not a file.
        ValueError: for an unknown layout or file type, a missing or unexpected column (the
            message names them, the layout and the file), labels other than 0/1 or a row
            whose labels contradict the layout (a conversion without a click), an unknown
            encoding option or one given with ``like``, ``like`` read in another layout or
            using a label or a label-revealing column as a feature, and the errors of
            :meth:`MultiTaskData.from_frame <mtlbook.data.MultiTaskData.from_frame>`.

    Example:
        >>> import tempfile
        >>> import numpy as np, pandas as pd
        >>> from pathlib import Path
        >>> from mtlbook.datasets import PROCESSED_LAYOUTS, read_processed
        >>> header = PROCESSED_LAYOUTS["aliexpress"].header
        >>> rng = np.random.default_rng(0)
        >>> def sample(n):          # random rows in MTReclib's layout
        ...     df = pd.DataFrame(rng.integers(0, 2, (n, len(header))), columns=header)
        ...     return df.assign(conversion=df["conversion"] * df["click"])
        >>> folder = tempfile.TemporaryDirectory()
        >>> sample(40).to_csv(Path(folder.name, "train.csv"), index=False)
        >>> sample(20).to_csv(Path(folder.name, "test.csv"), index=False)
        >>> train = read_processed(Path(folder.name, "train.csv"), "aliexpress")
        >>> test = read_processed(Path(folder.name, "test.csv"), "aliexpress", like=train)
        >>> train.task_names, len(train.schema.categorical), train.schema.n_dense
        (('click', 'conversion'), 16, 63)
        >>> test.schema == train.schema, test.meta["source"]
        (True, 'test.csv')
        >>> folder.cleanup()
    """
    spec = _get_layout(layout)
    max_rows = _check_max_rows(max_rows)
    unknown = sorted(set(encoding) - set(ENCODING_OPTIONS))
    if unknown:
        raise ValueError(
            f"read_processed got unknown option(s) {unknown}; the encoding options are "
            f"{list(ENCODING_OPTIONS)}"
        )
    if like is not None and encoding:
        raise ValueError(
            f"like= reuses the training file's encoding; do not also give {sorted(encoding)}"
        )
    if like is not None:
        _check_like(like, spec)
    file = Path(path)
    frame = _read(file, spec, max_rows).rename(columns=dict(spec.rename))
    if like is None:
        options = {k: v for k, v in spec.spec().items() if k != "rename"}
        data = MultiTaskData.from_frame(frame, **options, **encoding)
    else:
        data = MultiTaskData.from_frame(frame, like=like)
    _check_implies(data, spec, str(file))
    data.meta.update(layout=spec.name, source=file.name)
    return data


def _check_implies(data: MultiTaskData, layout: ProcessedLayout, where: str) -> None:
    if layout.implies is None or not set(layout.implies) <= set(data.task_names):
        return
    task, other = layout.implies
    bad = int(((data.labels[task] == 1) & (data.labels[other] == 0)).sum())
    if bad:
        raise ValueError(
            f"{where}: {bad} row(s) have {task}=1 and {other}=0, but in the {layout.name!r} "
            f"layout {task} implies {other}; are the label columns swapped?"
        )
