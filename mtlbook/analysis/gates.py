"""Inside a mixture-of-experts model: which experts does each gate use, and are they used well?

* :func:`gate_weights` averages the gate weights of a mixture-of-experts model (OMoE, MMoE,
  CGC, PLE, DSelect-k; AITM's attention too) over a data set, optionally per group of samples
  (user segment, item category); :func:`plot_gate_heatmap` draws them as gates × experts, one
  panel per PLE level.
* :func:`expert_utilization` gives each gate's entropy and effective number of experts and
  flags collapsed gates and unused experts (:func:`expert_usage`);
  :func:`plot_expert_utilization` draws it.

Each answer is a tidy DataFrame; the ``plot_*`` functions return the matplotlib Figure.
Chapter 12.3.3 of the book reads the gates of MMoE and PLE with these functions.
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

__all__ = ["expert_usage", "expert_utilization", "gate_weights", "plot_expert_utilization",
           "plot_gate_heatmap"]

#: The columns of a :func:`gate_weights` frame; any other column is the grouping column.
_WEIGHT_COLUMNS = ("level", "gate", "expert", "expert_kind", "n", "mean", "std")


def _no_gates_error(model: MultiTaskModel) -> ValueError:
    name = type(model).__name__
    hint = ("gated models are OMoE, MMoE, CGC, PLE, DSelectK and AITM (ESMM with a gated "
            "backbone)")
    if model.mixing_parameters():
        hint = (f"{name} mixes its tasks through learned matrices instead: read them with "
                "model.mixing_parameters(); " + hint)
    return ValueError(f"{name} has no gates: its forward pass records no gate weights "
                      f"(model.gate_records() is empty); {hint}")


def _group_labels(data: MultiTaskData, by: Any) -> tuple[str | None, np.ndarray | None,
                                                         np.ndarray | None]:
    """``(column name, [n] group index per sample, the groups' labels)`` for ``by``."""
    if by is None:
        return None, None, None
    if isinstance(by, str):
        frame = data.to_frame(include_truth=True)
        if by not in frame.columns:
            raise ValueError(f"by={by!r} is not a column of data.to_frame(include_truth=True); "
                             f"its columns are {list(frame.columns)}")
        values = frame[by].to_numpy()
        categories = data.meta.get("categories", {})
        if by in categories:  # from_frame encoded the column: show the original labels
            values = np.asarray(categories[by])[values.astype(np.int64)]
        name = by
    else:
        values = np.asarray(by)
        if values.ndim != 1 or len(values) != len(data):
            raise ValueError(f"by must be a column name or one group label per sample "
                             f"({len(data)}), got an array of shape {values.shape}")
        name = "group"
    if name in _WEIGHT_COLUMNS:
        raise ValueError(f"the grouping column may not be called {name!r}: that name is taken "
                         f"by a column of the result; pass the labels as an array instead")
    missing = int(pd.isna(values).sum())
    if missing:
        raise ValueError(f"by {name!r} has {missing} missing values (a masked task's label is "
                         "NaN outside its mask); group by a column defined on every sample")
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


def _collect_gates(model: MultiTaskModel, data: MultiTaskData, codes: np.ndarray | None,
                   n_groups: int, batch_size: int) -> dict[tuple[int, str], _GateStats]:
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
                    index = torch.from_numpy(codes[start:start + size])
                start += size
                ones = torch.ones(size, dtype=torch.float64)
                for record in records:
                    w = record.weights.to("cpu", torch.float64)  # [batch, experts]
                    key = (int(record.level), str(record.gate))
                    s = stats.get(key)
                    if s is None:
                        n = w.shape[1]
                        s = stats[key] = _GateStats(
                            tuple(record.experts), torch.zeros(n_groups, n, dtype=torch.float64),
                            torch.zeros(n_groups, n, dtype=torch.float64),
                            torch.zeros(n_groups, dtype=torch.float64),
                            torch.zeros(n_groups, dtype=torch.float64))
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


def _stats_frames(stats: dict[tuple[int, str], _GateStats], group: str | None,
                  labels: np.ndarray | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The :func:`gate_weights` frame and a per-gate frame of the mean per-sample entropy."""
    weight_parts, entropy_parts = [], []
    for (level, gate), s in stats.items():
        n_groups, n_experts = s.sums.shape
        counts = s.counts.numpy()  # [groups]
        mean = s.sums.numpy() / counts[:, None]  # [groups, experts]
        with np.errstate(invalid="ignore", divide="ignore"):
            var = (s.squares.numpy() - s.sums.numpy() * mean) / (counts[:, None] - 1)
        std = np.sqrt(np.clip(var, 0.0, None))  # NaN for a group of one sample
        part = pd.DataFrame({
            "level": level,
            "gate": gate,
            "expert": np.tile(s.experts, n_groups),
            "expert_kind": np.tile([_expert_kind(e) for e in s.experts], n_groups),
            "_group": np.repeat(np.arange(n_groups), n_experts),
            "_order": np.tile(np.arange(n_experts), n_groups),
            "n": np.repeat(counts.astype(np.int64), n_experts),
            "mean": mean.reshape(-1),
            "std": std.reshape(-1),
        })
        weight_parts.append(part)
        entropy_parts.append(pd.DataFrame({"level": level, "gate": gate,
                                           "_group": np.arange(n_groups),
                                           "sample_entropy": s.entropy.numpy() / counts}))
    frames = []
    for parts in (weight_parts, entropy_parts):
        frame = pd.concat(parts, ignore_index=True)
        frame["_gate"] = frame.groupby(["level", "gate"], sort=False).ngroup()
        sort = ["_group", "_gate"] + (["_order"] if "_order" in frame else [])
        frame = frame.sort_values(sort, kind="stable")
        if group is not None:
            frame.insert(2 if "sample_entropy" in frame else 4, group,
                         labels[frame["_group"].to_numpy()])
        frames.append(frame.drop(columns=[c for c in frame if c.startswith("_")])
                      .reset_index(drop=True))
    return frames[0], frames[1]


def gate_weights(model: MultiTaskModel, data: MultiTaskData, by: Any = None,
                 batch_size: int = 8192) -> pd.DataFrame:
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
        raise ValueError(f"not a gate_weights() frame: it has several extra columns {extra} "
                         "(at most one, the grouping column)")
    return extra[0] if extra else None


def _pool_groups(weights: pd.DataFrame, group: str) -> pd.DataFrame:
    """Combine the groups of a grouped :func:`gate_weights` frame into one overall frame.

    Means are pooled with weights ``n``; the variance by the law of total variance, so the
    result equals ``gate_weights`` without ``by``.
    """
    keys = ["level", "gate", "expert", "expert_kind"]
    w = weights.assign(_sum=weights["mean"] * weights["n"],
                       _ss=(weights["n"] - 1) * weights["std"].fillna(0.0) ** 2
                       + weights["n"] * weights["mean"] ** 2)
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


def plot_gate_heatmap(weights: pd.DataFrame, value: str = "mean", group: Any = None,
                      annotate: bool | None = None, vmax: float | None = None) -> plt.Figure:
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
    group_col = _group_column(weights)
    if value not in ("mean", "std"):
        raise ValueError(f"value must be 'mean' or 'std', got {value!r}")
    if group_col is not None:
        if group is None:
            weights = _pool_groups(weights, group_col)
        else:
            known = list(dict.fromkeys(weights[group_col]))
            if group not in known:
                raise ValueError(f"group {group!r} is not in column {group_col!r}; groups are "
                                 f"{known}")
            weights = weights[weights[group_col] == group]
    elif group is not None:
        raise ValueError("group= needs a grouped frame (gate_weights(..., by=...))")
    if weights.empty:
        raise ValueError("the gate_weights() frame is empty")

    levels = sorted(weights["level"].unique())
    panels = []
    for level in levels:
        rows = weights[weights["level"] == level]
        gates = list(dict.fromkeys(rows["gate"]))
        gates = [g for g in gates if g != "shared"] + (["shared"] if "shared" in gates else [])
        experts = _expert_order(rows, gates)
        matrix = rows.pivot_table(index="gate", columns="expert", values=value,
                                  aggfunc="first", sort=False).reindex(index=gates,
                                                                       columns=experts)
        panels.append((level, matrix))
    if vmax is None and value == "mean":
        vmax = 1.0
    elif vmax is None:
        values = np.concatenate([m.to_numpy(dtype=float).ravel() for _, m in panels])
        values = values[np.isfinite(values)]
        vmax = float(values.max()) if values.size and values.max() > 0 else 1.0
    if annotate is None:
        annotate = all(m.size <= 64 for _, m in panels)
    palette = _kind_palette([*weights["gate"], *weights["expert_kind"]])

    widths = [max(2.0, 0.55 * m.shape[1] + 1.2) for _, m in panels]
    height = max(2.2, 0.45 * max(m.shape[0] for _, m in panels) + 1.6)
    fig, axes = plt.subplots(1, len(panels), figsize=(sum(widths) + 1.2, height),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    label = "mean gate weight" if value == "mean" else "std of gate weight"
    for i, (ax, (level, matrix)) in enumerate(zip(axes[0], panels, strict=True)):
        last = i == len(panels) - 1
        ax.set_facecolor("#eeeeee")
        ax.patch.set_hatch("///")
        ax.patch.set_edgecolor("#cccccc")
        sns.heatmap(matrix.astype(float), ax=ax, vmin=0.0, vmax=vmax, cmap="rocket_r",
                    annot=annotate, fmt=".2f", annot_kws={"fontsize": 8}, linewidths=0.5,
                    xticklabels=True, yticklabels=True,
                    linecolor="white", cbar=last, cbar_kws={"label": label} if last else None,
                    mask=matrix.isna())
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
        ax.tick_params(axis="x", labelrotation=45)
        ax.tick_params(axis="y", labelrotation=0)
        title = f"level {level}" if len(panels) > 1 else "gate weights"
        if group is not None:
            title += f" ({group_col} = {group})"
        ax.set(title=title, xlabel="expert", ylabel="gate" if i == 0 else "")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------- utilisation
def _check_fraction(name: str, value: Any) -> float:
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return value


def expert_usage(weights: pd.DataFrame, unused_fraction: float = 0.1) -> pd.DataFrame:
    """How much the busiest gate uses each expert, and whether any gate uses it at all.

    A gate that chooses among ``n_g`` experts gives each a share ``1 / n_g`` when it does not
    discriminate. An expert is *unused* when in every gate that may choose it, its mean weight
    is below ``unused_fraction / n_g`` (by default a tenth of the uniform share; for MMoE
    with ``n`` experts that is ``1 / (10 n)``): its parameters are trained by gradients that
    the gates scale almost to zero, and it could be pruned.

    Args:
        weights: the output of :func:`gate_weights` (grouped or not).
        unused_fraction: the threshold, as a fraction of the uniform share ``1 / n_g``.

    Returns:
        One row per ``(level, expert)`` (per group, for a grouped frame): ``expert_kind``,
        ``max_mean_weight`` (the largest mean weight any gate gives the expert), ``top_gate``
        (that gate), ``relative_share`` (the largest ``n_g ×`` mean weight: 1 means the
        uniform share) and ``unused_expert`` (``relative_share < unused_fraction``).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gates import expert_usage, gate_weights
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> usage = expert_usage(gate_weights(MMoE(data.schema, expert_units=(8,)), data))
        >>> int(usage["unused_expert"].sum())
        0
    """
    group = _group_column(weights)
    unused_fraction = _check_fraction("unused_fraction", unused_fraction)
    keys = ["level", "gate"] + ([group] if group else [])
    w = weights.assign(n_choices=weights.groupby(keys, sort=False)["expert"]
                       .transform("size"))
    w["relative_share"] = w["mean"] * w["n_choices"]
    by = ([group] if group else []) + ["level", "expert"]
    top = w.loc[w.groupby(by, sort=False)["relative_share"].idxmax()]
    usage = pd.DataFrame({
        **({group: top[group].to_numpy()} if group else {}),
        "level": top["level"].to_numpy(),
        "expert": top["expert"].to_numpy(),
        "expert_kind": top["expert_kind"].to_numpy(),
        "max_mean_weight": w.groupby(by, sort=False)["mean"].max().to_numpy(),
        "top_gate": top["gate"].to_numpy(),
        "relative_share": top["relative_share"].to_numpy(),
    })
    usage["unused_expert"] = usage["relative_share"] < unused_fraction
    return usage


def _entropy(p: np.ndarray) -> float:
    p = p / p.sum() if p.sum() > 0 else p
    return float(-np.sum(p[p > 0] * np.log(p[p > 0])))


def expert_utilization(source: MultiTaskModel | pd.DataFrame, data: MultiTaskData | None = None,
                       *, by: Any = None, batch_size: int = 8192, unused_fraction: float = 0.1,
                       collapse_threshold: float = 0.95) -> pd.DataFrame:
    """How many experts each gate really uses, with flags for collapsed gates and unused experts.

    Two entropies (natural logarithm) describe a gate with ``n_g`` choices. The entropy of its
    *mean* weights ``H(w̄)`` says how many experts it uses over the data set; the mean of the
    *per-sample* entropies ``mean_x H(w(x))`` says how many it mixes for one sample. A gate
    that routes each sample to one expert but different samples to different experts has a
    low per-sample entropy and a high entropy of the mean. ``exp(H)`` is the effective number
    of experts, between 1 (one expert) and ``n_g`` (uniform weights).

    Args:
        source: a gated model (then ``data`` is required and the model runs over it, as in
            :func:`gate_weights`), or a :func:`gate_weights` frame (then the per-sample
            entropy is not available and its columns are NaN).
        data: the samples, when ``source`` is a model.
        by: grouping, as in :func:`gate_weights` (with a model only).
        batch_size: samples per forward pass (with a model only).
        unused_fraction: an expert is unused when every gate that may choose it gives it a
            mean weight below ``unused_fraction / n_g`` (see :func:`expert_usage`).
        collapse_threshold: a gate with more than one choice has collapsed when its mean
            weight on one expert exceeds this (default 0.95): it has become a fixed choice
            of one expert, as if the other experts did not exist.

    Returns:
        pandas.DataFrame:
        One row per gate (per group): ``level``, ``gate``, the grouping column, ``n_experts``
        (the gate's choices), ``entropy`` and ``effective_experts`` (of the mean weights),
        ``sample_entropy`` and ``sample_effective_experts`` (mean per-sample),
        ``top_expert`` and ``top_weight`` (its mean weight), ``collapsed_gate`` (bool) and
        ``unused_experts`` (a tuple of the gate's choices that :func:`expert_usage` flags).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gates import expert_utilization
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> util = expert_utilization(MMoE(data.schema, n_experts=4, expert_units=(8,)), data)
        >>> bool(util["effective_experts"].between(1, 4).all())
        True
    """
    collapse_threshold = _check_fraction("collapse_threshold", collapse_threshold)
    if isinstance(source, pd.DataFrame):
        if data is not None or by is not None:
            raise ValueError("with a gate_weights() frame, leave data and by out (the frame "
                             "already holds the averages)")
        weights, entropy = source, None
        group = _group_column(weights)
    elif isinstance(source, MultiTaskModel):
        if data is None:
            raise ValueError("expert_utilization(model, data): give the data to run the model "
                             "over")
        check_model_data(source, data)
        batch_size = check_batch_size(batch_size)
        group, codes, labels = _group_labels(data, by)
        n_groups = 1 if labels is None else len(labels)
        stats = _collect_gates(source, data, codes, n_groups, batch_size)
        weights, entropy = _stats_frames(stats, group, labels)
    else:
        raise TypeError(f"source must be a gated model or a gate_weights() frame, got "
                        f"{type(source).__name__}")
    usage = expert_usage(weights, unused_fraction)
    unused_keys = set(zip(*(usage.loc[usage["unused_expert"], c] for c in
                            ([group] if group else []) + ["level", "expert"]), strict=True))

    keys = ([group] if group else []) + ["level", "gate"]
    rows = []
    for key, part in weights.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mean = part["mean"].to_numpy(dtype=np.float64)
        h = _entropy(mean)
        top = int(np.argmax(mean))
        share = mean[top] / mean.sum() if mean.sum() > 0 else np.nan
        prefix = key[:1] if group else ()
        rows.append({
            **({group: key[0]} if group else {}),
            "level": part["level"].iloc[0],
            "gate": part["gate"].iloc[0],
            "n_experts": len(mean),
            "entropy": h,
            "effective_experts": float(np.exp(h)),
            "top_expert": part["expert"].iloc[top],
            "top_weight": float(share),
            "collapsed_gate": bool(len(mean) > 1 and share > collapse_threshold),
            "unused_experts": tuple(e for e in part["expert"]
                                    if (*prefix, part["level"].iloc[0], e) in unused_keys),
        })
    util = pd.DataFrame(rows)
    if entropy is None:
        util["sample_entropy"] = np.nan
    else:
        util = util.merge(entropy, on=keys, how="left", sort=False)
    util["sample_effective_experts"] = np.exp(util["sample_entropy"])
    order = [*keys[:-2], "level", "gate", "n_experts", "entropy", "effective_experts",
             "sample_entropy", "sample_effective_experts", "top_expert", "top_weight",
             "collapsed_gate", "unused_experts"]
    return util[order]


def plot_expert_utilization(utilization: pd.DataFrame) -> plt.Figure:
    """The effective number of experts of each gate, of its mean weights and per sample.

    Each gate gets two bars, ``exp`` of the entropy of its mean weights and of its mean
    per-sample entropy, and a tick mark at its number of choices ``n_g`` (the most it can
    use); collapsed gates are labelled, gates with unused experts name them. A grouped frame
    draws the effective number of experts of the mean weights, one bar per group.

    Args:
        utilization: the output of :func:`expert_utilization`.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gates import expert_utilization, plot_expert_utilization
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> util = expert_utilization(MMoE(data.schema, expert_units=(8,)), data)
        >>> fig = plot_expert_utilization(util)
    """
    needed = ("level", "gate", "n_experts", "effective_experts", "sample_effective_experts",
              "collapsed_gate", "unused_experts")
    missing = [c for c in needed if c not in utilization.columns]
    if missing:
        raise ValueError(f"not an expert_utilization() frame: column(s) {missing} are missing")
    known = {*needed, "entropy", "sample_entropy", "top_expert", "top_weight"}
    extra = [c for c in utilization.columns if c not in known]
    group = extra[0] if extra else None
    util = utilization.copy()
    multi_level = util["level"].nunique() > 1
    util["label"] = [f"L{lv} {g}" if multi_level else str(g)
                     for lv, g in zip(util["level"], util["gate"], strict=True)]
    gates = list(dict.fromkeys(util["label"]))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(gates) + 2.0), 3.8))
    if group is None:
        long = util.melt(id_vars=["label"], value_vars=["effective_experts",
                                                        "sample_effective_experts"],
                         var_name="of", value_name="effective")
        long["of"] = long["of"].map({"effective_experts": "mean weights",
                                     "sample_effective_experts": "per sample"})
        long = long.dropna(subset=["effective"])
        sns.barplot(data=long, x="label", y="effective", hue="of", order=gates, ax=ax,
                    palette="colorblind")
    else:
        sns.barplot(data=util, x="label", y="effective_experts", hue=group, order=gates,
                    ax=ax, palette="colorblind", errorbar=None)
    first = util.drop_duplicates("label").set_index("label")
    for x, label in enumerate(gates):
        row = first.loc[label]
        ax.plot([x - 0.45, x + 0.45], [row["n_experts"]] * 2, color=SHARED_COLOR,
                linewidth=1.5, linestyle="--", label="choices $n_g$" if x == 0 else None)
        notes = []
        if util.loc[util["label"] == label, "collapsed_gate"].any():
            notes.append("collapsed")
        unused = sorted({e for t in util.loc[util["label"] == label, "unused_experts"]
                         for e in t})
        if unused:
            notes += ["unused:", *unused]
        if notes:
            ax.text(x, row["n_experts"], "\n".join(notes), ha="center", va="bottom",
                    fontsize=7, color="#b2182b")
    ax.set(xlabel="gate", ylabel="effective number of experts", ylim=(0, None))
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title=group, title_fontsize=8)
    fig.tight_layout()
    return fig


