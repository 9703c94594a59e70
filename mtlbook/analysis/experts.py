"""Are the experts of a mixture-of-experts model used well?

:func:`expert_utilization` gives each gate's entropy and effective number of experts (the
exponential of the entropy) and flags collapsed gates and unused experts;
:func:`expert_usage` sums the weight each expert receives over the gates;
:func:`plot_expert_utilization` draws both. The gate weights are collected as in
:mod:`mtlbook.analysis.gates`. Chapters 12.3.3 and 12.3.4 of the book check MMoE and PLE for
collapse.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..data import MultiTaskData
from ..models.base import MultiTaskModel
from ._common import SHARED_COLOR, check_batch_size, check_model_data
from .gates import _collect_gates, _group_column, _group_labels, _stats_frames

__all__ = ["expert_usage", "expert_utilization", "plot_expert_utilization"]


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
        >>> from mtlbook.analysis.experts import expert_usage
        >>> from mtlbook.analysis.gates import gate_weights
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> usage = expert_usage(gate_weights(MMoE(data.schema, expert_units=(8,)), data))
        >>> int(usage["unused_expert"].sum())
        0
    """
    group = _group_column(weights)
    unused_fraction = _check_fraction("unused_fraction", unused_fraction)
    keys = ["level", "gate"] + ([group] if group else [])
    w = weights.assign(n_choices=weights.groupby(keys, sort=False)["expert"].transform("size"))
    w["relative_share"] = w["mean"] * w["n_choices"]
    by = ([group] if group else []) + ["level", "expert"]
    top = w.loc[w.groupby(by, sort=False)["relative_share"].idxmax()]
    usage = pd.DataFrame(
        {
            **({group: top[group].to_numpy()} if group else {}),
            "level": top["level"].to_numpy(),
            "expert": top["expert"].to_numpy(),
            "expert_kind": top["expert_kind"].to_numpy(),
            "max_mean_weight": w.groupby(by, sort=False)["mean"].max().to_numpy(),
            "top_gate": top["gate"].to_numpy(),
            "relative_share": top["relative_share"].to_numpy(),
        }
    )
    usage["unused_expert"] = usage["relative_share"] < unused_fraction
    return usage


def _entropy(p: np.ndarray) -> float:
    p = p / p.sum() if p.sum() > 0 else p
    return float(-np.sum(p[p > 0] * np.log(p[p > 0])))


def expert_utilization(
    source: MultiTaskModel | pd.DataFrame,
    data: MultiTaskData | None = None,
    *,
    by: Any = None,
    batch_size: int = 8192,
    unused_fraction: float = 0.1,
    collapse_threshold: float = 0.95,
) -> pd.DataFrame:
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
        >>> from mtlbook.analysis.experts import expert_utilization
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> util = expert_utilization(MMoE(data.schema, n_experts=4, expert_units=(8,)), data)
        >>> bool(util["effective_experts"].between(1, 4).all())
        True
    """
    collapse_threshold = _check_fraction("collapse_threshold", collapse_threshold)
    if isinstance(source, pd.DataFrame):
        if data is not None or by is not None:
            raise ValueError(
                "with a gate_weights() frame, leave data and by out (the frame "
                "already holds the averages)"
            )
        weights, entropy = source, None
        group = _group_column(weights)
    elif isinstance(source, MultiTaskModel):
        if data is None:
            raise ValueError("expert_utilization(model, data): give the data to run the model over")
        check_model_data(source, data)
        batch_size = check_batch_size(batch_size)
        group, codes, labels = _group_labels(data, by)
        n_groups = 1 if labels is None else len(labels)
        stats = _collect_gates(source, data, codes, n_groups, batch_size)
        weights, entropy = _stats_frames(stats, group, labels)
    else:
        raise TypeError(
            f"source must be a gated model or a gate_weights() frame, got {type(source).__name__}"
        )
    usage = expert_usage(weights, unused_fraction)
    unused_keys = set(
        zip(
            *(
                usage.loc[usage["unused_expert"], c]
                for c in ([group] if group else []) + ["level", "expert"]
            ),
            strict=True,
        )
    )

    keys = ([group] if group else []) + ["level", "gate"]
    rows = []
    for key, part in weights.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mean = part["mean"].to_numpy(dtype=np.float64)
        h = _entropy(mean)
        top = int(np.argmax(mean))
        share = mean[top] / mean.sum() if mean.sum() > 0 else np.nan
        prefix = key[:1] if group else ()
        rows.append(
            {
                **({group: key[0]} if group else {}),
                "level": part["level"].iloc[0],
                "gate": part["gate"].iloc[0],
                "n_experts": len(mean),
                "entropy": h,
                "effective_experts": float(np.exp(h)),
                "top_expert": part["expert"].iloc[top],
                "top_weight": float(share),
                "collapsed_gate": bool(len(mean) > 1 and share > collapse_threshold),
                "unused_experts": tuple(
                    e for e in part["expert"] if (*prefix, part["level"].iloc[0], e) in unused_keys
                ),
            }
        )
    util = pd.DataFrame(rows)
    if entropy is None:
        util["sample_entropy"] = np.nan
    else:
        util = util.merge(entropy, on=keys, how="left", sort=False)
    util["sample_effective_experts"] = np.exp(util["sample_entropy"])
    order = [
        *keys[:-2],
        "level",
        "gate",
        "n_experts",
        "entropy",
        "effective_experts",
        "sample_entropy",
        "sample_effective_experts",
        "top_expert",
        "top_weight",
        "collapsed_gate",
        "unused_experts",
    ]
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
        >>> from mtlbook.analysis.experts import expert_utilization, plot_expert_utilization
        >>> from mtlbook.models import MMoE
        >>> data = mb.simulate_funnel(2_000, seed=0)
        >>> util = expert_utilization(MMoE(data.schema, expert_units=(8,)), data)
        >>> fig = plot_expert_utilization(util)
    """
    group = _utilization_group(utilization)
    util = utilization.copy()
    multi_level = util["level"].nunique() > 1
    util["label"] = [
        f"L{lv} {g}" if multi_level else str(g)
        for lv, g in zip(util["level"], util["gate"], strict=True)
    ]
    gates = list(dict.fromkeys(util["label"]))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(gates) + 2.0), 3.8))
    _draw_effective_bars(ax, util, gates, group)
    _mark_gate_choices(ax, util, gates)
    ax.set(xlabel="gate", ylabel="effective number of experts", ylim=(0, None))
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title=group, title_fontsize=8)
    fig.tight_layout()
    return fig


def _utilization_group(utilization: pd.DataFrame) -> str | None:
    """Check that ``utilization`` is an :func:`expert_utilization` frame; its grouping column
    (the first column that frame does not always have), or ``None``."""
    needed = (
        "level",
        "gate",
        "n_experts",
        "effective_experts",
        "sample_effective_experts",
        "collapsed_gate",
        "unused_experts",
    )
    missing = [c for c in needed if c not in utilization.columns]
    if missing:
        raise ValueError(f"not an expert_utilization() frame: column(s) {missing} are missing")
    known = {*needed, "entropy", "sample_entropy", "top_expert", "top_weight"}
    extra = [c for c in utilization.columns if c not in known]
    return extra[0] if extra else None


def _draw_effective_bars(
    ax: plt.Axes, util: pd.DataFrame, gates: list[str], group: str | None
) -> None:
    """The bars: per gate label, the effective number of experts of the mean weights and per
    sample, or (grouped) that of the mean weights, one bar per group."""
    if group is None:
        long = util.melt(
            id_vars=["label"],
            value_vars=["effective_experts", "sample_effective_experts"],
            var_name="of",
            value_name="effective",
        )
        long["of"] = long["of"].map(
            {"effective_experts": "mean weights", "sample_effective_experts": "per sample"}
        )
        long = long.dropna(subset=["effective"])
        sns.barplot(
            data=long, x="label", y="effective", hue="of", order=gates, ax=ax, palette="colorblind"
        )
    else:
        sns.barplot(
            data=util,
            x="label",
            y="effective_experts",
            hue=group,
            order=gates,
            ax=ax,
            palette="colorblind",
            errorbar=None,
        )


def _mark_gate_choices(ax: plt.Axes, util: pd.DataFrame, gates: list[str]) -> None:
    """A dashed tick at each gate's number of choices ``n_g``, noting above it a collapsed gate
    and the experts it leaves unused."""
    first = util.drop_duplicates("label").set_index("label")
    for x, label in enumerate(gates):
        row = first.loc[label]
        ax.plot(
            [x - 0.45, x + 0.45],
            [row["n_experts"]] * 2,
            color=SHARED_COLOR,
            linewidth=1.5,
            linestyle="--",
            label="choices $n_g$" if x == 0 else None,
        )
        notes = []
        if util.loc[util["label"] == label, "collapsed_gate"].any():
            notes.append("collapsed")
        unused = sorted({e for t in util.loc[util["label"] == label, "unused_experts"] for e in t})
        if unused:
            notes += ["unused:", *unused]
        if notes:
            ax.text(
                x,
                row["n_experts"],
                "\n".join(notes),
                ha="center",
                va="bottom",
                fontsize=7,
                color="#b2182b",
            )
