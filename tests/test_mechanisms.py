"""The mechanism generators (mtlbook.data.mechanisms) and the probes (mtlbook.book.ch12_2)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mtlbook.analysis.runs import population_scores
from mtlbook.book.ch12_2 import (
    importance_share,
    input_gradient_importance,
    linear_probe,
    population_importance,
    population_probes,
    representation,
)
from mtlbook.data import MultiTaskData
from mtlbook.data.mechanisms import (
    clean_targets,
    make_eavesdropping_tasks,
    make_noisy_copies,
    make_sparse_relevance_tasks,
    make_task_family,
)
from mtlbook.models import SharedBottom, SingleTask

GENERATORS = {
    "noisy_copies": lambda n, seed: make_noisy_copies(n, 1.0, seed=seed),
    "sparse_relevance": lambda n, seed: make_sparse_relevance_tasks(n, seed=seed),
    "eavesdropping": lambda n, seed: make_eavesdropping_tasks(n, seed=seed),
    "task_family": lambda n, seed: make_task_family(n, 5, seed=seed),
}


def _frame(data: MultiTaskData) -> pd.DataFrame:
    return data.to_frame(include_truth=True)


# ---------------------------------------------------------------- common properties
@pytest.mark.parametrize("name", GENERATORS)
def test_shapes_and_truth_columns(name):
    data = GENERATORS[name](300, 0)
    assert len(data) == 300
    assert data.dense.shape[0] == 300
    assert all(t.kind == "regression" for t in data.schema.tasks)
    assert len(data.truth) == 300
    for task in data.task_names:  # every task has its noise-free target in the truth
        assert task in data.truth.columns


@pytest.mark.parametrize("name", GENERATORS)
def test_same_seed_same_data_other_seed_other_data(name):
    a, b, c = GENERATORS[name](200, 3), GENERATORS[name](200, 3), GENERATORS[name](200, 4)
    pd.testing.assert_frame_equal(_frame(a), _frame(b))
    assert not np.allclose(a.dense, c.dense)


@pytest.mark.parametrize("name", GENERATORS)
def test_targets_have_unit_variance(name):
    data = GENERATORS[name](20_000, 0)
    for task in data.task_names:
        if name == "eavesdropping" and task == "B":
            continue  # B = h + g·G has variance about 1 + g²
        assert data.truth[task].std() == pytest.approx(1.0, abs=0.05)
        assert data.truth[task].mean() == pytest.approx(0.0, abs=0.05)


# ---------------------------------------------------------------- make_noisy_copies
def test_noisy_copies_share_f_and_have_independent_noise():
    data = make_noisy_copies(50_000, 2.0, n_tasks=3, seed=1)
    assert data.task_names == ("task1", "task2", "task3")
    f = data.truth["task1"].to_numpy()
    np.testing.assert_array_equal(f, data.truth["task3"].to_numpy())
    noise = np.stack([data.labels[t] - f for t in data.task_names])
    np.testing.assert_allclose(noise.std(axis=1), 2.0, rtol=0.02)
    corr = np.corrcoef(noise)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.02


def test_noisy_copies_without_noise_are_the_function():
    data = make_noisy_copies(100, 0.0, seed=0)
    np.testing.assert_allclose(data.labels["task1"], data.truth["task1"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(noise_std=-1.0),
        dict(noise_std=float("nan")),
        dict(n_tasks=0),
        dict(n_features=0),
        dict(nonlinearity=0),
    ],
)
def test_noisy_copies_bad_arguments(kwargs):
    args = dict(noise_std=1.0) | kwargs
    with pytest.raises(ValueError):
        make_noisy_copies(100, **args)


def test_bad_sample_count():
    with pytest.raises(ValueError, match="n_samples"):
        make_noisy_copies(0, 1.0)
    with pytest.raises(ValueError, match="n_samples"):
        make_task_family(2.5, 3)


# ---------------------------------------------------------------- make_sparse_relevance_tasks
def _r2(x: np.ndarray, y: np.ndarray) -> float:
    """R² of a least-squares fit of ``y`` on ``x`` (with intercept)."""
    design = np.column_stack([x, np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(1 - np.var(y - design @ coef) / np.var(y))


@pytest.mark.parametrize("shared_hidden", [True, False])
def test_only_relevant_features_drive_the_targets(shared_hidden):
    data = make_sparse_relevance_tasks(
        2_000, n_relevant=3, n_irrelevant=10, n_tasks=2, shared_hidden=shared_hidden, seed=0
    )
    assert data.dense.shape == (2_000, 13)
    np.testing.assert_array_equal(data.meta["relevant"], [0, 1, 2])
    x = data.dense
    for task in data.task_names:
        y = data.truth[task].to_numpy()
        # the target is uncorrelated with every irrelevant column
        for j in range(3, 13):
            assert abs(np.corrcoef(x[:, j], y)[0, 1]) < 0.08
        # a least-squares fit on the relevant inputs explains far more than on the others
        assert _r2(x[:, :3], y) > 0.3
        assert _r2(x[:, 3:], y) < 0.02


def test_sparse_relevance_bad_arguments():
    with pytest.raises(ValueError, match="n_relevant"):
        make_sparse_relevance_tasks(10, n_relevant=0)
    with pytest.raises(ValueError, match="n_irrelevant"):
        make_sparse_relevance_tasks(10, n_irrelevant=-1)
    with pytest.raises(ValueError, match="nonlinearity"):
        make_sparse_relevance_tasks(10, nonlinearity=-1)


def test_shared_hidden_tasks_are_correlated_independent_teachers_differ():
    shared = make_sparse_relevance_tasks(5_000, n_tasks=4, shared_hidden=True, seed=0)
    assert shared.meta["shared_hidden"] is True
    own = make_sparse_relevance_tasks(5_000, n_tasks=4, shared_hidden=False, seed=0)
    assert own.meta["shared_hidden"] is False
    assert not np.allclose(shared.truth["task1"], own.truth["task1"])


# ---------------------------------------------------------------- make_eavesdropping_tasks
@pytest.mark.parametrize("b_form", ["weak", "interaction"])
def test_eavesdropping_structure(b_form):
    data = make_eavesdropping_tasks(1_000, g_weight=0.4, b_form=b_form, seed=0)
    t = data.truth
    assert list(t.columns) == ["A", "B", "G", "h"]
    np.testing.assert_allclose(t["A"], t["G"])
    g_term = t["G"] if b_form == "weak" else data.dense[:, -1] * t["G"]
    np.testing.assert_allclose(t["B"], t["h"] + 0.4 * g_term, rtol=1e-6, atol=1e-6)
    h = data.dense @ np.linalg.lstsq(data.dense, t["h"].to_numpy(), rcond=None)[0]
    np.testing.assert_allclose(h, t["h"], atol=1e-5)  # h is linear in x (float32 inputs)


def test_eavesdropping_control_changes_only_a():
    kw = dict(g_weight=0.3, seed=5)
    knows, control = (
        make_eavesdropping_tasks(500, **kw),
        make_eavesdropping_tasks(500, a_uses_g=False, **kw),
    )
    np.testing.assert_array_equal(knows.dense, control.dense)
    np.testing.assert_array_equal(knows.labels["B"], control.labels["B"])
    np.testing.assert_array_equal(knows.truth["G"], control.truth["G"])
    assert abs(np.corrcoef(control.truth["A"], control.truth["G"])[0, 1]) < 0.9
    assert control.meta["a_uses_g"] is False


@pytest.mark.parametrize(
    "kwargs", [dict(b_form="product"), dict(g_weight=-0.1), dict(noise_a=-1), dict(n_features=1)]
)
def test_eavesdropping_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_eavesdropping_tasks(100, **kwargs)


# ---------------------------------------------------------------- make_task_family
def test_task_family_targets_are_linear_in_the_latent_features():
    data = make_task_family(2_000, 6, n_latent=4, noise_std=0.0, seed=1)
    latent = data.truth[[f"latent{j}" for j in range(4)]].to_numpy()
    design = np.column_stack([latent, np.ones(len(latent))])
    for task in data.task_names:
        y = data.truth[task].to_numpy()
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        np.testing.assert_allclose(design @ coef, y, atol=1e-8)
        np.testing.assert_allclose(data.labels[task], y, atol=1e-6)  # no noise
    assert data.meta["readouts"].shape == (6, 4)


def test_task_family_bad_arguments():
    with pytest.raises(ValueError, match="n_tasks"):
        make_task_family(100, 0)
    with pytest.raises(ValueError, match="noise_std"):
        make_task_family(100, 2, noise_std=-0.5)


# ---------------------------------------------------------------- clean_targets
def test_clean_targets_replaces_labels_only():
    data = make_noisy_copies(200, 3.0, seed=0)
    clean = clean_targets(data)
    assert clean.schema == data.schema
    np.testing.assert_array_equal(clean.dense, data.dense)
    np.testing.assert_allclose(clean.labels["task1"], data.truth["task1"], rtol=1e-6)
    assert not np.allclose(data.labels["task1"], data.truth["task1"])  # original untouched
    partial = clean_targets(data, ["task2"])
    np.testing.assert_array_equal(partial.labels["task1"], data.labels["task1"])


def test_clean_targets_errors():
    no_truth = MultiTaskData(
        dense=np.zeros((3, 1)),
        labels={"y": [0.0, 1.0, 2.0]},
        tasks={"y": "regression"},
        dense_names=["x"],
    )
    with pytest.raises(ValueError, match="no ground truth"):
        clean_targets(no_truth)
    data = make_eavesdropping_tasks(50, seed=0)
    with pytest.raises(KeyError):
        clean_targets(data, ["C"])
    odd = data.subset(np.arange(50))
    odd.truth = odd.truth.drop(columns=["B"])
    with pytest.raises(ValueError, match="no column"):
        clean_targets(odd)
    with pytest.raises(TypeError):
        clean_targets(data.truth)


# ---------------------------------------------------------------- probes
@pytest.fixture(scope="module")
def family():
    data = make_task_family(600, 4, seed=0)
    return data.split((0.5, 0.25, 0.25), seed=0)


def test_representation_shape_and_errors(family):
    train, _, test = family
    model = SharedBottom(train.schema, bottom_units=(7,), tower_units=(), seed=0)
    h = representation(model, test)
    assert h.shape == (len(test), 7)
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="no single shared representation"):
        representation(SingleTask(train.schema, seed=0), test)
    with pytest.raises(ValueError, match="schema"):
        representation(model, test.select_tasks(["task1"]))


def test_linear_probe_scores():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 5))
    y = x @ np.array([1.0, -2.0, 0.0, 0.5, 0.0]) + 0.1 * rng.standard_normal(400)
    assert linear_probe(x[:200], y[:200], x[200:], y[200:]) > 0.95
    noise = rng.standard_normal((400, 5))
    assert linear_probe(noise[:200], y[:200], noise[200:], y[200:]) < 0.1
    both = linear_probe(
        x[:200], np.column_stack([y, -y])[:200], x[200:], np.column_stack([y, -y])[200:]
    )
    assert both.shape == (2,) and (both > 0.95).all()
    with pytest.raises(ValueError, match="rows"):
        linear_probe(x[:200], y[:100], x[200:], y[200:])
    with pytest.raises(ValueError, match="columns"):
        linear_probe(x[:200], y[:200], x[200:, :3], y[200:])
    with pytest.raises(ValueError, match="1-D or both 2-D"):
        linear_probe(x[:200], y[:200], x[200:], np.column_stack([y, y])[200:])


def test_input_gradient_importance_of_a_constant_network_is_zero():
    data = make_sparse_relevance_tasks(100, n_relevant=2, n_irrelevant=3, n_tasks=1, seed=0)
    model = SharedBottom(data.schema, bottom_units=(4,), tower_units=(), seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    imp = input_gradient_importance(model, data, "task1")
    assert list(imp.index) == list(data.schema.dense)
    np.testing.assert_allclose(imp.to_numpy(), 0.0)


def test_input_gradient_importance_sees_what_the_model_uses():
    data = make_sparse_relevance_tasks(300, n_relevant=2, n_irrelevant=3, n_tasks=1, seed=0)
    model = SharedBottom(data.schema, bottom_units=(8,), tower_units=(), seed=0)
    x = torch.from_numpy(data.dense).requires_grad_(True)
    imp = input_gradient_importance(model, data, "task1")
    # compare with a direct autograd computation on the whole batch
    from mtlbook.data import Batch

    out = model(Batch(x, None))["task1"]
    (grad,) = torch.autograd.grad(out.sum(), x)
    np.testing.assert_allclose(imp.to_numpy(), grad.abs().mean(0).numpy(), rtol=1e-5)
    with pytest.raises(KeyError):
        input_gradient_importance(model, data, "nope")


def test_importance_share():
    assert importance_share(np.array([1.0, 1.0, 2.0]), [2]) == pytest.approx(0.5)
    assert importance_share(pd.Series([1.0, 3.0]), np.array([0, 1])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="empty"):
        importance_share([1.0, 2.0], [])
    with pytest.raises(ValueError, match="lie in"):
        importance_share([1.0, 2.0], [2])
    with pytest.raises(ValueError, match="zero everywhere"):
        importance_share([0.0, 0.0], [0])
    with pytest.raises(ValueError, match="non-negative"):
        importance_share([-1.0, 2.0], [0])


def test_population_helpers_end_to_end(family):
    train, valid, test = family

    def shared_bottom(schema, seed):
        return SharedBottom(schema, bottom_units=(8,), tower_units=(), seed=seed)

    models = {"single": shared_bottom, "shared": shared_bottom}
    scores, pops = population_scores(
        models,
        train,
        valid,
        {"test": clean_targets(test)},
        [0, 1],
        tasks={"single": ["task1"], "shared": ["task1", "task2"]},
        epochs=2,
        batch_size=64,
    )
    assert set(scores["model"]) == {"single", "shared"}
    assert set(scores["split"]) == {"test"}
    assert set(scores[scores["model"] == "single"]["task"]) == {"task1"}
    assert set(scores[scores["model"] == "shared"]["task"]) == {"task1", "task2"}
    assert scores["best_epoch"].between(1, 2).all()
    imp = population_importance(pops, test, "task1")
    assert imp.shape == (4, train.schema.n_dense)
    assert list(imp.index.names) == ["model", "seed"]
    untrained = [shared_bottom(train.select_tasks(["task1"]).schema, s) for s in (0, 1)]
    probes = population_probes({**pops, "untrained": untrained}, train, test, ["task3", "task4"])
    assert list(probes.columns) == ["model", "seed", "target", "r2"]
    assert len(probes) == 3 * 2 * 2
    assert probes["r2"].le(1).all()
    with pytest.raises(ValueError, match="no task"):
        population_importance(pops, test, "task2")
    with pytest.raises(ValueError, match="empty"):
        population_scores({}, train, valid, {"test": test}, [0])
    with pytest.raises(TypeError, match="factory or a PerTask"):
        population_scores({"x": SharedBottom(train.schema)}, train, valid, {"test": test}, [0])
