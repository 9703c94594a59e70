"""Synthetic tasks that isolate one mechanism of multi-task learning each.

Ruder (2017, §3), following Caruana (1997, §2), names the mechanisms by which learning related
tasks together can help a task. Each generator below builds regression tasks in which exactly one
of them has something to work with, so that chapter 12.2 of the book can test it in a
controlled experiment:

* :func:`make_noisy_copies` — **implicit data augmentation**: several tasks share one target
  function ``f`` and differ only in independent label noise;
* :func:`make_sparse_relevance_tasks` — **attention focusing**: a few relevant inputs among
  many irrelevant ones; the tasks are *different* functions of the *same* relevant inputs;
* :func:`make_eavesdropping_tasks` — **eavesdropping**: a hidden quantity ``G`` that is the
  whole target of task A but only a weak (or interaction) term of task B;
* :func:`make_task_family` — **representation bias** (Baxter, 2000): many tasks that are
  different linear read-outs of one shared non-linear feature map, so that a representation
  learned on some of them can be tested on tasks it never saw.

Every target is built from small random "teacher" networks ``tanh(x W + b) a``, standardised to
unit variance on a fixed reference sample, so the noise levels are on a known scale. All
random quantities (teacher weights, inputs, noise) come from ``seed``: the same seed always
gives the same data. ``data.truth`` holds the noise-free target of every task in a column named
after the task (plus generator-specific columns), and :func:`clean_targets` turns a data set
into one whose labels *are* those noise-free targets — for scoring against the truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._core import TaskSpec
from ._multitask import MultiTaskData

__all__ = [
    "clean_targets",
    "make_eavesdropping_tasks",
    "make_noisy_copies",
    "make_sparse_relevance_tasks",
    "make_task_family",
]

# Size of the reference sample used to standardise teacher functions (drawn from its own
# generator, so the scale of a target does not depend on n_samples).
_REFERENCE_SIZE = 20_000


# ---------------------------------------------------------------------------- checks
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _check_nonneg(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}") from None
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return value


def _check_scale(value) -> float:
    value = _check_nonneg("nonlinearity", value)
    if value == 0:
        raise ValueError("nonlinearity must be positive (0 would make the target constant)")
    return value


# ---------------------------------------------------------------------------- teachers
class _Teacher:
    """A random one-hidden-layer function ``tanh(x W + b) A`` with ``n_out`` outputs, each
    standardised to mean 0 and variance 1 under ``x ~ N(0, I)``."""

    def __init__(
        self, rng: np.random.Generator, n_in: int, n_hidden: int, scale: float = 2.0, n_out: int = 1
    ) -> None:
        self.w = rng.standard_normal((n_in, n_hidden)) * scale / np.sqrt(n_in)  # [in, hidden]
        self.b = rng.standard_normal(n_hidden) * 0.5
        self.a = rng.standard_normal((n_hidden, n_out))  # [hidden, out]
        self.n_out = n_out
        reference = np.random.default_rng(rng.integers(2**32)).standard_normal(
            (_REFERENCE_SIZE, n_in)
        )
        raw = self._raw(reference)  # [ref, out]
        self.mean, self.std = raw.mean(0), raw.std(0)

    def hidden(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.w + self.b)  # [n, hidden]

    def _raw(self, x: np.ndarray) -> np.ndarray:
        return self.hidden(x) @ self.a  # [n, out]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = (self._raw(x) - self.mean) / self.std  # [n, out], unit variance
        return out[:, 0] if self.n_out == 1 else out


def _regression_data(
    x: np.ndarray, labels: dict[str, np.ndarray], truth: dict[str, np.ndarray], meta: dict
) -> MultiTaskData:
    return MultiTaskData(
        dense=x,
        labels=labels,
        tasks=[TaskSpec(name, "regression") for name in labels],
        dense_names=[f"x{j}" for j in range(x.shape[1])],
        truth=pd.DataFrame(truth),
        meta=meta,
    )


# ---------------------------------------------------------------------------- generators
def make_noisy_copies(
    n_samples: int,
    noise_std: float,
    *,
    n_tasks: int = 2,
    n_features: int = 10,
    n_hidden: int = 8,
    nonlinearity: float = 2.0,
    seed: int = 0,
) -> MultiTaskData:
    """Tasks that share one target function and differ only in independent label noise.

    ``y_k = f(x) + noise_std · ε_k`` with ``x ~ N(0, I_d)``, ``f`` a random teacher network
    standardised to unit variance and ``ε_k ~ N(0, 1)`` independent across tasks and samples.
    A model that learns the tasks together sees ``n_tasks`` noisy looks at the same ``f``:
    the setting of *implicit data augmentation* (Ruder, 2017, §3.1).

    Args:
        n_samples: number of samples.
        noise_std: standard deviation of each task's label noise (``f`` has variance 1, so
            ``noise_std = 1`` means a signal-to-noise ratio of 1).
        n_tasks: number of tasks (≥ 1), named ``task1 … taskK``.
        n_features: input dimension ``d``.
        n_hidden: hidden units of the teacher network.
        nonlinearity: scale of the teacher's input weights: near 0 the teacher is almost
            linear in ``x``; at 2 (the default) its ``tanh`` units saturate often.
        seed: seed of the teacher, the inputs and the noise.

    Returns:
        A :class:`MultiTaskData` with dense ``x0 …``; ``data.truth`` has one column per task
        (all equal to ``f``).

    Example:
        >>> data = make_noisy_copies(2_000, noise_std=1.0, seed=0)
        >>> clean = clean_targets(data)  # labels replaced by f, for scoring against the truth
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    noise_std = _check_nonneg("noise_std", noise_std)
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    n_features = _check_int("n_features", n_features, 1)
    n_hidden = _check_int("n_hidden", n_hidden, 1)
    nonlinearity = _check_scale(nonlinearity)
    rng = np.random.default_rng(seed)
    teacher = _Teacher(rng, n_features, n_hidden, scale=nonlinearity)
    x = rng.standard_normal((n_samples, n_features))  # [n, d]
    f = teacher(x)  # [n]
    names = [f"task{k + 1}" for k in range(n_tasks)]
    noise = rng.standard_normal((n_tasks, n_samples)) * noise_std  # [tasks, n]
    labels = {name: f + noise[k] for k, name in enumerate(names)}
    return _regression_data(
        x,
        labels,
        {name: f for name in names},
        {
            "generator": "make_noisy_copies",
            "noise_std": noise_std,
            "n_hidden": n_hidden,
            "nonlinearity": nonlinearity,
            "seed": seed,
        },
    )


def make_sparse_relevance_tasks(
    n_samples: int,
    *,
    n_relevant: int = 4,
    n_irrelevant: int = 60,
    n_tasks: int = 2,
    noise_std: float = 1.0,
    n_hidden: int = 4,
    nonlinearity: float = 1.0,
    shared_hidden: bool = True,
    seed: int = 0,
) -> MultiTaskData:
    """Different tasks that depend on the same few inputs, hidden among many irrelevant ones.

    The inputs are ``x ~ N(0, I_d)`` with ``d = n_relevant + n_irrelevant``; the first
    ``n_relevant`` columns are the relevant ones (``data.meta["relevant"]``). Task ``k`` is
    ``y_k = f_k(x_R) + noise_std · ε_k``, a function of the relevant inputs ``x_R`` only: the
    setting of *attention focusing* (Ruder, 2017, §3.2). The irrelevant columns have exactly
    zero influence on every target.

    With ``shared_hidden=True`` (default) the tasks are different read-outs
    ``f_k = a_kᵀ tanh(x_R W + b)`` of the same hidden features of the relevant inputs (so the
    other tasks carry evidence about *which input directions* matter); with ``False`` each
    ``f_k`` is its own random teacher network and the tasks share only the set of relevant
    inputs.

    Args:
        n_samples: number of samples.
        n_relevant: number of relevant inputs (≥ 1).
        n_irrelevant: number of irrelevant inputs (≥ 0).
        n_tasks: number of tasks (≥ 1), named ``task1 … taskK``.
        noise_std: standard deviation of the label noise (each ``f_k`` has variance 1).
        n_hidden: hidden units of each teacher network.
        nonlinearity: scale of the teachers' input weights (see :func:`make_noisy_copies`).
        shared_hidden: one hidden layer for all tasks (``True``) or one teacher per task.
        seed: seed of the teachers, the inputs and the noise.

    Example:
        >>> data = make_sparse_relevance_tasks(600, n_relevant=4, n_irrelevant=60, seed=0)
        >>> data.meta["relevant"]
        array([0, 1, 2, 3])
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    n_relevant = _check_int("n_relevant", n_relevant, 1)
    n_irrelevant = _check_int("n_irrelevant", n_irrelevant, 0)
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    noise_std = _check_nonneg("noise_std", noise_std)
    n_hidden = _check_int("n_hidden", n_hidden, 1)
    nonlinearity = _check_scale(nonlinearity)
    rng = np.random.default_rng(seed)
    if shared_hidden:
        teachers = [_Teacher(rng, n_relevant, n_hidden, nonlinearity, n_out=n_tasks)]
    else:
        teachers = [_Teacher(rng, n_relevant, n_hidden, nonlinearity) for _ in range(n_tasks)]
    x = rng.standard_normal((n_samples, n_relevant + n_irrelevant))  # [n, d]
    names = [f"task{k + 1}" for k in range(n_tasks)]
    targets = np.column_stack([t(x[:, :n_relevant]) for t in teachers])  # [n, tasks]
    truth = {name: targets[:, k] for k, name in enumerate(names)}
    labels = {name: truth[name] + noise_std * rng.standard_normal(n_samples) for name in names}
    return _regression_data(
        x,
        labels,
        truth,
        {
            "generator": "make_sparse_relevance_tasks",
            "relevant": np.arange(n_relevant),
            "noise_std": noise_std,
            "n_hidden": n_hidden,
            "nonlinearity": nonlinearity,
            "shared_hidden": bool(shared_hidden),
            "seed": seed,
        },
    )


def make_eavesdropping_tasks(
    n_samples: int,
    *,
    g_weight: float = 0.3,
    b_form: str = "weak",
    a_uses_g: bool = True,
    noise_a: float = 0.1,
    noise_b: float = 0.5,
    n_features: int = 10,
    n_hidden: int = 8,
    nonlinearity: float = 2.0,
    seed: int = 0,
) -> MultiTaskData:
    """A hidden quantity ``G`` that is easy to learn from task A and hard from task B.

    With ``x ~ N(0, I_d)``, ``G(x)`` a random teacher network (non-linear, unit variance) and
    ``h(x) = vᵀx`` a linear function (unit variance):

    * task ``A``: ``y_A = G(x) + noise_a · ε`` — ``G`` *is* the target, with little noise;
    * task ``B``, ``b_form="weak"``: ``y_B = h(x) + g_weight · G(x) + noise_b · ε``;
      ``b_form="interaction"``: ``y_B = h(x) + g_weight · x_{d-1} · G(x) + noise_b · ε``.

    In B, ``G`` is a small term buried under a large easy term and noise (or hidden behind an
    interaction with one input), so B's own gradient says little about it: the setting of
    *eavesdropping* (Ruder, 2017, §3.3; Caruana, 1997, §2). With ``a_uses_g=False`` task A is
    an unrelated teacher function ``G'`` of the same complexity instead — the control in which
    the partner task has nothing about ``G`` to overhear.

    Args:
        n_samples: number of samples.
        g_weight: weight of ``G`` in task B (≥ 0).
        b_form: ``"weak"`` or ``"interaction"`` (see above).
        a_uses_g: whether task A's target is ``G`` (``True``) or an unrelated ``G'``.
        noise_a, noise_b: label noise standard deviations of A and B.
        n_features: input dimension ``d`` (≥ 2).
        n_hidden: hidden units of the teacher network(s).
        nonlinearity: scale of the teachers' input weights (see :func:`make_noisy_copies`).
        seed: seed of the teachers, the inputs and the noise.

    Returns:
        Tasks ``A`` and ``B``; ``data.truth`` has the noise-free ``A`` and ``B`` and the parts
        ``G`` and ``h``.

    Example:
        >>> data = make_eavesdropping_tasks(1_000, g_weight=0.3, seed=0)
        >>> data.truth.columns.tolist()
        ['A', 'B', 'G', 'h']
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    g_weight = _check_nonneg("g_weight", g_weight)
    if b_form not in ("weak", "interaction"):
        raise ValueError(f"b_form must be 'weak' or 'interaction', got {b_form!r}")
    noise_a = _check_nonneg("noise_a", noise_a)
    noise_b = _check_nonneg("noise_b", noise_b)
    n_features = _check_int("n_features", n_features, 2)
    n_hidden = _check_int("n_hidden", n_hidden, 1)
    nonlinearity = _check_scale(nonlinearity)
    rng = np.random.default_rng(seed)
    g_teacher = _Teacher(rng, n_features, n_hidden, nonlinearity)
    # drawn whether used or not, so that G, h, x and the noise do not depend on a_uses_g
    other_teacher = _Teacher(rng, n_features, n_hidden, nonlinearity)
    v = rng.standard_normal(n_features)
    v /= np.linalg.norm(v)  # h = vᵀx has unit variance
    x = rng.standard_normal((n_samples, n_features))  # [n, d]
    g, h = g_teacher(x), x @ v
    a = g if a_uses_g else other_teacher(x)
    g_term = g if b_form == "weak" else x[:, -1] * g
    b = h + g_weight * g_term
    labels = {
        "A": a + noise_a * rng.standard_normal(n_samples),
        "B": b + noise_b * rng.standard_normal(n_samples),
    }
    return _regression_data(
        x,
        labels,
        {"A": a, "B": b, "G": g, "h": h},
        {
            "generator": "make_eavesdropping_tasks",
            "g_weight": g_weight,
            "b_form": b_form,
            "a_uses_g": bool(a_uses_g),
            "noise_a": noise_a,
            "noise_b": noise_b,
            "nonlinearity": nonlinearity,
            "seed": seed,
        },
    )


def make_task_family(
    n_samples: int,
    n_tasks: int,
    *,
    n_latent: int = 6,
    n_features: int = 20,
    noise_std: float = 0.3,
    seed: int = 0,
) -> MultiTaskData:
    """Many related tasks: different linear read-outs of one shared non-linear feature map.

    ``φ(x) = tanh(x W + b)`` with ``n_latent`` units is drawn once; task ``t`` is
    ``y_t = a_tᵀ φ(x)`` standardised to unit variance, plus noise of standard deviation
    ``noise_std``, with its own random read-out ``a_t``. Every task lives in the span of the
    same ``n_latent`` features, so a representation that has found ``φ`` serves a new task of
    the family with a linear probe: the *environment of related tasks* of Baxter (2000) and
    the *representation bias* of Ruder (2017, §3.4). Hold out some tasks (``select_tasks``)
    to test how a representation transfers to tasks it was not trained on.

    Args:
        n_samples: number of samples.
        n_tasks: number of tasks (≥ 1), named ``task1 … taskT``.
        n_latent: number of shared latent features.
        n_features: input dimension.
        noise_std: label noise standard deviation.
        seed: seed of ``φ``, the read-outs, the inputs and the noise.

    Returns:
        A :class:`MultiTaskData`; ``data.truth`` holds every task's noise-free target and the
        latent features ``latent0 …`` (the values of ``φ(x)``); ``data.meta["readouts"]`` is
        the ``[n_tasks, n_latent]`` array of read-outs.

    Example:
        >>> data = make_task_family(2_000, n_tasks=10, seed=0)
        >>> seen, unseen = data.select_tasks(["task1", "task2"]), data.select_tasks(["task10"])
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    n_tasks = _check_int("n_tasks", n_tasks, 1)
    n_latent = _check_int("n_latent", n_latent, 1)
    n_features = _check_int("n_features", n_features, 1)
    noise_std = _check_nonneg("noise_std", noise_std)
    rng = np.random.default_rng(seed)
    phi = _Teacher(rng, n_features, n_latent, n_out=n_tasks)
    x = rng.standard_normal((n_samples, n_features))  # [n, d]
    latent = phi.hidden(x)  # [n, latent]
    targets = phi(x).reshape(n_samples, n_tasks)  # [n, tasks]
    readouts = phi.a.T  # [tasks, latent]
    names = [f"task{t + 1}" for t in range(n_tasks)]
    noise = noise_std * rng.standard_normal(targets.shape)
    labels = {name: targets[:, t] + noise[:, t] for t, name in enumerate(names)}
    truth = {name: targets[:, t] for t, name in enumerate(names)}
    truth.update({f"latent{j}": latent[:, j] for j in range(n_latent)})
    return _regression_data(
        x,
        labels,
        truth,
        {
            "generator": "make_task_family",
            "n_latent": n_latent,
            "noise_std": noise_std,
            "readouts": readouts,
            "seed": seed,
        },
    )


# ---------------------------------------------------------------------------- utilities
def clean_targets(data: MultiTaskData, tasks: Sequence[str] | None = None) -> MultiTaskData:
    """A copy of ``data`` whose labels are the noise-free targets in ``data.truth``.

    Scoring a model on ``clean_targets(test)`` measures how well it learned the *function*,
    not how well it predicts the noise: the right yardstick when the label noise itself is
    what an experiment varies. Features, schema, masks and truth are unchanged.

    Args:
        data: a data set whose ``truth`` has a column named after each task (the generators of
            this module make such data).
        tasks: the tasks to replace (default: all).

    Raises:
        ValueError: if ``data`` has no truth or it lacks a column for one of the tasks.

    Example:
        >>> train, valid, test = make_noisy_copies(2_000, noise_std=2.0).split((0.5, 0.25, 0.25))
        >>> clean_test = clean_targets(test)
    """
    if not isinstance(data, MultiTaskData):
        raise TypeError(f"expected a MultiTaskData, got {type(data).__name__}")
    tasks = list(data.task_names if tasks is None else tasks)
    for name in tasks:
        data.schema.task(name)
    if data.truth is None:
        raise ValueError(
            "this data set has no ground truth (data.truth is None); only "
            "synthetic data know their noise-free targets"
        )
    missing = [name for name in tasks if name not in data.truth.columns]
    if missing:
        raise ValueError(
            f"data.truth has no column for task(s) {missing}; it has {list(data.truth.columns)}"
        )
    out = data.subset(np.arange(len(data)))
    out.labels = {**data.labels, **{name: data.truth[name].to_numpy(np.float32) for name in tasks}}
    return out
