"""Many random restarts of several architectures on fixed data: the MMoE paper's synthetic study.

Ma et al. ("Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, §5) compare Shared-Bottom, OMoE and MMoE on two synthetic
regression tasks of controlled correlation (:func:`~mtlbook.data.make_correlated_tasks`):

* **performance** (their Fig. 4): the average loss of each model at task correlations 0.5, 0.9
  and 1.0 — all models do better on more related tasks, MMoE is the least sensitive to the
  correlation, both mixture-of-experts models beat Shared-Bottom, and OMoE ≈ MMoE when the
  tasks are identical;
* **trainability** (their Fig. 5): the distribution of the final loss over many random runs
  (200 per setting) — Shared-Bottom's spread is much wider, OMoE's widens as the correlation
  falls, MMoE's stays narrow.

:func:`restart_study` runs such a study: for each correlation it draws one data set (fixed:
the restarts differ only in their initial weights and the order of their mini-batches), splits
it into train / validation / test, and trains ``n_restarts`` members of every model as one
vectorised population (:func:`~mtlbook.training.population.fit_population`). Each member keeps the
weights of its best validation epoch; the test split is scored once, at that epoch.
:func:`restart_summary` condenses the test losses per model and correlation (mean with an
interval, standard deviation, 90 % range, share of bad runs); :func:`plot_restart_curves` and
:func:`plot_restart_distributions` draw the two figures; :func:`compare_with_paper` checks
the paper's claims one by one on the restarts, with intervals and computed verdicts.
:func:`paper_models` builds the paper's three models at its sizes. Two helpers read the gates:
:func:`gate_divergence` (how differently the tasks' gates mix the experts, per restart) and
:func:`gate_shift` (how far a gate's mixture moves along a signal of the input).
:func:`plot_omoe_diagram`, :func:`plot_mmoe_diagram` and :func:`plot_moe_diagrams` draw the two
architectures with the book's Chinese labels, and :func:`zh_claims` words the
:func:`compare_with_paper` table in Chinese for the page. Chapter 12.3.3 of the book re-runs
the study with them.

Example:
    >>> from mtlbook.book.ch12_3_3a import paper_models, restart_study, restart_summary
    >>> study = restart_study(paper_models(), [0.5, 1.0], n_restarts=4, n_samples=600,
    ...                       epochs=2, lr=1e-2)
    >>> table = restart_summary(study.scores)
    >>> sorted(table["model"].unique())
    ['MMoE', 'OMoE', 'SharedBottom']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from scipy import stats as sps

from ..analysis.intervals import mean_interval, verdict
from ..analysis.runs import Factory
from ..data import MultiTaskData, Schema, make_correlated_tasks
from ..models import MMoE, OMoE, SharedBottom
from ..models.base import MultiTaskModel
from ..training.population import PopulationResult, fit_population
from .diagrams import arrow, box, canvas, finish
from .page import zh

__all__ = [
    "CURVE_COLUMNS",
    "SCORE_COLUMNS",
    "VERDICTS_ZH",
    "RestartStudy",
    "compare_with_paper",
    "gate_divergence",
    "gate_shift",
    "paper_models",
    "plot_mmoe_diagram",
    "plot_moe_diagrams",
    "plot_omoe_diagram",
    "plot_restart_curves",
    "plot_restart_distributions",
    "restart_study",
    "restart_summary",
    "zh_claims",
]


#: The columns of :attr:`RestartStudy.scores`.
SCORE_COLUMNS = ["correlation", "model", "member", "seed", "best_epoch", "task", "value"]
#: The columns of :attr:`RestartStudy.curves`.
CURVE_COLUMNS = ["correlation", "model", "member", "seed", "epoch", "task", "value"]


def paper_models(
    n_experts: int = 8, expert_units: int = 16, tower_units: int = 8, bottom_units: int = 113
) -> dict[str, Factory]:
    """The three models of the MMoE paper's synthetic study, at its sizes by default.

    Ma et al. (KDD 2018, §5.1): 8 experts, each one ReLU layer of 16 units; towers of one
    hidden layer of 8 units; a Shared-Bottom of one layer of 113 units, the width at which its
    bottom and towers have about as many weights as the experts and towers of the mixtures
    (``100·16·8 + 16·8·2 = 13056 ≈ 113·(100 + 8·2)``, biases and gates not counted).

    Returns:
        ``{"SharedBottom", "OMoE", "MMoE"}`` → ``(schema, seed) -> model`` factories, as
        :func:`restart_study` and :func:`mtlbook.analysis.runs.repeat_fits` take them.
    """
    for name, value in (
        ("n_experts", n_experts),
        ("expert_units", expert_units),
        ("tower_units", tower_units),
        ("bottom_units", bottom_units),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    moe: dict[str, Any] = {
        "n_experts": int(n_experts),
        "expert_units": (int(expert_units),),
        "tower_units": (int(tower_units),),
    }
    return {
        "SharedBottom": lambda schema, seed: SharedBottom(
            schema, bottom_units=(int(bottom_units),), tower_units=(int(tower_units),), seed=seed
        ),
        "OMoE": lambda schema, seed: OMoE(schema, seed=seed, **moe),
        "MMoE": lambda schema, seed: MMoE(schema, seed=seed, **moe),
    }


@dataclass
class RestartStudy:
    """What :func:`restart_study` returns.

    Attributes:
        scores: tidy test results, one row per correlation, model, member and task
            (``task1``, ``task2`` and ``all``, the sum of the two: the training objective),
            with columns :data:`SCORE_COLUMNS`; ``value`` is the test MSE at the member's
            best validation epoch ``best_epoch``.
        curves: the validation MSE after every epoch, same layout with ``epoch`` instead of
            ``best_epoch`` (:data:`CURVE_COLUMNS`).
        data: correlation → ``(train, valid, test)``, the fixed data of every restart.
        populations: ``(correlation, model)`` → the
            :class:`~mtlbook.training.population.PopulationResult` (``.model(member)`` gives a
            trained member, e.g. to read its gates).
        seconds: ``(correlation, model)`` → training time of the population (validation
            included).
    """

    scores: pd.DataFrame
    curves: pd.DataFrame
    data: dict[float, tuple[MultiTaskData, MultiTaskData, MultiTaskData]] = field(repr=False)
    populations: dict[tuple[float, str], PopulationResult] = field(repr=False)
    seconds: dict[tuple[float, str], float] = field(repr=False)

    def model(self, name: str, correlation: float, member: int | str = "median") -> MultiTaskModel:
        """A trained member of model ``name`` at ``correlation``.

        ``member`` is a member index, or ``"best"`` / ``"median"`` / ``"worst"``: the member
        whose *validation* loss at its best epoch is the lowest / the median / the highest
        (chosen on validation, never on test).
        """
        key = (float(correlation), name)
        if key not in self.populations:
            raise KeyError(
                f"no population for model {name!r} at correlation {correlation}; "
                f"the study has {sorted(self.populations)}"
            )
        population = self.populations[key]
        if isinstance(member, str):
            order = population.summary.sort_values(["best_score", "member"])["member"]
            picks = {"best": 0, "median": (len(order) - 1) // 2, "worst": len(order) - 1}
            if member not in picks:
                raise ValueError(
                    f"member must be an index or one of {sorted(picks)}, got {member!r}"
                )
            member = int(order.iloc[picks[member]])
        return population.model(member)


def _check_correlations(correlations: Sequence[float]) -> list[float]:
    if isinstance(correlations, int | float | np.number):
        raise TypeError(
            f"correlations must be a sequence such as [0.5, 0.9, 1.0], got the "
            f"single number {correlations!r}"
        )
    values = [float(p) for p in correlations]
    if not values:
        raise ValueError("correlations is empty")
    bad = [p for p in values if not -1.0 <= p <= 1.0]
    if bad:
        raise ValueError(f"task correlations must lie in [-1, 1], got {bad}")
    if len(set(values)) != len(values):
        raise ValueError(f"correlations {values} contain repeats")
    return values


def restart_study(
    models: Mapping[str, Factory],
    correlations: Sequence[float],
    n_restarts: int,
    *,
    n_samples: int = 10_000,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    data_seed: int = 0,
    first_seed: int = 0,
    make_data: Callable[[float], MultiTaskData] | None = None,
    **fit_kwargs,
) -> RestartStudy:
    """Train ``n_restarts`` random restarts of every model at every task correlation.

    For each correlation ``p`` the data are drawn once (``make_correlated_tasks(n_samples, p,
    seed=data_seed)``, or ``make_data(p)``) and split by ``fractions`` into train /
    validation / test. Every model then trains ``n_restarts`` members with seeds
    ``first_seed, first_seed + 1, …`` in one vectorised run
    (:func:`~mtlbook.training.population.fit_population`): a member's seed sets its initial weights
    and its order of mini-batches, nothing else. Each member is scored on the test split once,
    with the weights of its best validation epoch.

    Args:
        models: name → ``(schema, seed) -> model`` factory (e.g. :func:`paper_models`).
        correlations: task correlations ``p`` (cosine of the tasks' weight vectors).
        n_restarts: members per model and correlation.
        n_samples: samples per data set, before the split.
        fractions: train / validation / test fractions.
        data_seed: seed of the data and of the split (the same for every correlation, so that
            ``task1`` is the same data set at every correlation: only its companion changes).
        first_seed: seed of the first member.
        make_data: optional ``p -> MultiTaskData`` replacing the default generator call.
        **fit_kwargs: passed to :func:`~mtlbook.training.population.fit_population` (``epochs``,
            ``batch_size``, ``lr``, ``early_stopping``, ``progress`` …). The monitor is the
            summed validation loss of the tasks.

    Returns:
        A :class:`RestartStudy`.

    Raises:
        ValueError, TypeError: for an empty or invalid ``models``, ``correlations`` or
            ``n_restarts``, or a ``monitor`` other than ``"loss"``.
    """
    if not isinstance(models, Mapping) or not models:
        raise TypeError(
            "models must be a non-empty mapping name -> (schema, seed) -> model, "
            "e.g. paper_models()"
        )
    not_callable = [name for name, f in models.items() if not callable(f)]
    if not_callable:
        raise TypeError(f"models {not_callable} are not factories (schema, seed) -> model")
    correlations = _check_correlations(correlations)
    if (
        not isinstance(n_restarts, int | np.integer)
        or isinstance(n_restarts, bool)
        or n_restarts < 1
    ):
        raise ValueError(f"n_restarts must be a positive integer, got {n_restarts!r}")
    if fit_kwargs.get("monitor", "loss") != "loss":
        raise ValueError(
            "restart_study selects each member's epoch on the summed validation "
            f"loss; monitor={fit_kwargs['monitor']!r} is not supported"
        )
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, valid, test), got {tuple(fractions)}")
    seeds = range(int(first_seed), int(first_seed) + int(n_restarts))

    scores, curves = [], []
    data, populations, seconds = {}, {}, {}
    for p in correlations:
        full = (
            make_correlated_tasks(n_samples, p, seed=data_seed)
            if make_data is None
            else make_data(p)
        )
        if not isinstance(full, MultiTaskData):
            raise TypeError(f"make_data({p}) returned {type(full).__name__}, not MultiTaskData")
        train, valid, test = full.split(tuple(fractions), seed=data_seed)
        data[p] = (train, valid, test)
        for name, factory in models.items():

            def make_model(
                seed: int, f: Factory = factory, schema: Schema = train.schema
            ) -> MultiTaskModel:
                return f(schema, seed)

            result = fit_population(make_model, train, valid, seeds, **fit_kwargs)
            populations[(p, name)], seconds[(p, name)] = result, result.train_seconds
            test_scores = result.evaluate(test)
            loss = test_scores[test_scores["metric"].isin(["mse", "logloss"])]
            total = loss.groupby(["member", "seed"], as_index=False)["value"].sum()
            loss = pd.concat([loss, total.assign(task="all")], ignore_index=True)
            best = result.summary.set_index("member")["best_epoch"]
            scores.append(
                loss.assign(
                    correlation=p, model=name, best_epoch=loss["member"].map(best).to_numpy()
                )
            )
            h = result.history
            h = h[(h["split"] == "valid") & (h["metric"] == "loss")]
            curves.append(h.assign(correlation=p, model=name))
    scores = pd.concat(scores, ignore_index=True)[SCORE_COLUMNS]
    curves = pd.concat(curves, ignore_index=True)[CURVE_COLUMNS]
    return RestartStudy(scores, curves, data, populations, seconds)


def gate_divergence(study: RestartStudy, model: str = "MMoE", split: str = "test") -> pd.DataFrame:
    """How differently the tasks' gates mix the experts, for every restart of ``model``.

    For each correlation and member, the gates of the two tasks are read on every sample of
    ``split`` (the member's weights of its best validation epoch). Two total variation
    distances, each between 0 (the same mixture) and 1 (disjoint experts):

    * ``sample_tv``: the mean over samples of ``½ Σ_i |g_1(x)_i − g_2(x)_i|``;
    * ``mean_tv``: ``½ Σ_i |ḡ_1,i − ḡ_2,i|`` between the gates' mean weights (the two rows of
      a :func:`~mtlbook.analysis.gates.plot_gate_heatmap`).

    Args:
        study: a :func:`restart_study` result.
        model: a model of the study with one gate per task (MMoE; OMoE has one shared gate
            and would give 0 throughout).
        split: ``"train"``, ``"valid"`` or ``"test"``.

    Returns:
        Columns ``correlation, member, seed, sample_tv, mean_tv``.
    """
    parts = {"train": 0, "valid": 1, "test": 2}
    if split not in parts:
        raise ValueError(f"split must be one of {sorted(parts)}, got {split!r}")
    rows = []
    for (p, name), population in study.populations.items():
        if name != model:
            continue
        data = study.data[p][parts[split]]
        for member, seed in enumerate(population.seeds):
            net = population.model(member)
            gates: dict[str, list[torch.Tensor]] = {}
            with torch.no_grad():
                for batch in data.loader(8192, shuffle=False):
                    net(batch)
                    for record in net.gate_records():
                        gates.setdefault(record.gate, []).append(record.weights)
            weights = [torch.cat(w).double() for w in gates.values()]  # [n, experts] each
            if len(weights) != 2:
                raise ValueError(
                    f"{model} has {len(weights)} gate(s); gate_divergence needs "
                    "one gate for each of two tasks (MMoE)"
                )
            g1, g2 = weights
            rows.append(
                {
                    "correlation": p,
                    "member": member,
                    "seed": seed,
                    "sample_tv": float(0.5 * (g1 - g2).abs().sum(1).mean()),
                    "mean_tv": float(0.5 * (g1.mean(0) - g2.mean(0)).abs().sum()),
                }
            )
    if not rows:
        raise ValueError(
            f"model {model!r} is not in the study; it has "
            f"{sorted({n for _, n in study.populations})}"
        )
    return pd.DataFrame(rows)


def gate_shift(
    model: MultiTaskModel, data: MultiTaskData, signals: Mapping[str, np.ndarray], n_bins: int = 4
) -> pd.DataFrame:
    """How far each gate's mixture moves along each of several signals of the input.

    The samples are cut into ``n_bins`` equal-count bins of a signal (e.g. ``w_1ᵀx``, what
    task 1's label depends on); the result is the total variation distance ``½ Σ_i |ḡ_i(low)
    − ḡ_i(high)|`` between a gate's mean weights in the lowest and in the highest bin: 0 when
    the gate ignores the signal, up to 1 when it hands the two ends to different experts.

    Args:
        model: a gated model (:func:`~mtlbook.analysis.gates.gate_weights` reads it).
        data: the samples.
        signals: name → one value per sample.
        n_bins: number of quantile bins.

    Returns:
        Columns ``gate, signal, tv``: one row per gate and signal.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.models import MMoE
        >>> data = mb.make_correlated_tasks(500, 0.0)
        >>> z = {"w1·x": data.dense @ data.weights[0], "w2·x": data.dense @ data.weights[1]}
        >>> shift = gate_shift(MMoE(data.schema, n_experts=4, expert_units=(8,)), data, z)
        >>> list(shift.columns)
        ['gate', 'signal', 'tv']
    """
    from ..analysis.gates import gate_weights

    if not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer ≥ 2, got {n_bins!r}")
    rows = []
    for name, signal in signals.items():
        signal = np.asarray(signal, dtype=float)
        if signal.shape != (len(data),):
            raise ValueError(
                f"signal {name!r} has shape {signal.shape}; need one value per "
                f"sample ({len(data)},)"
            )
        bins = pd.qcut(signal, n_bins, labels=False, duplicates="drop")
        weights = gate_weights(model, data, by=np.asarray(bins))
        means = weights.pivot_table(
            index=["gate", "group"], columns="expert", values="mean", sort=False
        )
        for gate in dict.fromkeys(weights["gate"]):
            g = means.loc[gate]
            tv = 0.5 * float(np.abs(g.loc[g.index.min()] - g.loc[g.index.max()]).sum())
            rows.append({"gate": gate, "signal": name, "tv": tv})
    return pd.DataFrame(rows, columns=["gate", "signal", "tv"])


def _pick_task(frame: pd.DataFrame, task: str) -> pd.DataFrame:
    missing = [c for c in ("correlation", "model", "task", "value") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"expected RestartStudy.scores or .curves, column(s) {missing} are missing"
        )
    if task not in set(frame["task"]):
        raise ValueError(
            f"task {task!r} not in the results; tasks are {sorted(set(frame['task']))}"
        )
    return frame[frame["task"] == task]


def restart_summary(
    scores: pd.DataFrame, task: str = "task1", *, bad_ratio: float = 1.5, confidence: float = 0.95
) -> pd.DataFrame:
    """The test losses of the restarts per correlation and model, in one row each.

    Args:
        scores: :attr:`RestartStudy.scores`.
        task: ``"task1"``, ``"task2"`` or ``"all"`` (their sum).
        bad_ratio: a run is *bad* when its loss exceeds ``bad_ratio ×`` the lowest median of
            the models at that correlation (the typical loss of the best-behaved model).
        confidence: level of the Student-t interval of the mean.

    Returns:
        Columns ``correlation, model, n, mean, lo, hi`` (interval of the mean over restarts),
        ``std``, ``median``, ``min``, ``q05``, ``q95``, ``range90`` (``q95 − q05``),
        ``bad_threshold`` and ``bad_share`` (fraction of bad runs).
    """
    if not bad_ratio > 1:
        raise ValueError(f"bad_ratio must exceed 1, got {bad_ratio!r}")
    frame = _pick_task(scores, task)
    keys = ["correlation", "model"]
    out = mean_interval(frame, keys, confidence=confidence)
    grouped = frame.groupby(keys, sort=False)["value"]
    stats = grouped.agg(
        median="median", min="min", q05=lambda v: v.quantile(0.05), q95=lambda v: v.quantile(0.95)
    )
    out = out.merge(stats.reset_index(), on=keys)
    out["range90"] = out["q95"] - out["q05"]
    out["bad_threshold"] = bad_ratio * out.groupby("correlation")["median"].transform("min")
    threshold = frame.merge(out[[*keys, "bad_threshold"]], on=keys)
    bad = (
        (threshold["value"] > threshold["bad_threshold"])
        .groupby([threshold[k] for k in keys])
        .mean()
        .rename("bad_share")
    )
    out = out.merge(bad.reset_index(), on=keys)
    columns = [
        *keys,
        "n",
        "mean",
        "lo",
        "hi",
        "std",
        "median",
        "min",
        "q05",
        "q95",
        "range90",
        "bad_threshold",
        "bad_share",
    ]
    return out[columns]


def _difference(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """Mean of ``a`` minus mean of ``b`` and its Welch (unequal variances) t interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a.mean() - b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return float(diff), float(diff), float(diff)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = sps.t.ppf(0.5 + confidence / 2, dof) * se
    return float(diff), float(diff - half), float(diff + half)


def _agrees(lo: float, hi: float, expected: str) -> str:
    """How the interval ``[lo, hi]`` of a difference answers a claim of the paper, from its
    :func:`~mtlbook.analysis.intervals.verdict`: ``expected`` is ``"positive"`` (the paper
    claims a difference) or ``"zero"`` (it claims none)."""
    found = verdict(lo, hi)
    if expected == "zero":
        return "consistent" if found == "inconclusive" else "no"
    return {"positive": "yes", "negative": "no (opposite)", "inconclusive": "unclear"}[found]


def compare_with_paper(
    scores: pd.DataFrame,
    task: str = "task1",
    *,
    single_gate: str = "OMoE",
    multi_gate: str = "MMoE",
    shared_bottom: str = "SharedBottom",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """The MMoE paper's claims about its synthetic study, each checked on our restarts.

    Every row is one testable statement with our number, its interval where one applies,
    and a verdict computed from them: ``"yes"``, ``"no"``, ``"no (opposite)"``, ``"unclear"``
    when the interval includes 0, or, for a claim of *no* difference, ``"consistent"`` when
    it does. Differences of means use Welch's t
    interval over the restarts (the restarts are independent; the data are fixed).

    * Fig. 4 (1): each model's mean loss is lower at the highest correlation than at the
      lowest (difference lowest − highest > 0).
    * Fig. 4 (2): ``multi_gate`` is the least sensitive: the size of its change is smaller
      than each other model's (normal interval of the difference of the two sizes).
    * Fig. 4 (3): at every correlation both mixtures beat Shared-Bottom on average.
    * Fig. 4 (2): at the highest correlation ``single_gate`` ≈ ``multi_gate`` (interval of
      the difference includes 0), while at the lowest ``multi_gate`` is better.
    * Fig. 5: Shared-Bottom's spread (standard deviation) exceeds both mixtures' at every
      correlation; ``single_gate``'s spread grows as the correlation falls, more than
      ``multi_gate``'s.

    Args:
        scores: :attr:`RestartStudy.scores` with the three models.
        task: ``"task1"``, ``"task2"`` or ``"all"``.

    Returns:
        Columns ``figure, claim, value, lo, hi, verdict`` (``lo``/``hi`` NaN where no
        interval applies).
    """
    frame = _pick_task(scores, task)
    models = set(frame["model"])
    missing = {shared_bottom, single_gate, multi_gate} - models
    if missing:
        raise ValueError(
            f"compare_with_paper needs models {sorted(missing)}; the scores have {sorted(models)}"
        )
    correlations = sorted(set(frame["correlation"]))
    if len(correlations) < 2:
        raise ValueError("compare_with_paper needs at least two correlations")
    low, high = correlations[0], correlations[-1]

    def values(model: str, p: float) -> np.ndarray:
        return frame.loc[
            (frame["model"] == model) & (frame["correlation"] == p), "value"
        ].to_numpy()

    rows = []
    drops = {}
    for model in (shared_bottom, single_gate, multi_gate):
        a, b = values(model, low), values(model, high)
        diff, lo, hi = _difference(a, b, confidence)
        drops[model] = (diff, a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        rows.append(
            (
                "Fig. 4",
                f"{model}: mean loss at p={low:g} minus at p={high:g} > 0",
                diff,
                lo,
                hi,
                _agrees(lo, hi, "positive"),
            )
        )
    z = sps.norm.ppf(0.5 + confidence / 2)
    for other in (single_gate, shared_bottom):
        value = abs(drops[other][0]) - abs(drops[multi_gate][0])
        half = z * np.sqrt(drops[other][1] + drops[multi_gate][1])
        rows.append(
            (
                "Fig. 4",
                f"{multi_gate} less sensitive to p than {other} "
                f"(|change of {other}| − |change of {multi_gate}| > 0)",
                value,
                value - half,
                value + half,
                _agrees(value - half, value + half, "positive"),
            )
        )
    for p in correlations:
        for model in (single_gate, multi_gate):
            diff, lo, hi = _difference(values(shared_bottom, p), values(model, p), confidence)
            rows.append(
                (
                    "Fig. 4",
                    f"p={p:g}: {model} beats {shared_bottom} (mean {shared_bottom} − {model} > 0)",
                    diff,
                    lo,
                    hi,
                    _agrees(lo, hi, "positive"),
                )
            )
    diff, lo, hi = _difference(values(single_gate, high), values(multi_gate, high), confidence)
    rows.append(
        (
            "Fig. 4",
            f"p={high:g}: {single_gate} ≈ {multi_gate} (difference ≈ 0)",
            diff,
            lo,
            hi,
            _agrees(lo, hi, "zero"),
        )
    )
    diff, lo, hi = _difference(values(single_gate, low), values(multi_gate, low), confidence)
    rows.append(
        (
            "Fig. 4",
            f"p={low:g}: {multi_gate} beats {single_gate} (mean {single_gate} − {multi_gate} > 0)",
            diff,
            lo,
            hi,
            _agrees(lo, hi, "positive"),
        )
    )
    for p in correlations:
        sd = {m: values(m, p).std(ddof=1) for m in (shared_bottom, single_gate, multi_gate)}
        wider = sd[shared_bottom] > max(sd[single_gate], sd[multi_gate])
        rows.append(
            (
                "Fig. 5",
                f"p={p:g}: std of {shared_bottom} / largest std of the mixtures > 1",
                sd[shared_bottom] / max(sd[single_gate], sd[multi_gate]),
                np.nan,
                np.nan,
                "yes" if wider else "no",
            )
        )
    growth = {
        m: values(m, low).std(ddof=1) / values(m, high).std(ddof=1)
        for m in (single_gate, multi_gate)
    }
    rows.append(
        (
            "Fig. 5",
            f"{single_gate}: std at p={low:g} / std at p={high:g} > 1",
            growth[single_gate],
            np.nan,
            np.nan,
            "yes" if growth[single_gate] > 1 else "no",
        )
    )
    rows.append(
        (
            "Fig. 5",
            f"{single_gate}'s spread grows more than {multi_gate}'s (ratio of the two ratios > 1)",
            growth[single_gate] / growth[multi_gate],
            np.nan,
            np.nan,
            "yes" if growth[single_gate] > growth[multi_gate] else "no",
        )
    )
    return pd.DataFrame(rows, columns=["figure", "claim", "value", "lo", "hi", "verdict"])


#: How :func:`zh_claims` words :func:`compare_with_paper`'s verdicts for the reader.
VERDICTS_ZH: dict[str, str] = {
    "yes": "是",
    "no": "否",
    "no (opposite)": "否（方向相反）",
    "unclear": "无定论",
    "consistent": "一致",
}

_NUMBER = r"(-?[0-9.e+-]+)"
_CLAIMS_ZH: list[tuple[str, str]] = [
    (
        rf"^(\w+): mean loss at p={_NUMBER} minus at p={_NUMBER} > 0$",
        r"\1：p=\2 时的平均损失减去 p=\3 时的 > 0",
    ),
    (
        r"^(\w+) less sensitive to p than (\w+) \(\|change of \w+\| − \|change of \w+\| > 0\)$",
        r"\1 对 p 的敏感程度小于 \2（|\2 的变化| − |\1 的变化| > 0）",
    ),
    (
        rf"^p={_NUMBER}: (\w+) beats (\w+) \(mean \w+ − \w+ > 0\)$",
        r"p=\1：\2 好于 \3（\3 的均值 − \2 的均值 > 0）",
    ),
    (rf"^p={_NUMBER}: (\w+) ≈ (\w+) \(difference ≈ 0\)$", r"p=\1：\2 ≈ \3（两者之差 ≈ 0）"),
    (
        rf"^p={_NUMBER}: std of (\w+) / largest std of the mixtures > 1$",
        r"p=\1：\2 的标准差 / 混合专家模型中较大的标准差 > 1",
    ),
    (
        rf"^(\w+): std at p={_NUMBER} / std at p={_NUMBER} > 1$",
        r"\1：p=\2 时的标准差 / p=\3 时的标准差 > 1",
    ),
    (
        r"^(\w+)'s spread grows more than (\w+)'s \(ratio of the two ratios > 1\)$",
        r"\1 的分布比 \2 的变宽得更多（两个比值之比 > 1）",
    ),
]


def zh_claims(claims: pd.DataFrame) -> pd.DataFrame:
    """A :func:`compare_with_paper` table (or one merged from two of them) for the reader:
    each claim as a Chinese sentence, Chinese verdicts (:data:`VERDICTS_ZH`) in every
    ``verdict…`` column, Chinese column names and ``图 4`` for ``Fig. 4``.

    A claim worded otherwise than :func:`compare_with_paper` words it raises a ``ValueError``,
    so that no English sentence reaches the page unnoticed.
    """

    def sentence(text: str) -> str:
        for pattern, chinese in _CLAIMS_ZH:
            if re.fullmatch(pattern, text):
                return re.sub(pattern, chinese, text)
        raise ValueError(f"zh_claims has no Chinese wording for the claim {text!r}")

    out = claims.copy()
    if "claim" in out:
        out["claim"] = out["claim"].map(sentence)
    if "figure" in out:
        out["figure"] = out["figure"].str.replace("Fig. ", "图 ", regex=False)
    stems = {
        "figure": "论文的图",
        "claim": "论文的说法",
        "value": "数值",
        "lo": "下限",
        "hi": "上限",
        "verdict": "判断",
    }
    names = {}
    for column in map(str, out.columns):
        stem = next((k for k in stems if column.startswith(k)), None)
        if stem is not None:  # "verdict（现场）" → "判断（现场）"
            names[column] = stems[stem] + column[len(stem) :]
        if stem == "verdict":
            out[column] = out[column].map(lambda v: VERDICTS_ZH.get(v, v))
    return out.rename(columns=names)


def _orders(frame: pd.DataFrame) -> tuple[list[str], list[float]]:
    return list(dict.fromkeys(frame["model"])), sorted(set(frame["correlation"]))


def plot_restart_curves(
    curves: pd.DataFrame, task: str = "task1", confidence: float = 0.95
) -> plt.Figure:
    """Validation loss over epochs, the mean over restarts with its interval: one panel per
    model, one line per correlation (how the paper's Fig. 4 is laid out).

    Args:
        curves: :attr:`RestartStudy.curves`.
        task: ``"task1"``, ``"task2"`` or ``"all"``.
        confidence: level of the shaded Student-t interval of the mean.
    """
    frame = _pick_task(curves, task)
    models, correlations = _orders(frame)
    stats = mean_interval(frame, ["model", "correlation", "epoch"], confidence=confidence)
    palette = dict(zip(correlations, sns.color_palette("viridis", len(correlations)), strict=True))
    fig, axes = plt.subplots(
        1, len(models), figsize=(3.6 * len(models) + 0.8, 3.4), sharey=True, squeeze=False
    )
    for ax, model in zip(axes[0], models, strict=True):
        for p in correlations:
            s = stats[(stats["model"] == model) & (stats["correlation"] == p)]
            s = s.sort_values("epoch")
            ax.plot(s["epoch"], s["mean"], color=palette[p], label=f"p = {p:g}")
            ax.fill_between(s["epoch"], s["lo"], s["hi"], color=palette[p], alpha=0.25, linewidth=0)
        ax.set(title=model, xlabel="轮次", yscale="log")
    axes[0][0].set_ylabel(
        f"{zh(task)} 的验证集 MSE" if task != "all" else "验证集损失（两个任务之和）"
    )
    axes[0][-1].legend(title="任务相关度", fontsize=8)
    fig.tight_layout()
    return fig


def plot_restart_distributions(
    scores: pd.DataFrame, task: str = "task1", kind: str = "ecdf", bad_ratio: float = 1.5
) -> plt.Figure:
    """The distribution of the restarts' test losses, one panel per correlation.

    ``kind="ecdf"`` overlays the models' empirical distribution functions; ``"hist"`` draws
    a grid of histograms, models × correlations, as the paper's Fig. 5 does. The x axis is
    logarithmic (a few runs fail by an order of magnitude); the dotted line marks the
    :func:`restart_summary` threshold of a bad run.
    """
    if kind not in ("ecdf", "hist"):
        raise ValueError(f"kind must be 'ecdf' or 'hist', got {kind!r}")
    frame = _pick_task(scores, task)
    models, correlations = _orders(frame)
    summary = restart_summary(scores, task, bad_ratio=bad_ratio)
    palette = dict(zip(models, sns.color_palette("colorblind", len(models)), strict=True))
    lo, hi = frame["value"].min() * 0.9, frame["value"].max() * 1.1
    label = f"{zh(task)} 的测试集 MSE" if task != "all" else "测试集损失（两个任务之和）"
    rows = 1 if kind == "ecdf" else len(models)
    height = 3.2 if kind == "ecdf" else 1.7 * rows + 0.9
    fig, axes = plt.subplots(
        rows,
        len(correlations),
        figsize=(3.6 * len(correlations) + 0.6, height),
        sharex=True,
        sharey=True if kind == "ecdf" else "row",
        squeeze=False,
    )
    bins = np.geomspace(lo, hi, 40)
    for j, p in enumerate(correlations):
        at_p = frame[frame["correlation"] == p]
        threshold = summary.loc[summary["correlation"] == p, "bad_threshold"].iloc[0]
        for i, model in enumerate(models):
            ax = axes[0 if kind == "ecdf" else i][j]
            values = at_p.loc[at_p["model"] == model, "value"]
            if kind == "ecdf":
                sns.ecdfplot(x=values, ax=ax, color=palette[model], label=model)
            else:
                ax.hist(values, bins=bins, color=palette[model], alpha=0.85)
                if j == 0:
                    ax.set_ylabel(f"{model}\n次数")
            ax.axvline(threshold, color="grey", linestyle=":", linewidth=1)
            ax.set_xscale("log")
            if i == 0 or kind == "ecdf":
                ax.set_title(f"p = {p:g}")
        axes[-1][j].set_xlabel(label)
    if kind == "ecdf":
        axes[0][0].set_ylabel("损失 ≤ x 的重启比例")
        axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------- architecture diagrams
_MOE_HEIGHT = 5.6  # data units of one diagram's height


def _moe_width(n_tasks: int) -> float:
    """Room for the experts and ⌈n_tasks / 2⌉ gates on each side of them."""
    return 7.4 + 2.6 * ((n_tasks + 1) // 2 - 1)


def _draw_moe(ax: plt.Axes, x0: float, tasks: Sequence[str], one_gate: bool) -> None:
    """One OMoE (``one_gate``) or MMoE diagram whose left edge is at ``x0``: input → experts
    and gates → one weighted sum per gate → a tower and a prediction per task."""
    width = _moe_width(len(tasks))
    c = x0 + width / 2
    y_in, y_exp, y_sum, y_tower, y_out = 0.4, 1.55, 2.85, 3.9, 4.75
    box(ax, c, y_in, width - 0.5, 0.45, "输入特征 x（嵌入 + 稠密特征）", "input")
    # Three of the n experts are drawn (1, 2 and n), an ellipsis between them.
    experts = {"1": c - 1.55, "2": c - 0.45, "n": c + 1.55}
    for i, x in experts.items():
        box(ax, x, y_exp, 0.95, 0.5, f"专家 {i}\n$E_{i}(x)$")
        arrow(ax, x, y_in + 0.23, x, y_exp - 0.27)
    ax.text(c + 0.55, y_exp, "…", ha="center", va="center", fontsize=14)
    # The gates, half of them left of the experts, half right.
    gate_names = ["共享"] if one_gate else list(tasks)
    n_left = (len(gate_names) + 1) // 2
    gate_x = [c - 2.85 - 1.3 * (n_left - 1 - i) for i in range(n_left)]
    gate_x += [c + 2.85 + 1.3 * i for i in range(len(gate_names) - n_left)]
    # One weighted sum per gate, above the tasks it serves.
    spread = min(2.8 * (len(tasks) - 1), 1.6 * (len(tasks) - 1) + 1.2)
    task_x = [c - spread / 2 + spread * j / max(1, len(tasks) - 1) for j in range(len(tasks))]
    sum_x = [c] if one_gate else task_x
    for k, (gx, sx, name) in enumerate(zip(gate_x, sum_x, gate_names, strict=True)):
        symbol = "g(x)" if one_gate else f"g_{k + 1}(x)"
        box(ax, gx, y_exp, 1.2, 0.62, f"门控（{name}）\n${symbol}$", "gate", fontsize=9)
        arrow(ax, gx, y_in + 0.23, gx, y_exp - 0.33)
        mixed = "f(x)" if one_gate else f"f_{k + 1}(x)"
        box(ax, sx, y_sum, 1.2, 0.55, f"加权求和\n${mixed}$", "op", fontsize=9)
        side = -0.6 if gx < sx else 0.6
        arrow(ax, gx, y_exp + 0.33, sx + side, y_sum, dashed=True)
        for ex in experts.values():
            arrow(ax, ex, y_exp + 0.27, sx, y_sum - 0.29, color="#777777")
    for j, (tx, task) in enumerate(zip(task_x, tasks, strict=True)):
        box(ax, tx, y_tower, 1.35, 0.5, f"任务塔：{task}", "task" if j % 2 == 0 else "task2")
        box(ax, tx, y_out, 1.35, 0.4, f"ŷ（{task}）", "output")
        arrow(ax, sum_x[0 if one_gate else j], y_sum + 0.29, tx, y_tower - 0.27)
        arrow(ax, tx, y_tower + 0.27, tx, y_out - 0.22)
    title = "OMoE：所有任务共用一个门控" if one_gate else "MMoE：每个任务一个门控"
    ax.text(c, 5.35, title, ha="center", va="center", fontsize=11)


def _moe_figure(tasks: Sequence[str], kinds: Sequence[bool]) -> Figure:
    tasks = [str(t) for t in tasks]
    if not tasks:
        raise ValueError("tasks is empty: the diagram needs at least one task")
    width = _moe_width(len(tasks))
    gap = 0.6
    total = len(kinds) * width + (len(kinds) - 1) * gap
    fig, ax = canvas(total, _MOE_HEIGHT, scale=0.8 if len(kinds) > 1 else 0.9)
    for i, one_gate in enumerate(kinds):
        _draw_moe(ax, i * (width + gap), tasks, one_gate)
    ax.text(
        total / 2,
        -0.15,
        "实线：专家的输出送往每个加权求和；虚线：门控给出的权重",
        ha="center",
        va="center",
        fontsize=9,
        color="#555555",
    )
    ax.set_ylim(-0.4, _MOE_HEIGHT)
    return finish(fig)


def plot_omoe_diagram(tasks: Sequence[str] = ("任务 1", "任务 2")) -> Figure:
    """OMoE: input → ``n`` experts and one gate → one weighted sum → a tower per task."""
    return _moe_figure(tasks, [True])


def plot_mmoe_diagram(tasks: Sequence[str] = ("任务 1", "任务 2")) -> Figure:
    """MMoE: input → ``n`` experts and one gate per task → one weighted sum per task → towers."""
    return _moe_figure(tasks, [False])


def plot_moe_diagrams(tasks: Sequence[str] = ("任务 1", "任务 2")) -> Figure:
    """OMoE (left) and MMoE (right) side by side: the same experts, one gate or one per task."""
    return _moe_figure(tasks, [True, False])
