"""Looking inside trained models: shared representations, linear probes, input-gradient importance.

Chapter 12.2 of the book asks *how* sharing helps, which needs measurements of a model beyond
its test error:

* :func:`representation` — the shared representation a model computes for every sample (the
  tensor every task's tower reads, :meth:`~mtlbook.models.MultiTaskModel.shared_representation`);
* :func:`linear_probe` — how well a *frozen* representation serves a task by a linear model
  fitted on top (ridge regression with its penalty chosen by cross-validation on the probe's
  training data only; R² on held-out data), the usual test of what a representation encodes;
* :func:`input_gradient_importance` — the mean absolute input gradient
  ``E|∂ŷ_k/∂x_j|`` of a task's prediction, a simple saliency measure of which inputs a model
  relies on, and :func:`importance_share`, the fraction of it on a given set of inputs;
* :func:`population_importance` and :func:`population_probes` — the two measurements above
  for every member of several populations (or lists of models) at once, as
  :func:`mtlbook.analysis.runs.population_scores` trains them (the experiments of chapter 12.2
  are built from it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..data import Batch, MultiTaskData
from ..models.base import MultiTaskModel

__all__ = [
    "importance_share",
    "input_gradient_importance",
    "linear_probe",
    "population_importance",
    "population_probes",
    "representation",
]

_ALPHAS = np.logspace(-3, 4, 15)


def _check_model(model: MultiTaskModel) -> None:
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook MultiTaskModel, got {type(model).__name__}")


@torch.no_grad()
def representation(
    model: MultiTaskModel, data: MultiTaskData, batch_size: int = 8192
) -> np.ndarray:
    """The shared representation of every sample of ``data``: ``[n, units]`` float array.

    Runs the model (in eval mode) over ``data`` and collects
    :meth:`~mtlbook.models.MultiTaskModel.shared_representation` after each forward pass.

    Raises:
        ValueError: if the model has no single shared representation (e.g. ``SingleTask``,
            which shares nothing, or the gated mixtures, whose every task reads its own mix).

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.models import SharedBottom
        >>> from mtlbook.book.ch12_2 import representation
        >>> data = mb.make_correlated_tasks(400, 0.5, n_features=8, seed=0)
        >>> model = SharedBottom(data.schema, bottom_units=(32, 16), seed=0)
        >>> representation(model, data).shape  # [len(data), bottom_units[-1]]
        (400, 16)
    """
    _check_model(model)
    model._check_data(data)
    was_training = model.training
    model.eval()
    parts = []
    try:
        for batch in data.loader(batch_size, shuffle=False):
            model(batch)
            h = model.shared_representation()
            if h is None:
                raise ValueError(
                    f"{type(model).__name__} has no single shared representation "
                    "(shared_representation() is None); use a model such as SharedBottom"
                )
            parts.append(h.detach().float().cpu().numpy())  # [batch, units]
    finally:
        model.train(was_training)
    return np.concatenate(parts)


def linear_probe(
    features_train: np.ndarray, y_train: np.ndarray, features_test: np.ndarray, y_test: np.ndarray
) -> float | np.ndarray:
    """R² on held-out data of a ridge regression fitted on frozen features.

    The features are standardised and the ridge penalty is chosen by efficient leave-one-out
    cross-validation on the training part only (``sklearn.linear_model.RidgeCV``, one penalty
    per target); the test part is used once, for the returned score. Use it on
    :func:`representation` outputs (or on raw inputs, as a reference).

    Args:
        features_train, features_test: ``[n, units]`` arrays.
        y_train, y_test: ``[n]`` regression targets, or ``[n, targets]`` to probe several
            targets at once (each gets its own penalty).

    Returns:
        float or numpy.ndarray:
        The R² (coefficient of determination) on the test part: 1 is perfect, 0 is what a
        constant prediction of the test mean scores, negative is worse than that. A float for
        1-D targets, a ``[targets]`` array for 2-D ones.

    Example:
        >>> import mtlbook as mb
        >>> import numpy as np
        >>> from mtlbook.data.mechanisms import make_task_family
        >>> from mtlbook.models import SharedBottom
        >>> from mtlbook.book.ch12_2 import linear_probe, representation
        >>> data = make_task_family(600, n_tasks=3, seed=0)
        >>> train, valid, test = data.split((0.5, 0.25, 0.25), seed=0)
        >>> seen = ["task1", "task2"]  # the model's tasks; task3 is only probed for
        >>> m = mb.fit(SharedBottom(train.select_tasks(seen).schema, seed=0),
        ...            train.select_tasks(seen), valid.select_tasks(seen), epochs=3,
        ...            progress=False).model
        >>> h_train = representation(m, train.select_tasks(seen))
        >>> h_test = representation(m, test.select_tasks(seen))
        >>> score = linear_probe(h_train, train.labels["task3"], h_test, test.truth["task3"])
        >>> isinstance(score, float)
        True
        >>> both = linear_probe(h_train, np.column_stack([train.labels["task1"],
        ...                                               train.labels["task3"]]),
        ...                     h_test, test.truth[["task1", "task3"]])
        >>> both.shape  # one R² per target
        (2,)
    """
    features_train, features_test = np.asarray(features_train), np.asarray(features_test)
    y_train, y_test = np.asarray(y_train, dtype=float), np.asarray(y_test, dtype=float)
    if y_train.ndim != y_test.ndim or y_train.ndim not in (1, 2):
        raise ValueError(
            f"y_train and y_test must both be 1-D or both 2-D, got shapes "
            f"{y_train.shape} and {y_test.shape}"
        )
    if y_train.ndim == 2 and y_train.shape[1] != y_test.shape[1]:
        raise ValueError(f"y_train has {y_train.shape[1]} targets, y_test {y_test.shape[1]}")
    for name, f, y in (("train", features_train, y_train), ("test", features_test, y_test)):
        if f.ndim != 2:
            raise ValueError(f"features_{name} must be 2-D [n, units], got shape {f.shape}")
        if len(f) != len(y):
            raise ValueError(f"features_{name} has {len(f)} rows but y_{name} has {len(y)}")
        if len(f) < 2:
            raise ValueError(f"the {name} part needs at least 2 samples, got {len(f)}")
    if features_train.shape[1] != features_test.shape[1]:
        raise ValueError(
            f"train features have {features_train.shape[1]} columns, test "
            f"features {features_test.shape[1]}"
        )
    probe = make_pipeline(
        StandardScaler(), RidgeCV(alphas=_ALPHAS, alpha_per_target=y_train.ndim == 2)
    )
    probe.fit(features_train, y_train)
    if y_train.ndim == 1:
        return float(r2_score(y_test, probe.predict(features_test)))
    return r2_score(y_test, probe.predict(features_test), multioutput="raw_values")


def input_gradient_importance(
    model: MultiTaskModel, data: MultiTaskData, task: str, batch_size: int = 4096
) -> pd.Series:
    """Mean absolute input gradient ``E|∂ŷ_task/∂x_j|`` of every dense input ``x_j``.

    A simple saliency measure: how strongly the task's prediction (the raw output: the value
    for a regression task, the logit for a binary one) moves when one input moves, averaged over
    the samples of ``data``. Inputs the model ignores get (close to) zero.

    Args:
        model: a trained model.
        data: the samples to average over (use held-out data); must have dense features.
        task: the task whose prediction is differentiated.

    Returns:
        A Series indexed by the dense feature names.

    Example:
        >>> from mtlbook.data.mechanisms import make_sparse_relevance_tasks
        >>> from mtlbook.models import SharedBottom
        >>> from mtlbook.book.ch12_2 import importance_share, input_gradient_importance
        >>> data = make_sparse_relevance_tasks(400, n_relevant=4, n_irrelevant=12, seed=0)
        >>> imp = input_gradient_importance(SharedBottom(data.schema, seed=0), data, "task1")
        >>> len(imp), imp.index[:3].tolist()  # one value per dense input
        (16, ['x0', 'x1', 'x2'])
        >>> 0.0 < importance_share(imp, data.meta["relevant"]) < 1.0  # on x0 … x3
        True
    """
    _check_model(model)
    model._check_data(data)
    data.schema.task(task)
    if data.dense is None:
        raise ValueError(
            "input_gradient_importance needs dense features; this data set has "
            "only categorical ones"
        )
    was_training = model.training
    model.eval()
    total = np.zeros(data.schema.n_dense)
    try:
        for batch in data.loader(batch_size, shuffle=False):
            assert batch.dense is not None  # the data have dense features (checked above)
            dense = batch.dense.clone().requires_grad_(True)  # [batch, n_dense]
            out = model(Batch(dense, batch.categorical))[task]  # [batch]
            (grad,) = torch.autograd.grad(out.sum(), dense)  # rows are per-sample gradients
            total += grad.abs().sum(0).double().numpy()
    finally:
        model.train(was_training)
    return pd.Series(total / len(data), index=list(data.schema.dense), name=task)


def importance_share(
    importance: pd.Series | np.ndarray, relevant: Sequence[int] | np.ndarray
) -> float:
    """The fraction of the total importance that falls on the ``relevant`` inputs (positions).

    With ``r`` relevant inputs out of ``d``, a model that spreads its importance evenly scores
    ``r / d``; one that ignores every irrelevant input scores 1.

    Example:
        >>> from mtlbook.book.ch12_2 import importance_share
        >>> importance_share([1.0, 1.0, 1.0, 1.0], relevant=[0])  # spread evenly: 1 / 4
        0.25
        >>> importance_share([3.0, 1.0, 0.0, 0.0], relevant=[0, 1])  # only on the relevant
        1.0
    """
    values = np.asarray(importance, dtype=float).reshape(-1)
    relevant = np.asarray(relevant, dtype=int).reshape(-1)
    if len(relevant) == 0:
        raise ValueError("relevant is empty")
    if relevant.min() < 0 or relevant.max() >= len(values):
        raise ValueError(f"relevant positions must lie in 0..{len(values) - 1}, got {relevant}")
    if (values < 0).any():
        raise ValueError("importance values must be non-negative")
    total = values.sum()
    if total == 0:
        raise ValueError("the importance is zero everywhere; the share is undefined")
    return float(values[np.unique(relevant)].sum() / total)


def _members(models) -> list[tuple[int, MultiTaskModel]]:
    """``(seed, model)`` pairs of a PopulationResult or of a sequence of models."""
    from ..training.population import PopulationResult

    if isinstance(models, PopulationResult):
        return [(seed, models.model(k)) for k, seed in enumerate(models.seeds)]
    if isinstance(models, MultiTaskModel):
        return [(0, models)]
    members = list(models)
    for m in members:
        _check_model(m)
    return list(enumerate(members))


def population_importance(
    populations: Mapping[str, object], data: MultiTaskData, task: str
) -> pd.DataFrame:
    """:func:`input_gradient_importance` of ``task`` for every member of every population.

    Args:
        populations: name → :class:`~mtlbook.training.population.PopulationResult`, or → a list of
            models (e.g. untrained ones, as a reference).
        data: the samples to average over (restricted to each model's tasks here).
        task: the task whose prediction is differentiated (every model must have it).

    Returns:
        A DataFrame indexed by ``(model, seed)`` with one column per dense feature; apply
        :func:`importance_share` row by row to get each member's share on given inputs.

    Example:
        >>> from mtlbook.data.mechanisms import make_sparse_relevance_tasks
        >>> from mtlbook.models import SharedBottom
        >>> from mtlbook.book.ch12_2 import importance_share, population_importance
        >>> data = make_sparse_relevance_tasks(400, n_relevant=4, n_irrelevant=12, seed=0)
        >>> untrained = [SharedBottom(data.schema, seed=s) for s in range(3)]
        >>> imp = population_importance({"untrained": untrained}, data, "task1")
        >>> imp.shape  # (model, seed) × dense input
        (3, 16)
        >>> shares = imp.apply(importance_share, axis=1, relevant=data.meta["relevant"])
        >>> shares.index.tolist()
        [('untrained', 0), ('untrained', 1), ('untrained', 2)]
    """
    rows, index = [], []
    for name, models in populations.items():
        for seed, model in _members(models):
            if task not in model.task_names:
                raise ValueError(
                    f"model {name!r} has no task {task!r}; its tasks are {list(model.task_names)}"
                )
            rows.append(input_gradient_importance(model, data.select_tasks(model.task_names), task))
            index.append((name, seed))
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["model", "seed"]))


def population_probes(
    populations: Mapping[str, object],
    probe_train: MultiTaskData,
    test: MultiTaskData,
    targets: Sequence[str],
) -> pd.DataFrame:
    """:func:`linear_probe` of the frozen shared representation of every member, per target.

    The probe is fitted on ``probe_train``'s (noisy) labels of each target and scored on
    ``test``'s noise-free truth when it has a column for the target (else on its labels).

    Args:
        populations: name → :class:`~mtlbook.training.population.PopulationResult`, or → a list of
            models (e.g. untrained ones, as a floor).
        probe_train, test: data with the same features; they must contain the ``targets`` as
            tasks, which the models need not have been trained on (that is the point).
        targets: task names to probe for.

    Returns:
        A tidy DataFrame with columns ``model, seed, target, r2``.

    Example:
        >>> import mtlbook as mb
        >>> from mtlbook.data.mechanisms import make_task_family
        >>> from mtlbook.models import SharedBottom
        >>> from mtlbook.book.ch12_2 import population_probes
        >>> data = make_task_family(600, n_tasks=4, seed=0)
        >>> train, valid, test = data.split((0.5, 0.25, 0.25), seed=0)
        >>> seen = ["task1", "task2"]  # the models' tasks; task3 and task4 are only probed for
        >>> schema = train.select_tasks(seen).schema
        >>> trained = [mb.fit(SharedBottom(schema, seed=s), train.select_tasks(seen),
        ...                   valid.select_tasks(seen), epochs=3, progress=False).model
        ...            for s in range(2)]
        >>> untrained = [SharedBottom(schema, seed=s) for s in range(2)]
        >>> probes = population_probes({"trained": trained, "random": untrained}, train, test,
        ...                            targets=["task3", "task4"])
        >>> list(probes.columns), len(probes)  # 2 groups × 2 seeds × 2 targets
        (['model', 'seed', 'target', 'r2'], 8)
    """
    targets = list(targets)
    if not targets:
        raise ValueError("targets is empty: name at least one task to probe for")
    for name in targets:
        probe_train.schema.task(name)
        test.schema.task(name)
    y_train = np.column_stack([probe_train.labels[t] for t in targets])  # [n, targets]
    truth = test.truth if test.truth is not None else pd.DataFrame()
    y_test = np.column_stack([truth[t] if t in truth else test.labels[t] for t in targets])
    rows = []
    for name, models in populations.items():
        for seed, model in _members(models):
            tasks = model.task_names
            features_train = representation(model, probe_train.select_tasks(tasks))
            features_test = representation(model, test.select_tasks(tasks))
            scores = linear_probe(features_train, y_train, features_test, y_test)
            assert isinstance(scores, np.ndarray)  # 2-D targets: one R² per target
            rows += [(name, seed, t, float(v)) for t, v in zip(targets, scores, strict=True)]
    return pd.DataFrame(rows, columns=["model", "seed", "target", "r2"])
