"""Inside a mixture-of-experts model: which experts does each gate use?

:func:`gate_weights` averages the gate weights of a mixture-of-experts model (OMoE, MMoE, CGC,
PLE, DSelect-k; AITM's attention too) over a data set, optionally per group of samples (user
segment, item category), as a tidy DataFrame; :func:`plot_gate_heatmap` draws them as gates ×
experts, one panel per PLE level, and returns the matplotlib Figure. Whether the experts are
used well is :mod:`mtlbook.analysis.experts`' question. Chapter 12.3.3 of the book reads the
gates of MMoE and PLE with these functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..data import MultiTaskData
from ..models.base import MultiTaskModel
from ..utils import model_device
from ._common import SHARED_COLOR, check_batch_size, check_model_data

__all__ = ["gate_weights", "plot_gate_heatmap"]

#: The columns of a :func:`gate_weights` frame; any other column is the grouping column.
_WEIGHT_COLUMNS = ("level", "gate", "expert", "expert_kind", "n", "mean", "std")


def _no_gates_error(model: MultiTaskModel) -> ValueError:
    name = type(model).__name__
    hint = "gated models are OMoE, MMoE, CGC, PLE, DSelectK and AITM (ESMM with a gated backbone)"
    if model.mixing_parameters():
        hint = (
            f"{name} mixes its tasks through learned matrices instead: read them with "
            "model.mixing_parameters(); " + hint
        )
    return ValueError(
        f"{name} has no gates: its forward pass records no gate weights "
        f"(model.gate_records() is empty); {hint}"
    )


def _group_labels(
    data: MultiTaskData, by: Any
) -> tuple[str | None, np.ndarray | None, np.ndarray | None]:
    """``(column name, [n] group index per sample, the groups' labels)`` for ``by``."""
    if by is None:
        return None, None, None
    if isinstance(by, str):
        frame = data.to_frame(include_truth=True)
        if by not in frame.columns:
            raise ValueError(
                f"by={by!r} is not a column of data.to_frame(include_truth=True); "
                f"its columns are {list(frame.columns)}"
            )
        values = frame[by].to_numpy()
        categories = data.meta.get("categories", {})
        if by in categories:  # from_frame encoded the column: show the original labels
            labels = np.asarray(categories[by], dtype=object)
            codes = values.astype(np.int64)
            known = codes < len(labels)  # the code after the vocabulary is "unknown"
            values = np.where(known, labels[np.minimum(codes, len(labels) - 1)], "unknown")
        name = by
    else:
        values = np.asarray(by)
        if values.ndim != 1 or len(values) != len(data):
            raise ValueError(
                f"by must be a column name or one group label per sample "
                f"({len(data)}), got an array of shape {values.shape}"
            )
        name = "group"
    if name in _WEIGHT_COLUMNS:
        raise ValueError(
            f"the grouping column may not be called {name!r}: that name is taken "
            f"by a column of the result; pass the labels as an array instead"
        )
    missing = int(pd.isna(values).sum())
    if missing:
        raise ValueError(
            f"by {name!r} has {missing} missing values (a masked task's label is "
            "NaN outside its mask); group by a column defined on every sample"
        )
    codes, labels = pd.factorize(values, sort=True)
    return name, codes.astype(np.int64), np.asarray(labels)


# ---------------------------------------------------------------------------- gate weights
@dataclass
class _GateStats:
    """Running sums of one gate's weights, per group of samples (float64)."""

    experts: tuple[str, ...]
    sums: torch.Tensor  # [groups, experts]
    squares: torch.Tensor  # [groups, experts]
    entropy: torch.Tensor  # [groups]: sum of the per-sample entropies
    counts: torch.Tensor  # [groups]


def _collect_gates(
    model: MultiTaskModel,
    data: MultiTaskData,
    codes: np.ndarray | None,
    n_groups: int,
    batch_size: int,
) -> dict[tuple[int, str], _GateStats]:
    """Run ``model`` over ``data`` (eval mode, no grad) and sum every gate's weights."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    stats: dict[tuple[int, str], _GateStats] = {}
    start = 0
    try:
        with torch.no_grad():
            for batch in data.loader(batch_size, shuffle=False):
                size = len(batch)
                model(batch.to(device))
                records = model.gate_records()
                if not records:
                    raise _no_gates_error(model)
                if codes is None:
                    index = torch.zeros(size, dtype=torch.long)
                else:
                    index = torch.from_numpy(codes[start : start + size])
                start += size
                ones = torch.ones(size, dtype=torch.float64)
                for record in records:
                    w = record.weights.to("cpu", torch.float64)  # [batch, experts]
                    key = (int(record.level), str(record.gate))
                    s = stats.get(key)
                    if s is None:
                        n = w.shape[1]
                        s = stats[key] = _GateStats(
                            tuple(record.experts),
                            torch.zeros(n_groups, n, dtype=torch.float64),
                            torch.zeros(n_groups, n, dtype=torch.float64),
                            torch.zeros(n_groups, dtype=torch.float64),
                            torch.zeros(n_groups, dtype=torch.float64),
                        )
                    p = w / w.sum(1, keepdim=True).clamp_min(1e-12)  # [batch, experts]
                    s.sums.index_add_(0, index, w)
                    s.squares.index_add_(0, index, w * w)
                    s.entropy.index_add_(0, index, -torch.special.xlogy(p, p).sum(1))
                    s.counts.index_add_(0, index, ones)
    finally:
        model.train(was_training)
    return stats


def _expert_kind(expert: str) -> str:
    return expert.split("/", 1)[0]


def _stats_frames(
    stats: dict[tuple[int, str], _GateStats], group: str | None, labels: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The :func:`gate_weights` frame and a per-gate frame of the mean per-sample entropy."""
    weight_parts, entropy_parts = [], []
    for (level, gate), s in stats.items():
        n_groups, n_experts = s.sums.shape
        counts = s.counts.numpy()  # [groups]
        mean = s.sums.numpy() / counts[:, None]  # [groups, experts]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (s.squares.numpy() - s.sums.numpy() * mean) / (counts[:, None] - 1)
        std = np.sqrt(np.clip(var, 0.0, None))  # NaN for a group of one sample
        part = pd.DataFrame(
            {
                "level": level,
                "gate": gate,
                "expert": np.tile(s.experts, n_groups),
                "expert_kind": np.tile([_expert_kind(e) for e in s.experts], n_groups),
                "_group": np.repeat(np.arange(n_groups), n_experts),
                "_order": np.tile(np.arange(n_experts), n_groups),
                "n": np.repeat(counts.astype(np.int64), n_experts),
                "mean": mean.reshape(-1),
                "std": std.reshape(-1),
            }
        )
        weight_parts.append(part)
        entropy_parts.append(
            pd.DataFrame(
                {
                    "level": level,
                    "gate": gate,
                    "_group": np.arange(n_groups),
                    "sample_entropy": s.entropy.numpy() / counts,
                }
            )
        )
    frames = []
    for parts in (weight_parts, entropy_parts):
        frame = pd.concat(parts, ignore_index=True)
        frame["_gate"] = frame.groupby(["level", "gate"], sort=False).ngroup()
        sort = ["_group", "_gate"] + (["_order"] if "_order" in frame else [])
        frame = frame.sort_values(sort, kind="stable")
        if group is not None:
            assert labels is not None  # the groups' labels come with their column name
            frame.insert(
                2 if "sample_entropy" in frame else 4, group, labels[frame["_group"].to_numpy()]
            )
        frames.append(
            frame.drop(columns=[c for c in frame if c.startswith("_")]).reset_index(drop=True)
        )
    return frames[0], frames[1]


def gate_weights(
    model: MultiTaskModel, data: MultiTaskData, by: Any = None, batch_size: int = 8192
) -> pd.DataFrame:
    """The mean and standard deviation of every gate's weight on every expert over ``data``.

    The model runs over ``data`` in evaluation mode without gradients; the gate weights of
    each batch (:meth:`~mtlbook.models.MultiTaskModel.gate_records`) are summed as they come,
    so memory does not grow with the data.

    Args:
        model: a gated model: OMoE, MMoE, CGC, PLE, DSelectK, AITM (its attention over
            ``transfer`` and ``own``), or ESMM with such a backbone.
        data: the samples to average over (the model's schema).
        by: ``None`` for one average over all samples; a column of
            ``data.to_frame(include_truth=True)`` such as ``"segment"`` or ``"category"`` of
            :func:`~mtlbook.simulate_funnel` (a column encoded by
            :meth:`~mtlbook.MultiTaskData.from_frame` shows its original labels); or an array
            of one group label per sample (the column is then called ``"group"``).
        batch_size: samples per forward pass.

    Returns:
        One row per ``(level, gate, expert)`` — per group, with ``by`` — with columns
        ``level`` (0 for single-level models; PLE's levels 0, 1, …), ``gate`` (a task, or
        ``"shared"`` for a shared gate), ``expert``, ``expert_kind`` (``"shared"`` or the task
        that owns the expert: the expert's name before ``/``), the grouping column, ``n``
        (samples), ``mean`` and ``std`` (sample standard deviation, ``ddof=1``) of the weight.
        A gate lists only the experts it may choose (a PLE task gate: its own and the shared
        ones). Within a group, each gate's means sum to 1 (softmax gates), and the
        ``n``-weighted mean of the groups' means is the overall mean.

    Raises:
        ValueError: for a model without gates (naming it), an unknown ``by`` column, or group
            labels with missing values.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gates import gate_weights
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> model = MMoE(data.schema, n_experts=3, expert_units=(8,))
        >>> weights = gate_weights(model, data, by="segment")
        >>> list(weights.columns)
        ['level', 'gate', 'expert', 'expert_kind', 'segment', 'n', 'mean', 'std']
        >>> bool(weights.groupby(["segment", "gate"])["mean"].sum().between(0.999, 1.001).all())
        True
    """
    check_model_data(model, data)
    batch_size = check_batch_size(batch_size)
    group, codes, labels = _group_labels(data, by)
    n_groups = 1 if labels is None else len(labels)
    stats = _collect_gates(model, data, codes, n_groups, batch_size)
    return _stats_frames(stats, group, labels)[0]


def _group_column(weights: pd.DataFrame) -> str | None:
    """The grouping column of a :func:`gate_weights` frame (``None`` if there is none)."""
    if not isinstance(weights, pd.DataFrame):
        raise TypeError(f"expected the DataFrame of gate_weights(), got {type(weights).__name__}")
    missing = [c for c in _WEIGHT_COLUMNS if c not in weights.columns]
    if missing:
        raise ValueError(f"not a gate_weights() frame: column(s) {missing} are missing")
    extra = [c for c in weights.columns if c not in _WEIGHT_COLUMNS]
    if len(extra) > 1:
        raise ValueError(
            f"not a gate_weights() frame: it has several extra columns {extra} "
            "(at most one, the grouping column)"
        )
    return extra[0] if extra else None


def _pool_groups(weights: pd.DataFrame, group: str) -> pd.DataFrame:
    """Combine the groups of a grouped :func:`gate_weights` frame into one overall frame.

    Means are pooled with weights ``n``; the variance by the law of total variance, so the
    result equals ``gate_weights`` without ``by``.
    """
    keys = ["level", "gate", "expert", "expert_kind"]
    w = weights.assign(
        _sum=weights["mean"] * weights["n"],
        _ss=(weights["n"] - 1) * weights["std"].fillna(0.0) ** 2
        + weights["n"] * weights["mean"] ** 2,
    )
    pooled = w.groupby(keys, sort=False)[["n", "_sum", "_ss"]].sum().reset_index()
    pooled["mean"] = pooled["_sum"] / pooled["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (pooled["_ss"] - pooled["n"] * pooled["mean"] ** 2) / (pooled["n"] - 1)
    pooled["std"] = np.sqrt(var.clip(lower=0.0))
    return pooled[list(_WEIGHT_COLUMNS)]


def _expert_order(rows: pd.DataFrame, gates: Sequence[str]) -> list[str]:
    """Experts of one level: each task's own experts (in task order), other kinds, then the
    shared experts; first appearance within a kind."""
    experts = list(dict.fromkeys(rows["expert"]))
    tasks = [g for g in gates if g != "shared"]

    def rank(item: tuple[int, str]) -> tuple[int, int, int]:
        position, expert = item
        kind = _expert_kind(expert)
        if kind == "shared":
            return (2, 0, position)
        if kind in tasks:
            return (0, tasks.index(kind), position)
        return (1, 0, position)

    return [e for _, e in sorted(enumerate(experts), key=rank)]


def _kind_palette(names: Sequence[str]) -> dict[str, Any]:
    names = [n for n in dict.fromkeys(names) if n != "shared"]
    colors = sns.color_palette("colorblind", max(len(names), 1))
    palette = dict(zip(names, colors, strict=False))
    palette["shared"] = SHARED_COLOR
    return palette


def _one_group(weights: pd.DataFrame, group_col: str | None, group: Any) -> pd.DataFrame:
    """The rows of ``group`` of a grouped :func:`gate_weights` frame (``None``: the groups
    pooled); an ungrouped frame as it is."""
    if group_col is not None:
        if group is None:
            weights = _pool_groups(weights, group_col)
        else:
            known = list(dict.fromkeys(weights[group_col]))
            if group not in known:
                raise ValueError(
                    f"group {group!r} is not in column {group_col!r}; groups are {known}"
                )
            weights = weights[weights[group_col] == group]
    elif group is not None:
        raise ValueError("group= needs a grouped frame (gate_weights(..., by=...))")
    if weights.empty:
        raise ValueError("the gate_weights() frame is empty")
    return weights


def _largest(matrices) -> float:
    """The largest finite value of the matrices (1 when there is no positive one)."""
    values = np.concatenate([m.to_numpy(dtype=float).ravel() for m in matrices])
    values = values[np.isfinite(values)]
    return float(values.max()) if values.size and values.max() > 0 else 1.0


def _mark_owners(ax: plt.Axes, matrix: pd.DataFrame, palette: dict[str, Any]) -> None:
    """White lines between the blocks of experts (each task's, the shared ones) and above the
    shared gate; tick labels coloured by owner."""
    kinds = [_expert_kind(e) for e in matrix.columns]
    for j in range(1, len(kinds)):
        if kinds[j] != kinds[j - 1]:
            ax.axvline(j, color="white", linewidth=3)
    gates = list(matrix.index)
    if "shared" in gates and len(gates) > 1:
        ax.axhline(gates.index("shared"), color="white", linewidth=3)
    for tick, kind in zip(ax.get_xticklabels(), kinds, strict=True):
        tick.set_color(palette.get(kind, SHARED_COLOR))
    for tick, gate in zip(ax.get_yticklabels(), gates, strict=True):
        tick.set_color(palette.get(gate, SHARED_COLOR))


def plot_gate_heatmap(
    weights: pd.DataFrame,
    value: str = "mean",
    group: Any = None,
    annotate: bool | None = None,
    vmax: float | None = None,
) -> plt.Figure:
    """Gates × experts heatmaps of a :func:`gate_weights` frame, one panel per level.

    Rows are the gates (tasks, then the shared gate below a separator), columns the experts
    (each task's own experts, then the shared ones, blocks separated by white lines). Tick
    labels are coloured by owner: one colour per task, dark grey for ``shared``. A cell is
    hatched grey where the gate may not choose the expert (PLE and CGC).

    Args:
        weights: the output of :func:`gate_weights`.
        value: ``"mean"`` or ``"std"``.
        group: with a grouped frame, the group to draw; ``None`` pools the groups (weighted by
            their sizes, which gives the overall numbers).
        annotate: write the values in the cells; ``None``: only when every panel has at most
            64 cells.
        vmax: top of the colour scale, whose bottom is 0 (``None``: 1 for the mean, a weight
            being a probability, so that a gate that does not discriminate looks pale; the
            largest value drawn for the std).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gates import gate_weights, plot_gate_heatmap
        >>> from mtlbook.models import PLE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> fig = plot_gate_heatmap(gate_weights(PLE(data.schema, expert_units=(8,)), data))
        >>> len(fig.axes) >= 2  # two levels (and a colour bar)
        True
    """
    if value not in ("mean", "std"):
        raise ValueError(f"value must be 'mean' or 'std', got {value!r}")
    group_col = _group_column(weights)
    weights = _one_group(weights, group_col, group)
    levels = sorted(weights["level"].unique())
    panels = []
    for level in levels:
        rows = weights[weights["level"] == level]
        gates = list(dict.fromkeys(rows["gate"]))
        gates = [g for g in gates if g != "shared"] + (["shared"] if "shared" in gates else [])
        experts = _expert_order(rows, gates)
        matrix = rows.pivot_table(
            index="gate", columns="expert", values=value, aggfunc="first", sort=False
        ).reindex(index=gates, columns=experts)
        panels.append((level, matrix))
    if vmax is None:
        vmax = 1.0 if value == "mean" else _largest(m for _, m in panels)
    if annotate is None:
        annotate = all(m.size <= 64 for _, m in panels)
    palette = _kind_palette([*weights["gate"], *weights["expert_kind"]])

    widths = [max(2.0, 0.55 * m.shape[1] + 1.2) for _, m in panels]
    height = max(2.2, 0.45 * max(m.shape[0] for _, m in panels) + 1.6)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(sum(widths) + 1.2, height),
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    label = "mean gate weight" if value == "mean" else "std of gate weight"
    for i, (ax, (level, matrix)) in enumerate(zip(axes[0], panels, strict=True)):
        last = i == len(panels) - 1
        ax.set_facecolor("#eeeeee")
        ax.patch.set_hatch("///")
        ax.patch.set_edgecolor("#cccccc")
        sns.heatmap(
            matrix.astype(float),
            ax=ax,
            vmin=0.0,
            vmax=vmax,
            cmap="rocket_r",
            annot=annotate,
            fmt=".2f",
            annot_kws={"fontsize": 8},
            linewidths=0.5,
            xticklabels=True,
            yticklabels=True,
            linecolor="white",
            cbar=last,
            cbar_kws={"label": label} if last else None,
            mask=matrix.isna(),
        )
        _mark_owners(ax, matrix, palette)
        ax.tick_params(axis="x", labelrotation=45)
        ax.tick_params(axis="y", labelrotation=0)
        title = f"level {level}" if len(panels) > 1 else "gate weights"
        if group is not None:
            title += f" ({group_col} = {group})"
        ax.set(title=title, xlabel="expert", ylabel="gate" if i == 0 else "")
    fig.tight_layout()
    return fig
