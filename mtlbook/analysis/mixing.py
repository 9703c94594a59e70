"""Recording learned mixing parameters (cross-stitch α, sluice α and β) over training.

Cross-stitch and sluice networks (:class:`~mtlbook.models.CrossStitch`,
:class:`~mtlbook.models.Sluice`) learn *how much* to share: their mixing matrices are
parameters, exposed by ``model.mixing_parameters()``. :class:`MixingRecorder` is a
:class:`~mtlbook.Callback` for :func:`mtlbook.fit` that stores them before training (epoch 0)
and after every epoch, together with any scalar you ask for (a sluice network's subspace
orthogonality, say), as tidy DataFrames. :func:`mixing_frame` turns the mixing parameters of
trained models (e.g. every member of a population) into the same table, :func:`cross_task_share`
summarises a mixing matrix as the share of each row's weight that comes from *other* tasks,
and :func:`plot_mixing_history` draws the entries against the epoch,
:func:`plot_mixing_matrices` the matrices of one moment as heatmaps. Chapter 12.3.5 of the book
uses them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from ..models.base import MultiTaskModel
from ..training.loop import Callback

__all__ = [
    "MixingRecorder",
    "cross_task_share",
    "mixing_frame",
    "plot_mixing_history",
    "plot_mixing_matrices",
]

_MIXING = ["epoch", "parameter", "row", "col", "row_task", "col_task", "value"]


def _labels(
    model: MultiTaskModel, name: str, shape: tuple[int, ...]
) -> tuple[list[str], list[str], list[str], list[str | None]]:
    """Row and column labels of mixing matrix ``name``, and the task each belongs to.

    ``[K, K]``: tasks. ``[K·S, K·S]``: ``task:s`` for subspace ``s`` of each task. A matrix
    named ``beta…`` ``[K, L]``: tasks × ``layer l`` (a column belongs to no task).
    """
    tasks = list(model.task_names)
    n_tasks = len(tasks)
    rows, cols = shape
    if rows % n_tasks:
        raise ValueError(
            f"mixing parameter {name!r} has {rows} rows, not a multiple of the "
            f"{n_tasks} tasks; cannot label it"
        )
    per = rows // n_tasks
    row_task = [t for t in tasks for _ in range(per)]
    row = row_task if per == 1 else [f"{t}:{s}" for t in tasks for s in range(per)]
    if name.startswith("beta"):
        return row, [f"layer {layer}" for layer in range(cols)], row_task, [None] * cols
    if cols != rows:
        raise ValueError(
            f"mixing parameter {name!r} has shape {shape}; expected a square "
            "α matrix or a 'beta' matrix"
        )
    return row, row, row_task, list(row_task)


def mixing_frame(model: MultiTaskModel, epoch: int | None = None) -> pd.DataFrame:
    """The model's mixing parameters as a tidy DataFrame.

    Columns ``epoch, parameter, row, col, row_task, col_task, value``: one row per entry of
    every matrix in ``model.mixing_parameters()``; ``row_task`` / ``col_task`` name the task an
    entry's row / column belongs to (``col_task`` is ``None`` for ``β``'s layer columns).

    Raises:
        ValueError: if the model has no mixing parameters.

    Example:
        >>> from mtlbook import make_correlated_tasks
        >>> from mtlbook.models import CrossStitch
        >>> model = CrossStitch(make_correlated_tasks(100, 0.5).schema, hidden_units=(16, 16))
        >>> frame = mixing_frame(model)
        >>> frame.query("parameter == 'alpha/0'")["value"].round(2).tolist()
        [0.9, 0.1, 0.1, 0.9]
        >>> cross_task_share(frame.assign(epoch=0))["share"].round(2).tolist()
        [0.1, 0.1, 0.1, 0.1]
    """
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook MultiTaskModel, got {type(model).__name__}")
    mixing = model.mixing_parameters()
    if not mixing:
        raise ValueError(
            f"{type(model).__name__} has no learned mixing parameters; CrossStitch and Sluice have"
        )
    records = []
    for name, matrix in mixing.items():
        matrix = torch.as_tensor(matrix).detach().cpu().float()
        row, col, row_task, col_task = _labels(model, name, tuple(matrix.shape))
        values = matrix.tolist()
        records += [
            (epoch, name, row[i], col[j], row_task[i], col_task[j], values[i][j])
            for i in range(len(row))
            for j in range(len(col))
        ]
    return pd.DataFrame(records, columns=_MIXING)


class MixingRecorder(Callback):
    """Record ``model.mixing_parameters()`` (and optional scalars) before training and after
    every epoch of :func:`mtlbook.fit`.

    Args:
        scalars: optional name → ``model → number`` functions evaluated at the same moments,
            e.g. ``{"orthogonality": lambda m: m.orthogonality()}`` for a sluice network.

    The values are those of the weights at the end of each epoch (not of the restored best
    epoch); compare with ``FitResult.best_epoch``.

    Example:
        >>> from mtlbook import fit, make_correlated_tasks
        >>> from mtlbook.models import CrossStitch
        >>> data = make_correlated_tasks(400, 0.5, n_features=8)
        >>> train, valid = data.split((0.75, 0.25), seed=0)
        >>> recorder = MixingRecorder()
        >>> result = fit(CrossStitch(train.schema, hidden_units=(8, 8)), train, valid,
        ...              epochs=2, progress=False, device="cpu", callbacks=[recorder])
        >>> sorted(recorder.frame()["epoch"].unique().tolist())
        [0, 1, 2]
    """

    def __init__(
        self, scalars: Mapping[str, Callable[[MultiTaskModel], float]] | None = None
    ) -> None:
        scalars = dict(scalars or {})
        bad = [k for k, f in scalars.items() if not callable(f)]
        if bad:
            raise TypeError(
                f"scalars must map names to functions model → number; {bad} are not callable"
            )
        self.scalars = scalars
        self._frames: list[pd.DataFrame] = []
        self._scalars: list[tuple[int, str, float]] = []

    def _record(self, model: MultiTaskModel, epoch: int) -> None:
        self._frames.append(mixing_frame(model, epoch))
        with torch.no_grad():
            for name, f in self.scalars.items():
                self._scalars.append((epoch, name, float(f(model))))

    def on_train_begin(self, model: MultiTaskModel, weighting) -> None:
        self._frames, self._scalars = [], []
        self._record(model, 0)

    def on_epoch_end(self, model: MultiTaskModel, epoch: int, history: pd.DataFrame) -> None:
        self._record(model, epoch)

    def frame(self) -> pd.DataFrame:
        """Columns ``epoch, parameter, row, col, row_task, col_task, value`` (epoch 0 is the
        initial value)."""
        if not self._frames:
            raise RuntimeError("nothing recorded yet: pass the recorder to fit(callbacks=[...])")
        return pd.concat(self._frames, ignore_index=True)

    def scalar_frame(self) -> pd.DataFrame:
        """Columns ``epoch, name, value`` for the ``scalars`` asked for."""
        return pd.DataFrame(self._scalars, columns=["epoch", "name", "value"])


def cross_task_share(frame: pd.DataFrame, by: Sequence[str] = ("epoch",)) -> pd.DataFrame:
    """The share of each row's mixing weight that comes from *other* tasks.

    For row ``r`` of a matrix ``α`` (belonging to task ``k``):
    ``Σ_{c: task(c) ≠ k} |α_rc| / Σ_c |α_rc|``, averaged over the rows of each task (sluice
    rows are subspaces). ``0`` means the task reads only its own columns (no sharing), ``1/2``
    for two tasks means it weighs both equally. Absolute values because a unit's scale can move
    into the next layer's weights: the ratio, not the size, says how much is shared. ``β``
    matrices (no column task) are skipped.

    Args:
        frame: output of :func:`mixing_frame` or :meth:`MixingRecorder.frame`, possibly with
            extra columns (e.g. ``seed``, ``correlation``).
        by: extra columns to keep apart (besides ``parameter`` and the task).

    Returns:
        Columns ``*by, parameter, task, share``.
    """
    missing = [
        c
        for c in ("parameter", "row", "row_task", "col_task", "value", *by)
        if c not in frame.columns
    ]
    if missing:
        raise ValueError(
            f"frame lacks column(s) {missing}; pass mixing_frame(...) or "
            "MixingRecorder.frame() output"
        )
    alpha = frame[frame["col_task"].notna()].copy()
    alpha["abs"] = alpha["value"].abs()
    alpha["other"] = alpha["abs"].where(alpha["row_task"] != alpha["col_task"], 0.0)
    keys = [*by, "parameter", "row_task", "row"]
    per_row = alpha.groupby(keys, sort=False, dropna=False)[["other", "abs"]].sum().reset_index()
    per_row["share"] = per_row["other"] / per_row["abs"]
    out = (
        per_row.groupby([*by, "parameter", "row_task"], sort=False, dropna=False)["share"]
        .mean()
        .reset_index()
        .rename(columns={"row_task": "task"})
    )
    return out


def plot_mixing_history(
    frame: pd.DataFrame, facet: str | None = None, best_epochs: Mapping | None = None
) -> plt.Figure:
    """Every entry of every mixing matrix against the epoch.

    One panel per parameter (columns) and, with ``facet``, per value of that column (rows,
    e.g. ``"correlation"``). Entries are labelled ``row ← col``; diagonal entries (a task on
    itself) are solid, the others dashed. ``best_epochs`` (facet value → epoch, or
    ``{None: epoch}`` without a facet) marks the selected epoch with a vertical line.
    """
    params = list(dict.fromkeys(frame["parameter"]))
    facets = [None] if facet is None else list(dict.fromkeys(frame[facet]))
    fig, axes = plt.subplots(
        len(facets),
        len(params),
        squeeze=False,
        figsize=(4.3 * len(params), 3.1 * len(facets)),
        sharex=True,
    )
    entries = list(dict.fromkeys(zip(frame["row"], frame["col"], strict=True)))
    palette = dict(zip(entries, sns.color_palette("tab10", len(entries)), strict=True))
    for r, value in enumerate(facets):
        part = frame if facet is None else frame[frame[facet] == value]
        for c, param in enumerate(params):
            ax = axes[r][c]
            rows = part[part["parameter"] == param]
            for (row, col), line in rows.groupby(["row", "col"], sort=False):
                same = line["row_task"].iloc[0] == line["col_task"].iloc[0]
                ax.plot(
                    line["epoch"],
                    line["value"],
                    color=palette[(row, col)],
                    linestyle="-" if same else "--",
                    label=f"{row} ← {col}",
                )
            if best_epochs is not None and value in best_epochs:
                ax.axvline(best_epochs[value], color="grey", linewidth=0.8, linestyle=":")
            title = param if facet is None else f"{param}, {facet} = {value}"
            ax.set(
                title=title,
                xlabel="epoch" if r == len(facets) - 1 else "",
                ylabel="value" if c == 0 else "",
            )
            ax.grid(alpha=0.3)
            if r == 0 and len(rows.groupby(["row", "col"])) <= 8:
                ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig


def plot_mixing_matrices(
    frame: pd.DataFrame, epoch: int | None = None, title: str | None = None
) -> plt.Figure:
    """Every mixing matrix of one moment as an annotated heatmap, one panel per parameter.

    ``frame`` is the output of :func:`mixing_frame` or :meth:`MixingRecorder.frame`; with
    several epochs in it, pass ``epoch`` (e.g. ``FitResult.best_epoch``). Rows read from the
    columns: row ``r``, column ``c`` is the weight that ``r`` gives to ``c``.
    """
    if epoch is not None:
        frame = frame[frame["epoch"] == epoch]
    if frame.empty:
        raise ValueError(f"no mixing values at epoch {epoch}")
    if frame["epoch"].nunique(dropna=False) > 1:
        raise ValueError("the frame holds several epochs; pick one with epoch=...")
    params = list(dict.fromkeys(frame["parameter"]))
    sizes = [frame[frame["parameter"] == p]["col"].nunique() for p in params]
    fig, axes = plt.subplots(
        1,
        len(params),
        squeeze=False,
        figsize=(sum(1.0 + 0.75 * n for n in sizes) + 0.5, 3.4),
        gridspec_kw={"width_ratios": sizes},
    )
    limit = float(frame["value"].abs().max())
    for ax, param in zip(axes[0], params, strict=True):
        rows = frame[frame["parameter"] == param]
        matrix = rows.pivot(index="row", columns="col", values="value")
        matrix = matrix.loc[list(dict.fromkeys(rows["row"])), list(dict.fromkeys(rows["col"]))]
        sns.heatmap(
            matrix,
            ax=ax,
            annot=True,
            fmt=".2f",
            cmap="vlag",
            vmin=-limit,
            vmax=limit,
            cbar=False,
            square=True,
            annot_kws={"fontsize": 8},
        )
        ax.set(title=param, xlabel="from", ylabel="to" if ax is axes[0][0] else "")
        ax.tick_params(axis="x", rotation=30, labelsize=8)
        ax.tick_params(axis="y", rotation=0, labelsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
