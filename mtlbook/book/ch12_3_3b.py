"""Helpers for chapter 12.3.3 (PLE and CGC): equal-size model line-ups, parameter breakdowns,
how a gate splits its weight between its own and the shared experts, and the seesaw verdicts.

The chapter compares single-task models, Shared-Bottom, MMoE, CGC and PLE on the seesaw plot
of the PLE paper (Tang, Liu, Zhao and Gong, RecSys 2020, Figure 1). Such a comparison is only
fair at equal size, so :func:`matched_lineup` sizes every model to the parameter count of one
CGC (as the MMoE paper sized its Shared-Bottom to its MMoE); :func:`parameter_table` says where
each model's parameters sit (shared or task-specific); :func:`gate_split` reads a
:func:`~mtlbook.analysis.gates.gate_weights` frame and gives, per gate, the weight on its own
experts, on the shared experts and on other tasks' experts; :func:`seesaw_verdicts` turns a
:func:`~mtlbook.analysis.seesaw.seesaw` frame into paired gains over the single-task baseline with a
verdict per configuration; :func:`choose_setting` runs the candidate data settings on the
validation split and picks the one where the classic models seesaw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..analysis.compare import model_factory
from ..analysis.intervals import mtl_gain, verdict
from ..analysis.runs import PerTask
from ..analysis.seesaw import seesaw
from ..data import MultiTaskData, Schema, make_correlated_tasks
from ..models import CGC, PLE, MMoE, SharedBottom, SingleTask
from ..models.base import MultiTaskModel
from ..utils import count_parameters, match_width

__all__ = [
    "CorrelatedSetting",
    "choose_setting",
    "gate_split",
    "matched_lineup",
    "parameter_table",
    "seesaw_verdicts",
]


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
        matched width).

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
    settings = {
        "single": f"2 networks, hidden ({w_single}, {single_second_layer})",
        "SharedBottom": f"bottom {w_bottom} units",
        "MMoE": f"{n_experts} experts × {expert_units} units",
        "CGC": f"{n_task_experts} per task + {n_shared_experts} shared × {expert_units} units",
        "PLE": f"{n_levels} levels × ({n_task_experts} per task + {n_shared_experts} shared) "
        f"× {w_ple} units",
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
