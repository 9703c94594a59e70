"""Appendix D's two CSV files: a synthetic sample in MTReclib's processed AliExpress layout.

The AliExpress data themselves sit behind a login, so appendix D writes a small stand-in that
has the exact header of MTReclib's processed ``train.csv`` / ``test.csv`` (``search_id``,
``categorical_1..16``, ``numerical_1..63``, ``click``, ``conversion``) and the traits that make
serving hard: the test file holds categorical values the training file never had (new items,
new users), and some values are rare. :func:`write_aliexpress_sample` writes the two files;
the labels come from a known logistic model of a few features, so a trained model has
something to learn. The click and conversion rates are far higher than in the real data, so
that a few thousand rows are enough for the page.

Example:
    >>> import tempfile, pandas as pd
    >>> from mtlbook.book.appendix_d import write_aliexpress_sample
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     train_csv, test_csv = write_aliexpress_sample(folder, n_train=300, n_test=100)
    ...     frame = pd.read_csv(train_csv)
    >>> frame.shape, list(frame.columns[:2]), list(frame.columns[-2:])
    ((300, 82), ['search_id', 'categorical_1'], ['click', 'conversion'])
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["ALIEXPRESS_HEADER", "write_aliexpress_sample"]

#: The header of MTReclib's processed AliExpress files, in order.
ALIEXPRESS_HEADER: tuple[str, ...] = (
    "search_id",
    *(f"categorical_{i}" for i in range(1, 17)),
    *(f"numerical_{i}" for i in range(1, 64)),
    "click",
    "conversion",
)
# Distinct values per categorical column; columns 1-9 describe the user and the query (one
# value per search page), 10-16 the shown item (one value per row), as in MTReclib's order.
_CARDINALITIES = (3, 5, 8, 12, 20, 30, 50, 4, 6, 80, 150, 300, 40, 10, 100, 25)
_USER_CATEGORICAL, _USER_NUMERICAL = 9, 23
_NEW_VALUE_COLUMNS = (10, 11, 12, 15)  # item ids and the like: new ones appear in the test file


def _zipf_values(rng: np.random.Generator, size: int, n_values: int) -> np.ndarray:
    """Values ``0 .. n_values-1`` with probability proportional to ``1 / (rank + 1)``."""
    weights = 1.0 / np.arange(1, n_values + 1)
    return rng.choice(n_values, size=size, p=weights / weights.sum())


def _rows(rng: np.random.Generator, n: int, first_page: int, new_value_rate: float) -> pd.DataFrame:
    """``n`` rows of impressions on search pages of 5-15 items each, features only."""
    sizes = rng.integers(5, 16, size=n // 5 + 1)
    page = np.repeat(np.arange(len(sizes)), sizes)[:n]
    n_pages = int(page.max()) + 1
    columns: dict[str, np.ndarray] = {"search_id": page + first_page}
    for j, card in enumerate(_CARDINALITIES, 1):
        per_page = j <= _USER_CATEGORICAL
        values = _zipf_values(rng, n_pages if per_page else n, card)
        values = values[page] if per_page else values
        if j in _NEW_VALUE_COLUMNS and new_value_rate > 0:
            new = rng.random(n) < new_value_rate
            values = np.where(new, card + rng.integers(0, card, size=n), values)
        columns[f"categorical_{j}"] = values
    for j in range(1, 64):
        per_page = j <= _USER_NUMERICAL
        values = rng.random(n_pages if per_page else n).round(6)
        values[rng.random(len(values)) < 0.3] = 0.0  # many numerical fields are empty (0)
        columns[f"numerical_{j}"] = values[page] if per_page else values
    return pd.DataFrame(columns)


def _labels(rng: np.random.Generator, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Click and conversion (clicked and bought) from a fixed logistic model of the features;
    the effect of a categorical value is a fixed function of the value, so new values in the
    test file have effects no training row shows."""
    effect = np.random.default_rng(12345)  # the same "world" for both files
    table = {j: effect.normal(0.0, 0.8, size=2 * _CARDINALITIES[j - 1]) for j in (1, 10, 11)}
    w_click, w_buy = effect.normal(0.0, 1.2, size=8), effect.normal(0.0, 1.2, size=8)
    num = frame[[f"numerical_{j}" for j in range(20, 36)]].to_numpy()
    click_logit = (
        -2.2
        + num[:, :8] @ w_click
        + table[1][frame["categorical_1"].to_numpy()]
        + table[10][frame["categorical_10"].to_numpy()]
    )
    buy_logit = -0.3 + num[:, 8:] @ w_buy + table[11][frame["categorical_11"].to_numpy()]
    click = rng.random(len(frame)) < 1.0 / (1.0 + np.exp(-click_logit))
    buy = rng.random(len(frame)) < 1.0 / (1.0 + np.exp(-buy_logit))
    return click.astype(int), (click & buy).astype(int)


def write_aliexpress_sample(
    folder: str | os.PathLike,
    *,
    n_train: int = 4000,
    n_test: int = 2000,
    seed: int = 0,
    new_value_rate: float = 0.05,
) -> tuple[Path, Path]:
    """Write ``train.csv`` and ``test.csv`` in MTReclib's processed AliExpress layout.

    Args:
        folder: an existing folder; the two files are written into it (an existing
            ``train.csv`` or ``test.csv`` there is refused, never overwritten).
        n_train, n_test: rows of the two files (impressions, grouped in search pages).
        seed: seed of the rows and labels (the effects of feature values are fixed).
        new_value_rate: in the test file, the share of rows whose item-side columns
            ``categorical_10``, ``_11``, ``_12`` and ``_15`` hold a value the training file
            cannot contain.

    Returns:
        ``(train_path, test_path)``.

    Raises:
        ValueError: for sizes below 10 rows or a rate outside ``[0, 1)``.
        FileExistsError: when ``train.csv`` or ``test.csv`` already exists in ``folder``.
    """
    if min(n_train, n_test) < 10:
        raise ValueError(f"n_train and n_test must be >= 10, got {n_train} and {n_test}")
    if not 0.0 <= new_value_rate < 1.0:
        raise ValueError(f"new_value_rate must lie in [0, 1), got {new_value_rate!r}")
    folder = Path(folder)
    paths = (folder / "train.csv", folder / "test.csv")
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise FileExistsError(f"{taken} already exist; choose an empty folder")
    rng = np.random.default_rng(seed)
    train = _rows(rng, n_train, 0, 0.0)
    test = _rows(rng, n_test, int(train["search_id"].max()) + 1, new_value_rate)
    for frame, path in zip((train, test), paths, strict=True):
        frame["click"], frame["conversion"] = _labels(rng, frame)
        tmp = path.with_name(f".{path.name}.tmp")
        frame[list(ALIEXPRESS_HEADER)].to_csv(tmp, index=False)
        os.replace(tmp, path)
    return paths
