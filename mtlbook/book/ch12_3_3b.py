"""Helpers for chapter 12.3.4 (PLE and CGC): the architecture diagram, equal-size model
line-ups, parameter breakdowns, how a gate splits its weight between its own and the shared
experts, the seesaw verdicts, and the seesaw plot relabelled in Chinese.

The chapter compares single-task models, Shared-Bottom, MMoE, CGC and PLE on the seesaw plot
of the PLE paper (Tang, Liu, Zhao and Gong, RecSys 2020, Figure 1). Such a comparison is only
fair at equal size, so :func:`matched_lineup` sizes every model to the parameter count of one
CGC (as the MMoE paper sized its Shared-Bottom to its MMoE); :func:`parameter_table` says where
each model's parameters sit (shared or task-specific); :func:`gate_split` reads a
:func:`~mtlbook.analysis.gates.gate_weights` frame and gives, per gate, the weight on its own
experts, on the shared experts and on other tasks' experts; :func:`seesaw_verdicts` turns a
:func:`~mtlbook.analysis.seesaw.seesaw` frame into paired gains over the single-task baseline with a
verdict per configuration; :func:`choose_setting` runs the candidate data settings on the
validation split and picks the one where the classic models seesaw; :func:`plot_ple_diagram`
draws CGC and PLE, and :func:`zh_seesaw` relabels a :func:`~mtlbook.analysis.seesaw.plot_seesaw`
figure in Chinese. :data:`ZH_COLUMNS` and :data:`ZH_VALUES` are the Chinese names of the
chapter's table columns and verdicts, for :func:`~mtlbook.book.page.zh_table`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..analysis.compare import model_factory
from ..analysis.intervals import mtl_gain, verdict
from ..analysis.runs import PerTask
from ..analysis.seesaw import seesaw
from ..data import MultiTaskData, Schema, make_correlated_tasks
from ..models import CGC, PLE, MMoE, SharedBottom, SingleTask
from ..models.base import MultiTaskModel
from ..utils import count_parameters, match_width
from .diagrams import arrow, box, canvas, finish
from .page import zh, zh_figure

__all__ = [
    "ZH_COLUMNS",
    "ZH_VALUES",
    "CorrelatedSetting",
    "choose_setting",
    "gate_split",
    "matched_lineup",
    "parameter_table",
    "plot_ple_diagram",
    "seesaw_verdicts",
    "zh_seesaw",
]


# ---------------------------------------------------------------------------- diagram

_SHARED_PATH = "#1f5f99"  # arrows into and out of PLE's shared gate


def plot_ple_diagram(levels: int = 2, tasks: Sequence[str] = ("任务 A", "任务 B")) -> Figure:
    """CGC (``levels=1``) or PLE: per level each task's own experts, the shared experts, each
    task's gate over its own and the shared experts and, below the top level, the shared gate
    over every expert (its arrows in blue); then one tower per task.

    Each box of experts stands for a group of them. A gate reads the same input as the experts
    of its column (not drawn). Labels are in Chinese, as the book shows them.

    Example:
        >>> from mtlbook.book.ch12_3_3b import plot_ple_diagram
        >>> fig = plot_ple_diagram(levels=2)
        >>> "共享门控" in [t.get_text() for t in fig.axes[0].texts]
        True
    """
    from matplotlib.patches import FancyBboxPatch

    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an integer ≥ 1, got {levels!r}")
    if len(tasks) != 2:
        raise ValueError(f"the diagram draws two tasks, got {len(tasks)}: {list(tasks)}")
    task_a, task_b = tasks
    width, step = 9.6, 2.3
    height = 1.1 + levels * step + 1.7
    fig, ax = canvas(width, height, scale=0.72)
    xs = {"a": 2.1, "s": 5.0, "b": 7.9}
    kinds = {"a": "task", "s": "shared", "b": "task2"}
    box(ax, 5.0, 0.4, 8.4, 0.45, "输入特征 x（嵌入 + 稠密特征）", "input")
    below = {col: (5.0, 0.63) for col in xs}  # where each column's input comes from
    for level in range(levels):
        y0 = 1.2 + level * step  # bottom of the level's frame
        top = level == levels - 1
        ax.add_patch(
            FancyBboxPatch(
                (0.75, y0),
                width - 0.95,
                step - 0.35,
                boxstyle="round,pad=0.02",
                facecolor="none",
                edgecolor="#999999",
                linestyle="--",
                linewidth=1.0,
            )
        )
        ax.text(
            0.42,
            y0 + (step - 0.35) / 2,
            f"第 {level + 1} 层",
            rotation=90,
            ha="center",
            va="center",
            fontsize=10,
            color="#333333",
        )
        ye, yg = y0 + 0.45, y0 + 1.5  # experts' and gates' centres
        labels = {"a": f"{task_a} 独占专家", "s": "共享专家", "b": f"{task_b} 独占专家"}
        for col, x in xs.items():
            box(ax, x, ye, 2.3, 0.5, labels[col], kinds[col], fontsize=9)
            bx, by = below[col]
            arrow(
                ax, bx, by, x, ye - 0.27, color=_SHARED_PATH if col == "s" and level else "#333333"
            )
        gates = {"a": f"{task_a} 门控", "b": f"{task_b} 门控"} | ({} if top else {"s": "共享门控"})
        for col, text in gates.items():
            box(ax, xs[col], yg, 1.7, 0.42, text, "gate", fontsize=9)
        for col in ("a", "b"):  # a task gate mixes its own and the shared experts
            arrow(ax, xs[col], ye + 0.27, xs[col], yg - 0.23)
            arrow(ax, xs["s"] + (0.5 if col == "b" else -0.5), ye + 0.27, xs[col], yg - 0.23)
        if not top:  # the shared gate mixes every expert of the level
            for col in ("a", "s", "b"):
                shift = {"a": 0.6, "s": 0.0, "b": -0.6}[col]
                arrow(ax, xs[col] + shift, ye + 0.27, xs["s"], yg - 0.23, color=_SHARED_PATH)
        below = {col: (xs[col], yg + 0.22) for col in gates}
    y_tower = 1.2 + levels * step + 0.35
    for col, task in (("a", task_a), ("b", task_b)):
        box(ax, xs[col], y_tower, 2.0, 0.45, f"任务塔：{task}", kinds[col], fontsize=9)
        box(ax, xs[col], y_tower + 0.85, 1.4, 0.4, f"ŷ {task}", "output", fontsize=9)
        arrow(ax, *below[col], xs[col], y_tower - 0.24)
        arrow(ax, xs[col], y_tower + 0.23, xs[col], y_tower + 0.64)
    return finish(fig)


# ---------------------------------------------------------------------------- Chinese labels

#: Chinese names of the columns of this chapter's tables (line-ups, seesaw verdicts and tables,
#: gate splits, expert utilisation), for :func:`~mtlbook.book.page.zh_table`.
ZH_COLUMNS: dict[str, str] = {
    "setting": "设置",
    "configuration": "配置",
    "shared": "共享专家",
    "task_specific": "任务独占参数",
    "shared_fraction": "共享比例",
    "verdict": "判定",
    "significant": "区间不跨 0 的任务数",
    "score": "跷跷板强度",
    "chosen": "选中",
    "n": "种子数",
    "pareto": "在帕累托前沿上",
    "beats_baseline": "两个任务都优于单任务",
    "own": "自己的专家",
    "other_tasks": "其他任务的专家",
    "n_choices": "可选专家数",
    "unused_experts": "闲置专家",
    **{
        f"{task}_{part}": f"{zh(task)} {label}"
        for task in ("task1", "task2", "click", "purchase")
        for part, label in (
            ("gain", "增益 (%)"),
            ("lo", "下限"),
            ("hi", "上限"),
            ("mse", "MSE"),
            ("mse_lo", "MSE 下限"),
            ("mse_hi", "MSE 上限"),
            ("auc", "AUC"),
            ("auc_lo", "AUC 下限"),
            ("auc_hi", "AUC 上限"),
        )
    },
}

#: Chinese for the verdicts of :func:`seesaw_verdicts` and the configurations' names.
ZH_VALUES: dict[str, str] = {
    "seesaw": "跷跷板",
    "better on both": "两个任务都更好",
    "worse on both": "两个任务都更差",
    "n/a": "无法判定",
    "single": "单任务",
}

_SEESAW_AXIS = re.compile(r"(\S+) (\S+) \((\w+); (↓ better, axis reversed|↑ better)\)")
_SEESAW_TITLE = re.compile(r"Seesaw: (\S+) vs (\S+) \(mean and (\S+) interval over seeds\)")
_SPLITS = {"test": "测试集", "valid": "验证集", "train": "训练集"}


def zh_seesaw(
    fig: Figure, title: str | None = None, names: Mapping[str, str] | None = None
) -> Figure:
    """A :func:`~mtlbook.analysis.seesaw.plot_seesaw` figure relabelled in Chinese, in place.

    Axis labels (task, metric, split, which way is better), the title (or ``title``), the
    legend and the points' labels: task names through :func:`~mtlbook.book.page.zh` (task1 →
    任务 1, also inside labels such as ``SB task1:task2=4:1``), ``single`` → 单任务, and
    ``names`` for any other configuration.
    """
    extra = {**ZH_VALUES, **(names or {})}

    def name(label: str) -> str:
        return extra.get(label, zh(label))

    for ax in fig.axes:
        tasks = []
        for get, set_ in ((ax.get_xlabel, ax.set_xlabel), (ax.get_ylabel, ax.set_ylabel)):
            match = _SEESAW_AXIS.fullmatch(get())
            if match:
                task, metric, split, direction = match.groups()
                tasks.append(task)
                way = "越小越好，坐标轴反向" if direction.startswith("↓") else "越大越好"
                set_(f"{zh(task)} {metric}（{_SPLITS.get(split, split)}；{way}）")
        match = _SEESAW_TITLE.fullmatch(ax.get_title())
        if title is not None or match:
            a, b, level = match.groups() if match else ("", "", "")
            ax.set_title(title or f"跷跷板图：{zh(a)} 与 {zh(b)}（种子间均值与 {level} 区间）")
        for text in ax.texts:  # the points' labels: configurations
            label = text.get_text()
            if label not in extra:
                for task in tasks:
                    label = re.sub(rf"\b{re.escape(task)}\b", zh(task), label)
            text.set_text(name(label))
        legend = ax.get_legend()
        for entry in legend.get_texts() if legend is not None else []:
            label = entry.get_text()
            if label == "Pareto front (not dominated)":
                label = "帕累托前沿（不被其他配置支配）"
            elif label.endswith(" (mean)"):
                label = f"{name(label.removesuffix(' (mean)'))}（均值）"
            elif label.startswith("better than ") and label.endswith(" on both"):
                label = f"两个任务都优于{name(label[len('better than ') : -len(' on both')])}"
            entry.set_text(label)
    return zh_figure(fig, extra)


# ---------------------------------------------------------------------------- model line-up


def matched_lineup(
    schema: Schema,
    *,
    n_shared_experts: int = 2,
    n_task_experts: int = 1,
    expert_units: int = 16,
    tower_units: Sequence[int] = (8,),
    n_levels: int = 2,
    single_second_layer: int = 8,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Single-task, Shared-Bottom, MMoE, CGC and PLE of (about) the same size.

    The reference is ``CGC(n_shared_experts, n_task_experts, expert_units)``. MMoE gets the
    same number of experts in total (``n_tasks · n_task_experts + n_shared_experts``) of the
    same width, which makes it the same size up to the gates; the widths of the Shared-Bottom
    bottom, of PLE's experts (``n_levels`` levels of CGC's layout) and of the first hidden
    layer of each single-task network (whose second layer has ``single_second_layer`` units)
    are chosen by :func:`~mtlbook.utils.match_width` so that each model's parameter count is
    closest to CGC's. For the single-task baseline, the count is that of both tasks' networks
    together.

    Args:
        schema: the data schema (both tasks).
        n_shared_experts, n_task_experts, expert_units: CGC's layout (one layer per expert).
        tower_units: hidden layers of every task tower (all multi-task models).
        n_levels: PLE's number of extraction levels (≥ 2; one level is CGC).
        single_second_layer: width of the single-task networks' second hidden layer.

    Returns:
        ``(models, sizes)``: ``models`` maps ``"single"``, ``"SharedBottom"``, ``"MMoE"``,
        ``"CGC"``, ``"PLE"`` to ``(schema, seed) → model`` factories (``"single"`` is a
        :class:`~mtlbook.analysis.runs.PerTask`), ready for :func:`~mtlbook.analysis.seesaw.seesaw`;
        ``sizes`` is a table with columns ``model, setting, parameters`` (``setting`` names the
        matched width, in Chinese: the book shows it).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.book.ch12_3_3b import matched_lineup
        >>> data = mb.make_correlated_tasks(200, 0.5, n_features=20)
        >>> models, sizes = matched_lineup(data.schema)
        >>> sorted(models)
        ['CGC', 'MMoE', 'PLE', 'SharedBottom', 'single']
    """
    if not isinstance(schema, Schema):
        raise TypeError(f"schema must be a data schema (data.schema), got {type(schema).__name__}")
    if len(schema.tasks) < 2:
        raise ValueError(
            f"a multi-task line-up needs at least two tasks, the schema has {len(schema.tasks)}"
        )
    for name, value, least in (
        ("n_task_experts", n_task_experts, 1),
        ("n_shared_experts", n_shared_experts, 1),
        ("expert_units", expert_units, 1),
        ("n_levels", n_levels, 2),
        ("single_second_layer", single_second_layer, 1),
    ):
        if not isinstance(value, int | np.integer) or value < least:
            raise ValueError(f"{name} must be an integer ≥ {least}, got {value!r}")
    towers = tuple(tower_units)
    experts = (int(expert_units),)
    n_experts = len(schema.tasks) * n_task_experts + n_shared_experts
    cgc = model_factory(
        CGC,
        n_shared_experts=n_shared_experts,
        n_task_experts=n_task_experts,
        expert_units=experts,
        tower_units=towers,
    )
    target = count_parameters(cgc(schema, 0))

    def single(width: int) -> SingleTask:  # one network per task, counted together
        return SingleTask(schema, hidden_units=(width, single_second_layer), seed=0)

    w_single = match_width(single, target)
    w_bottom = match_width(
        lambda w: SharedBottom(schema, bottom_units=(w,), tower_units=towers, seed=0), target
    )
    w_ple = match_width(
        lambda w: PLE(
            schema,
            n_levels=n_levels,
            n_shared_experts=n_shared_experts,
            n_task_experts=n_task_experts,
            expert_units=(w,),
            tower_units=towers,
            seed=0,
        ),
        target,
    )
    models: dict[str, Any] = {
        "single": PerTask(model_factory(SingleTask, hidden_units=(w_single, single_second_layer))),
        "SharedBottom": model_factory(SharedBottom, bottom_units=(w_bottom,), tower_units=towers),
        "MMoE": model_factory(MMoE, n_experts=n_experts, expert_units=experts, tower_units=towers),
        "CGC": cgc,
        "PLE": model_factory(
            PLE,
            n_levels=n_levels,
            n_shared_experts=n_shared_experts,
            n_task_experts=n_task_experts,
            expert_units=(w_ple,),
            tower_units=towers,
        ),
    }
    settings = {  # the book shows these descriptions: Chinese
        "single": f"2 个网络，隐藏层 ({w_single}, {single_second_layer})",
        "SharedBottom": f"共享底层 {w_bottom} 个单元",
        "MMoE": f"{n_experts} 个专家 × {expert_units} 个单元",
        "CGC": f"每个任务 {n_task_experts} 个 + 共享 {n_shared_experts} 个专家 × "
        f"{expert_units} 个单元",
        "PLE": f"{n_levels} 层 × (每个任务 {n_task_experts} 个 + 共享 {n_shared_experts} 个) × "
        f"{w_ple} 个单元",
    }
    rows = []
    for name, spec in models.items():
        n = count_parameters(single(w_single) if name == "single" else spec(schema, 0))
        rows.append({"model": name, "setting": settings[name], "parameters": n})
    return models, pd.DataFrame(rows)


def parameter_table(models: Mapping[str, MultiTaskModel]) -> pd.DataFrame:
    """Where each model's parameters sit: shared by all tasks, or not.

    ``shared`` counts :meth:`~mtlbook.models.MultiTaskModel.shared_parameters` (for PLE: the
    input layer and, per level, the shared experts and the shared gate; for MMoE: the input
    layer and every expert); ``task_specific`` is the rest (towers, gates of one task, a task's
    own experts).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.book.ch12_3_3b import parameter_table
        >>> from mtlbook.models import CGC, MMoE
        >>> schema = mb.make_correlated_tasks(100, 0.5, n_features=20).schema
        >>> table = parameter_table({"MMoE": MMoE(schema), "CGC": CGC(schema)})
        >>> list(table.columns)
        ['model', 'parameters', 'shared', 'task_specific', 'shared_fraction']
        >>> fraction = table.set_index("model")["shared_fraction"]
        >>> bool(fraction["MMoE"] > fraction["CGC"])  # CGC's task experts are not shared
        True
    """
    rows = []
    for name, model in models.items():
        if not isinstance(model, MultiTaskModel):
            raise TypeError(
                f"model {name!r} must be a MultiTaskModel, got "
                f"{type(model).__name__}; build it first, e.g. CGC(data.schema)"
            )
        total = count_parameters(model)
        shared = sum(
            p.numel()
            for p in {id(p): p for p in model.shared_parameters()}.values()
            if p.requires_grad
        )
        rows.append(
            {
                "model": name,
                "parameters": total,
                "shared": shared,
                "task_specific": total - shared,
                "shared_fraction": shared / total if total else np.nan,
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- gates


def gate_split(weights: pd.DataFrame) -> pd.DataFrame:
    """Per gate, the mean weight on its own experts, on the shared experts and on other tasks'.

    A task gate of CGC or PLE can choose only its own and the shared experts, so its
    ``other_tasks`` share is 0 by construction; an MMoE gate sees only shared experts (they are
    named ``shared/i``); PLE's shared gate has no experts of its own and spreads its weight
    over every task's and the shared experts (``own`` is NaN for it).

    Args:
        weights: the output of :func:`~mtlbook.analysis.gates.gate_weights` (not grouped).

    Returns:
        One row per ``(level, gate)`` with columns ``level, gate, own, shared, other_tasks``
        (each a mean weight; a row sums to 1 up to rounding) and ``n_choices``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.gates import gate_weights
        >>> from mtlbook.book.ch12_3_3b import gate_split
        >>> from mtlbook.models import PLE
        >>> data = mb.make_correlated_tasks(200, 0.5, n_features=20)
        >>> split = gate_split(gate_weights(PLE(data.schema, expert_units=(8,)), data))
        >>> list(split.columns)
        ['level', 'gate', 'own', 'shared', 'other_tasks', 'n_choices']
    """
    needed = ["level", "gate", "expert", "expert_kind", "mean"]
    if not isinstance(weights, pd.DataFrame):
        raise TypeError(f"expected the DataFrame of gate_weights(), got {type(weights).__name__}")
    missing = [c for c in needed if c not in weights.columns]
    if missing:
        raise ValueError(f"not a gate_weights() frame: column(s) {missing} are missing")
    extra = [c for c in weights.columns if c not in (*needed, "n", "std")]
    if extra:
        raise ValueError(
            f"gate_split needs an ungrouped gate_weights() frame; this one has "
            f"the extra column(s) {extra} (pass one group's rows)"
        )
    w = weights.assign(
        part=np.where(
            weights["expert_kind"] == "shared",
            "shared",
            np.where(weights["expert_kind"] == weights["gate"], "own", "other_tasks"),
        )
    )
    out = (
        w.pivot_table(
            index=["level", "gate"], columns="part", values="mean", aggfunc="sum", sort=False
        )
        .reindex(columns=["own", "shared", "other_tasks"])
        .reset_index()
    )
    out.columns.name = None
    out[["shared", "other_tasks"]] = out[["shared", "other_tasks"]].fillna(0.0)
    is_shared_gate = out["gate"] == "shared"
    out["own"] = out["own"].where(is_shared_gate, out["own"].fillna(0.0))
    out["n_choices"] = w.groupby(["level", "gate"], sort=False)["expert"].size().to_numpy()
    return out


# ---------------------------------------------------------------------------- seesaw


def _seesaw_class(gains: Sequence[float]) -> str:
    """Where the mean gains on the tasks put a configuration: better or worse on all of them,
    or on the seesaw (``"n/a"`` when a gain is missing)."""
    if any(np.isnan(g) for g in gains):
        return "n/a"
    if all(g > 0 for g in gains):
        return "better on both"
    if all(g < 0 for g in gains):
        return "worse on both"
    return "seesaw"


def seesaw_verdicts(
    frame: pd.DataFrame, baseline: str = "single", confidence: float = 0.95
) -> pd.DataFrame:
    """Paired gains of every configuration over ``baseline`` per task, and a verdict.

    The gain (in %, positive = better, for MSE and AUC alike) is paired by seed and averaged,
    with a Student-t interval (:func:`~mtlbook.analysis.intervals.mtl_gain`). The verdict reads the
    mean gains: ``"better on both"``, ``"worse on both"`` or ``"seesaw"`` (better on one task,
    worse on the other); ``significant`` says on how many tasks the interval excludes 0 (the
    :func:`~mtlbook.analysis.intervals.verdict` is not ``inconclusive``).

    Args:
        frame: the output of :func:`~mtlbook.analysis.seesaw.seesaw` (two tasks, one metric each).
        baseline: the configuration the gains are measured against.
        confidence: interval level.

    Returns:
        One row per configuration (other than the baseline), with per task ``<task>_gain``
        (mean), ``<task>_lo``, ``<task>_hi``, then ``verdict`` and ``significant``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.analysis.seesaw import seesaw
        >>> from mtlbook.book.ch12_3_3b import matched_lineup, seesaw_verdicts
        >>> data = mb.make_correlated_tasks(400, 0.5, n_features=8, seed=0)
        >>> models, sizes = matched_lineup(data.schema)
        >>> lineup = {name: models[name] for name in ("single", "SharedBottom", "CGC")}
        >>> verdicts = seesaw_verdicts(seesaw(lineup, data, seeds=2, epochs=2))
        >>> verdicts["configuration"].tolist()
        ['SharedBottom', 'CGC']
        >>> list(verdicts.columns[1:4])  # then task2's, verdict and significant
        ['task1_gain', 'task1_lo', 'task1_hi']
        >>> set(verdicts["verdict"]) <= {"better on both", "worse on both", "seesaw"}
        True
    """
    needed = ["configuration", "seed", "task", "metric", "value"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ValueError(f"not a seesaw() frame: column(s) {missing} are missing")
    configs = list(dict.fromkeys(frame["configuration"]))
    if baseline not in configs:
        raise ValueError(f"baseline {baseline!r} is not a configuration; they are {configs}")
    tasks = list(dict.fromkeys(frame["task"]))
    rows = frame.assign(model=frame["configuration"])[["model", "seed", "task", "metric", "value"]]
    gains = mtl_gain(rows, baseline, confidence=confidence)
    out = pd.DataFrame({"configuration": [c for c in configs if c != baseline]})
    for task in tasks:
        g = gains[gains["task"] == task].set_index("model").reindex(out["configuration"])
        out[f"{task}_gain"] = g["mean"].to_numpy()
        out[f"{task}_lo"] = g["lo"].to_numpy()
        out[f"{task}_hi"] = g["hi"].to_numpy()
    out["verdict"] = [_seesaw_class([row[f"{t}_gain"] for t in tasks]) for _, row in out.iterrows()]
    out["significant"] = [
        sum(verdict(row[f"{t}_lo"], row[f"{t}_hi"]) != "inconclusive" for t in tasks)
        for _, row in out.iterrows()
    ]
    return out


@dataclass(frozen=True)
class CorrelatedSetting:
    """One candidate data setting: :func:`~mtlbook.data.make_correlated_tasks` data of a given
    correlation, with the training labels of ``sparse_task`` thinned to ``label_fraction``
    (validation and test keep every label).

    Example:
        >>> from mtlbook.book.ch12_3_3b import CorrelatedSetting
        >>> setting = CorrelatedSetting(0.5, label_fraction=0.1, n_samples=400, n_features=8)
        >>> data = setting.make_data(0)
        >>> train = setting.transform_train(data, seed=0)
        >>> float(data.mask("task2").mean()), float(train.mask("task2").mean())
        (1.0, 0.1)
    """

    correlation: float
    label_fraction: float = 1.0
    sparse_task: str = "task2"
    n_samples: int = 3_000
    n_features: int = 20

    def __post_init__(self) -> None:
        if not -1.0 <= float(self.correlation) <= 1.0:
            raise ValueError(f"correlation must lie in [-1, 1], got {self.correlation!r}")
        if not 0.0 < float(self.label_fraction) <= 1.0:
            raise ValueError(f"label_fraction must lie in (0, 1], got {self.label_fraction!r}")

    def make_data(self, seed: int) -> MultiTaskData:
        """The data of one seed (a fresh draw per seed)."""
        return make_correlated_tasks(
            self.n_samples, self.correlation, n_features=self.n_features, seed=seed
        )

    def transform_train(self, train: MultiTaskData, seed: int) -> MultiTaskData:
        """Thin the sparse task's training labels (identity when ``label_fraction`` is 1)."""
        if self.label_fraction >= 1.0:
            return train
        return train.subsample_labels(self.sparse_task, self.label_fraction, seed=seed)

    def seesaw(self, models: Mapping[str, Any], seeds: Any, **kwargs: Any) -> pd.DataFrame:
        """:func:`~mtlbook.analysis.seesaw.seesaw` on this setting (``kwargs``: split, fit
        options)."""
        return seesaw(
            models, self.make_data, seeds=seeds, transform_train=self.transform_train, **kwargs
        )


def choose_setting(
    settings: Mapping[str, CorrelatedSetting],
    models: Mapping[str, Any],
    seeds: Any,
    *,
    baseline: str = "single",
    judged: Sequence[str] = ("SharedBottom",),
    **fit_kwargs: Any,
) -> tuple[str, pd.DataFrame]:
    """Run every candidate setting on the **validation** split and pick one with a seesaw.

    Only the ``baseline`` and the ``judged`` models (by default Shared-Bottom, the model in
    which the seesaw is usually first seen) are trained, so the choice does not look at the
    models the chapter then puts to the test. A judged model's *seesaw score* in a setting is
    ``min(|gain_a|, |gain_b|)`` (its mean validation gains over the baseline, in %) when the
    two gains have opposite signs (a seesaw; the larger, the clearer), and
    ``−min(|gain_a|, |gain_b|)`` when they have the same sign (no seesaw; the closer to 0, the
    nearer one task is to tipping over). A setting scores its judged models' best, and the
    highest-scoring setting is chosen: one with a seesaw always beats one without, and if no
    candidate has a seesaw, the nearest one is taken (the table shows the verdicts).

    Args:
        settings: name → :class:`CorrelatedSetting`.
        models: a line-up containing ``baseline`` and the ``judged`` models (e.g. from
            :func:`matched_lineup`).
        seeds: seeds, as in :func:`~mtlbook.analysis.seesaw.seesaw`.
        baseline: the single-task configuration.
        judged: the models whose behaviour defines a seesaw.
        **fit_kwargs: passed to :func:`~mtlbook.analysis.seesaw.seesaw` (``epochs``, ``lr``, ...).

    Returns:
        ``(name, table)``: the chosen setting's name and one row per setting × judged model
        with the gains of :func:`seesaw_verdicts` plus ``score`` and ``chosen``.
    """
    if not settings:
        raise ValueError("give at least one candidate setting")
    if "split" in fit_kwargs:
        raise ValueError("choose_setting always uses the validation split; leave split out")
    missing = [m for m in (baseline, *judged) if m not in models]
    if missing:
        raise ValueError(f"models lacks {missing}; it has {list(models)}")
    subset = {name: models[name] for name in (baseline, *judged)}
    tables = []
    for name, setting in settings.items():
        if not isinstance(setting, CorrelatedSetting):
            raise TypeError(
                f"setting {name!r} must be a CorrelatedSetting, got {type(setting).__name__}"
            )
        frame = setting.seesaw(subset, seeds, baseline=baseline, split="valid", **fit_kwargs)
        tables.append(seesaw_verdicts(frame, baseline).assign(setting=name))
    table = pd.concat(tables, ignore_index=True)
    gains = table[[c for c in table.columns if c.endswith("_gain")]].to_numpy(dtype=float)
    closest = np.abs(gains).min(axis=1)
    table["score"] = np.where(table["verdict"] == "seesaw", closest, -closest)
    chosen = str(table.groupby("setting", sort=False)["score"].max().idxmax())
    table["chosen"] = table["setting"] == chosen
    columns = [
        "setting",
        "configuration",
        *[c for c in table.columns if c not in ("setting", "configuration")],
    ]
    return chosen, table[columns]
