"""How related are two tasks' labels? Measured on the data, before any model is trained.

:func:`task_relatedness` gives the Pearson and Spearman correlations of every two tasks' labels
on the samples where both are defined and, for binary tasks, the conditional rates and the
lift; :func:`plot_task_relatedness` draws them. Chapter 12.4.1 of the book sets these measures
against the gain a shared model actually brings.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy.stats import rankdata

from ..data import MultiTaskData

__all__ = ["plot_task_relatedness", "task_relatedness"]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation; NaN with fewer than 2 samples or a constant variable."""
    if len(x) < 2:
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def task_relatedness(data: MultiTaskData) -> pd.DataFrame:
    """How related the tasks' labels are: correlations and, for binary tasks, lift.

    For every ordered pair of tasks ``(a, b)`` the statistics use the ``n`` samples on which
    both are defined (both masks true): in the funnel with ``dwell_time``, a pair with dwell
    time looks at clicked impressions only. Label correlation is what the model can see of
    task relatedness before training (chapter 12.4.1); it is not the correlation of the tasks'
    functions (the ``p`` of :func:`~mtlbook.make_correlated_tasks`), but it orders tasks
    alike.

    Args:
        data: any multi-task data set.

    Returns:
        One row per ordered pair ``a ≠ b`` (schema order): ``task_a``, ``task_b``, ``kind_a``,
        ``kind_b``, ``n``, ``pearson`` and ``spearman`` (symmetric; NaN for a constant label),
        and, when both are binary (NaN otherwise): ``p_b`` = P(b=1), ``p_b_given_a1`` =
        P(b=1 | a=1), ``p_b_given_a0`` = P(b=1 | a=0) and ``lift`` =
        P(b=1 | a=1) / P(b=1) (1: independent; in the funnel P(purchase | click) / P(purchase)
        is far above 1).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.relatedness import task_relatedness
        >>> related = task_relatedness(mb.simulate_funnel(5_000, seed=0))
        >>> row = related.query("task_a == 'purchase' and task_b == 'click'").iloc[0]
        >>> float(row["p_b_given_a1"])  # every purchase follows a click
        1.0
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"expected a MultiTaskData, got {type(data).__name__}")
    if len(data.task_names) < 2:
        raise ValueError(
            f"task relatedness compares tasks; the data have one task {list(data.task_names)}"
        )
    kinds = {t.name: t.kind for t in data.schema.tasks}
    rows = []
    for a in data.task_names:
        for b in data.task_names:
            if a == b:
                continue
            both = data.mask(a) & data.mask(b)
            ya = data.labels[a][both].astype(np.float64)
            yb = data.labels[b][both].astype(np.float64)
            row: dict[str, Any] = {
                "task_a": a,
                "task_b": b,
                "kind_a": kinds[a],
                "kind_b": kinds[b],
                "n": int(both.sum()),
                "pearson": _pearson(ya, yb),
                "spearman": _pearson(rankdata(ya), rankdata(yb)) if len(ya) else np.nan,
                "p_b": np.nan,
                "p_b_given_a1": np.nan,
                "p_b_given_a0": np.nan,
                "lift": np.nan,
            }
            if kinds[a] == kinds[b] == "binary" and len(ya):
                a1 = ya == 1
                row["p_b"] = float(yb.mean())
                row["p_b_given_a1"] = float(yb[a1].mean()) if a1.any() else np.nan
                row["p_b_given_a0"] = float(yb[~a1].mean()) if (~a1).any() else np.nan
                if row["p_b"] > 0:
                    row["lift"] = row["p_b_given_a1"] / row["p_b"]
            rows.append(row)
    return pd.DataFrame(rows)


def plot_task_relatedness(relatedness: pd.DataFrame) -> plt.Figure:
    """Tasks × tasks heatmaps of a :func:`task_relatedness` frame.

    Panels: the Pearson and the Spearman correlation (diverging colours, −1 to 1) and, when
    two tasks are binary, the lift ``P(b=1 | a=1) / P(b=1)`` between the binary tasks, with
    the row as ``a`` (the task conditioned on) and the column as ``b``, coloured by ``log₂``
    lift (white: independent) and annotated with the lift itself (diagonal left out). Grey
    cells are undefined (a label constant where both tasks are defined, such as ``click`` on
    the clicked impressions that define ``dwell_time``).

    Args:
        relatedness: the output of :func:`task_relatedness`.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.relatedness import plot_task_relatedness, task_relatedness
        >>> fig = plot_task_relatedness(task_relatedness(mb.simulate_funnel(5_000, seed=0)))
    """
    needed = ("task_a", "task_b", "pearson", "spearman", "lift")
    missing = [c for c in needed if c not in relatedness.columns]
    if missing:
        raise ValueError(f"not a task_relatedness() frame: column(s) {missing} are missing")
    if relatedness.empty:
        raise ValueError("the task_relatedness() frame is empty")
    tasks = list(dict.fromkeys([*relatedness["task_a"], *relatedness["task_b"]]))

    def square(column: str, diagonal: float, names: list[str]) -> pd.DataFrame:
        matrix = relatedness.pivot_table(
            index="task_a", columns="task_b", values=column, aggfunc="first", dropna=False
        )
        values = matrix.reindex(index=names, columns=names).to_numpy(dtype=float, copy=True)
        np.fill_diagonal(values, diagonal)
        return pd.DataFrame(values, index=names, columns=names)

    has_lift = bool(relatedness["lift"].notna().any())
    size = 0.9 * len(tasks) + 1.8
    n_panels = 3 if has_lift else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(n_panels * (size + 0.6), size), squeeze=False)
    for ax, column in zip(axes[0], ("pearson", "spearman"), strict=False):
        matrix = square(column, 1.0, tasks)
        ax.set_facecolor("#eeeeee")
        sns.heatmap(
            matrix,
            ax=ax,
            vmin=-1,
            vmax=1,
            center=0,
            cmap="vlag",
            annot=True,
            fmt=".2f",
            square=True,
            mask=matrix.isna(),
            cbar_kws={"shrink": 0.8},
        )
        ax.set(title=f"{column.capitalize()} correlation", xlabel="", ylabel="")
    if has_lift:
        ax = axes[0][2]
        pairs = relatedness[relatedness["lift"].notna()]
        binary = [t for t in tasks if t in set(pairs["task_a"]) | set(pairs["task_b"])]
        lift = square("lift", np.nan, binary)
        ax.set_facecolor("#eeeeee")
        with np.errstate(divide="ignore"):
            log_lift = np.log2(lift)
        finite = np.abs(log_lift.to_numpy()[np.isfinite(log_lift.to_numpy())])
        bound = max(1.0, float(finite.max())) if finite.size else 1.0
        sns.heatmap(
            log_lift.replace([np.inf, -np.inf], np.nan),
            ax=ax,
            vmin=-bound,
            vmax=bound,
            center=0,
            cmap="vlag",
            annot=lift.to_numpy(),
            fmt=".3g",
            square=True,
            mask=lift.isna().to_numpy(),
            cbar_kws={"shrink": 0.8, "label": "log₂ lift"},
        )
        ax.set(title="lift P(b=1 | a=1) / P(b=1)", xlabel="b", ylabel="a (given)")
    for ax in axes[0]:
        ax.tick_params(axis="y", labelrotation=0)
    fig.tight_layout()
    return fig
