"""Intervals and verdicts: the one place where "better" is decided.

* :func:`mean_interval` summarises a metric per group with a Student-t confidence interval;
* :func:`mtl_gain` gives the paired relative gain of each model over a baseline with the PLE
  paper's sign convention (positive = better, for higher-better metrics such as AUC and
  lower-better ones such as MSE alike);
* :func:`verdict` turns an interval into the book's vocabulary: ``positive`` (the interval
  lies above 0), ``negative`` (below 0) or ``inconclusive`` (it contains 0);
* :func:`format_interval` writes ``mean [lo, hi]``, as every table of the book shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..metrics import LOWER_IS_BETTER

__all__ = ["VERDICTS", "format_interval", "mean_interval", "mtl_gain", "verdict"]

#: The verdicts of :func:`verdict`, in the order tables list them.
VERDICTS = ("positive", "inconclusive", "negative")


def verdict(lo: float, hi: float) -> str:
    """``"positive"`` when the interval ``[lo, hi]`` lies above 0, ``"negative"`` when it lies
    below 0, ``"inconclusive"`` when it contains 0 (or is undefined).

    Example:
        >>> verdict(0.5, 2.0), verdict(-3.0, 1.0), verdict(-3.0, -1.0)
        ('positive', 'inconclusive', 'negative')
    """
    if lo > 0:
        return "positive"
    if hi < 0:
        return "negative"
    return "inconclusive"


def format_interval(
    mean: float | Mapping[str, Any],
    lo: float | None = None,
    hi: float | None = None,
    digits: int = 3,
    *,
    sign: bool = False,
    notation: str = "f",
) -> str:
    """``"mean [lo, hi]"``; just the mean when the interval is undefined (NaN, one seed).

    Args:
        mean: the mean, or a row with ``mean``, ``lo`` and ``hi`` (of :func:`mean_interval`,
            e.g. in ``table.apply(format_interval, axis=1)``).
        lo, hi: the interval's bounds (read from the row when ``mean`` is one).
        digits: decimals (``notation="f"``) or significant digits (``"g"``).
        sign: always show the sign (``+0.5``), for gains.
        notation: ``"f"`` (fixed decimals) or ``"g"`` (significant digits).

    Example:
        >>> format_interval(0.8123, 0.8011, 0.8235)
        '0.812 [0.801, 0.824]'
        >>> format_interval({"mean": 2.5, "lo": -1.25, "hi": 6.0}, digits=1, sign=True)
        '+2.5 [-1.2, +6.0]'
    """
    if isinstance(mean, Mapping | pd.Series):
        row = mean
        mean, lo, hi = row["mean"], row["lo"], row["hi"]
    if notation not in ("f", "g"):
        raise ValueError(f"notation must be 'f' or 'g', got {notation!r}")
    spec = f"{'+' if sign else ''}.{digits}{notation}"
    if lo is None or hi is None or np.isnan(lo):
        return format(mean, spec)
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def mean_interval(
    df: pd.DataFrame, by: Sequence[str], value: str = "value", confidence: float = 0.95
) -> pd.DataFrame:
    """Mean, standard deviation, count and Student-t interval of ``value`` per group ``by``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    missing = [c for c in [*by, value] if c not in df.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in the DataFrame; it has {list(df.columns)}")
    g = df.groupby(list(by), sort=False)[value]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    half = (
        stats.t.ppf(0.5 + confidence / 2, np.maximum(out["n"] - 1, 1))
        * out["std"]
        / np.sqrt(out["n"])
    )
    out["lo"] = out["mean"] - half.where(out["n"] > 1)
    out["hi"] = out["mean"] + half.where(out["n"] > 1)
    return out


def mtl_gain(
    df: pd.DataFrame, baseline: str, *, by: Sequence[str] = (), confidence: float = 0.95
) -> pd.DataFrame:
    """Paired relative gain (in %) of every model over ``baseline``, with an interval.

    For a higher-better metric the gain is ``(m − b) / b``; for a lower-better one (log-loss,
    MSE, MAE) it is ``(b − m) / b``; either way positive means better than the baseline. The
    gain is computed per seed (paired) and then averaged.

    Args:
        df: output of :func:`repeat_fits` (columns ``model, seed, task, metric, value``, plus
            any columns in ``by``).
        baseline: the model name to compare against.
        by: extra grouping columns (e.g. ``["correlation"]``).
    """
    if baseline not in set(df["model"]):
        raise ValueError(f"baseline {baseline!r} not among the models {sorted(set(df['model']))}")
    keys = [*by, "seed", "task", "metric"]
    if "weighting" in df.columns and "weighting" not in keys:
        if df["weighting"].nunique() > 1:
            raise ValueError(
                "the results mix several weightings; compare models under one "
                "weighting (filter df) or pass by=['weighting', ...]"
            )
    base = df[df["model"] == baseline].set_index(keys)["value"]
    others = df[df["model"] != baseline]
    joined = others.join(base.rename("baseline"), on=keys)
    lower = joined["metric"].isin(LOWER_IS_BETTER)
    diff = joined["value"] - joined["baseline"]
    diff = diff.where(~lower, -diff)
    joined = joined.assign(gain=100.0 * diff / joined["baseline"].abs())
    return mean_interval(
        joined, [*by, "model", "task", "metric"], value="gain", confidence=confidence
    )
