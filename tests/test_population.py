"""fit_population(): per seed the same numbers as separate fit() runs, per-member model
selection and early stopping, per-member Adam, clear errors for what it cannot do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mtlbook as mb
import mtlbook.models as models
from mtlbook.metrics import _binary_metrics, _regression_metrics
from mtlbook.models import MMoE, SharedBottom
from mtlbook.models.experts import StackedExperts, mix
from mtlbook.training._vectorised import _member_metrics
from mtlbook.training.population import PopulationResult, fit_population

# float32 and batched matrix products that sum in another order: the runs agree to rounding.
RTOL, ATOL = 1e-4, 1e-5
# Weights (of order 1) after tens of Adam steps, which turn rounding differences in tiny
# gradient entries into steps of up to lr-size: a few 1e-5 apart.
WEIGHT_ATOL = 1e-4
SEEDS = (3, 11, 4)
FAST = {"batch_size": 128, "lr": 1e-2, "device": "cpu"}


def _small(cls):
    if cls is MMoE:
        return lambda schema, seed: MMoE(
            schema, n_experts=3, expert_units=(8,), tower_units=(4,), seed=seed
        )
    return lambda schema, seed: SharedBottom(
        schema, bottom_units=(16,), tower_units=(8,), seed=seed
    )


def _fit(factory, train, valid, seed, **kwargs):
    return mb.fit(factory(train.schema, seed), train, valid, seed=seed, progress=False, **kwargs)


def _member_history(result: PopulationResult, member: int) -> pd.DataFrame:
    rows = result.history[result.history["member"] == member]
    assert (rows["seed"] == result.seeds[member]).all()
    return rows.drop(columns=["member", "seed"]).reset_index(drop=True)


def _assert_same_run(
    result: PopulationResult, member: int, separate: mb.training.FitResult
) -> None:
    """Member ``member`` of the population is the separate run, to rounding."""
    ours, theirs = _member_history(result, member), separate.history
    keys = ["epoch", "split", "task", "metric"]
    pd.testing.assert_frame_equal(ours[keys], theirs[keys])
    np.testing.assert_allclose(ours["value"], theirs["value"], rtol=RTOL, atol=ATOL)
    summary = result.summary.loc[member]
    assert summary["best_epoch"] == separate.best_epoch
    assert summary["epochs_run"] == separate.epochs_run
    assert summary["best_score"] == pytest.approx(separate.best_score, rel=RTOL, abs=ATOL)
    model = result.model(member)
    assert type(model) is type(separate.model) and not model.training
    for (name, p), q in zip(model.named_parameters(), separate.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=RTOL, atol=WEIGHT_ATOL, msg=name)


@pytest.fixture(scope="module")
def correlated_parts(correlated_small):
    return correlated_small.split((0.7, 0.3), seed=0)


@pytest.fixture(scope="module")
def funnel_parts(funnel_small):
    """Categorical and dense features, a masked regression task (dwell time)."""
    return funnel_small.split((0.7, 0.3), seed=0)


@pytest.fixture(scope="module")
def binary_parts(correlated_binary):
    return correlated_binary.split((0.5, 0.5), seed=0)


# ---------------------------------------------------------------- the same runs as fit()


@pytest.mark.parametrize("cls", [SharedBottom, MMoE])
@pytest.mark.parametrize("parts", ["correlated_parts", "funnel_parts"])
def test_members_are_separate_fit_runs(cls, parts, request):
    train, valid = request.getfixturevalue(parts)
    factory = _small(cls)
    result = fit_population(
        lambda s: factory(train.schema, s), train, valid, SEEDS, epochs=3, **FAST
    )
    assert isinstance(result, PopulationResult) and len(result) == len(SEEDS)
    assert result.seeds == SEEDS and result.train_seconds > 0
    assert list(result.history.columns) == [
        "member",
        "seed",
        "epoch",
        "split",
        "task",
        "metric",
        "value",
    ]
    for member, seed in enumerate(SEEDS):
        _assert_same_run(result, member, _fit(factory, train, valid, seed, epochs=3, **FAST))
    # Different seeds, different members.
    first, second = result.model(0), result.model(1)
    assert not torch.equal(next(first.parameters()), next(second.parameters()))


def test_early_stopping_and_best_epoch_per_member(binary_parts):
    train, valid = binary_parts
    factory = _small(SharedBottom)
    seeds = range(6)
    settings = {
        "epochs": 12,
        "batch_size": 128,
        "lr": 3e-2,
        "early_stopping": 2,
        "monitor": "task1:auc",
        "device": "cpu",
    }
    result = fit_population(lambda s: factory(train.schema, s), train, valid, seeds, **settings)
    summary = result.summary
    # The members stop at different epochs (some never), each after 2 epochs without a better
    # validation AUC; rows stop with them.
    assert summary["epochs_run"].nunique() > 2 and summary["epochs_run"].max() == 12
    assert (summary["epochs_run"] - summary["best_epoch"] <= 2).all()
    assert (
        (summary["epochs_run"] == 12) | (summary["epochs_run"] - summary["best_epoch"] == 2)
    ).all()
    last = result.history.groupby("member")["epoch"].max()
    assert (last.to_numpy() == summary["epochs_run"].to_numpy()).all()
    for member, seed in enumerate(seeds):
        _assert_same_run(result, member, _fit(factory, train, valid, seed, **settings))
    # valid_metrics reads the member's best epoch.
    best = result.valid_metrics(0)
    assert best.loc["task1", "auc"] == pytest.approx(summary.loc[0, "best_score"])


def test_evaluate_is_evaluate_of_each_member(funnel_parts):
    train, valid = funnel_parts
    factory = _small(MMoE)
    result = fit_population(
        lambda s: factory(train.schema, s), train, valid, SEEDS, epochs=2, **FAST
    )
    scores = result.evaluate(valid)
    assert list(scores.columns) == ["member", "seed", "task", "metric", "value"]
    for member, seed in enumerate(SEEDS):
        ours = scores[scores["member"] == member].drop(columns=["member", "seed"])
        theirs = mb.evaluate(result.model(member), valid)
        pd.testing.assert_frame_equal(
            ours[["task", "metric"]].reset_index(drop=True), theirs[["task", "metric"]]
        )
        np.testing.assert_allclose(ours["value"], theirs["value"], rtol=RTOL, atol=ATOL)
        assert (scores.loc[scores["member"] == member, "seed"] == seed).all()


@pytest.mark.parametrize("name", models.__all__)
def test_every_model_family_vectorises(name, funnel_small, funnel_binary):
    """Each architecture trains as a population and matches a separate fit (one epoch)."""
    cls = getattr(models, name)
    data = funnel_small if name not in ("ESMM", "AITM") else funnel_binary
    train, valid = data.split((0.7, 0.3), seed=1)
    seeds = (0, 1)
    result = fit_population(
        lambda s: cls(train.schema, seed=s),
        train,
        valid,
        seeds,
        epochs=1,
        batch_size=256,
        device="cpu",
    )
    for member, seed in enumerate(seeds):
        separate = mb.fit(
            cls(train.schema, seed=seed),
            train,
            valid,
            seed=seed,
            epochs=1,
            batch_size=256,
            device="cpu",
            progress=False,
        )
        np.testing.assert_allclose(
            _member_history(result, member)["value"],
            separate.history["value"],
            rtol=1e-3,
            atol=1e-5,
        )


# ---------------------------------------------------------------- the pieces


@pytest.mark.parametrize("kernel", ["foreach", "fused"])
def test_adam_on_stacked_parameters_is_adam_per_member(kernel):
    torch.manual_seed(0)
    stacked = torch.randn(4, 5, 3, requires_grad=True)
    separate = [stacked[k].detach().clone().requires_grad_() for k in range(4)]
    settings = {"lr": 1e-2, "weight_decay": 1e-3, kernel: True}
    opt = torch.optim.Adam([stacked], **settings)
    opts = [torch.optim.Adam([p], **settings) for p in separate]
    for _ in range(5):
        grads = torch.randn(4, 5, 3)
        stacked.grad = grads.clone()
        opt.step()
        for k, (p, o) in enumerate(zip(separate, opts, strict=True)):
            p.grad = grads[k].clone()
            o.step()
    for k in range(4):
        assert torch.equal(stacked[k], separate[k])


def test_single_gemm_experts_compute_the_same():
    torch.manual_seed(0)
    experts = StackedExperts(6, (5, 4), [f"shared/{i}" for i in range(3)], groups=(2, 1))
    x = torch.randn(7, 6)
    expected = experts(x)
    expected_grads = torch.autograd.grad(expected.square().sum(), list(experts.parameters()))
    experts.single_gemm = True
    out = experts(x)
    grads = torch.autograd.grad(out.square().sum(), list(experts.parameters()))
    torch.testing.assert_close(out, expected)
    for g, e in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(g, e)
    assert not StackedExperts.single_gemm  # off for every other model


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_metrics_of_all_members_are_mtlbook_metrics(kind):
    rng = np.random.default_rng(0)
    n = 500
    y = (rng.random(n) < 0.3).astype(float) if kind == "binary" else rng.standard_normal(n)
    p = rng.random((4, n))
    p[:, :40] = 0.5  # ties
    p[0, 40:50] = 1.0  # clipped
    groups = rng.integers(0, 20, n) if kind == "binary" else None
    ours = _member_metrics(kind, y, p, groups)
    for k in range(4):
        theirs = (
            _binary_metrics(y, p[k], groups) if kind == "binary" else _regression_metrics(y, p[k])
        )
        assert list(ours) == list(theirs)
        for metric, value in theirs.items():
            assert ours[metric][k] == pytest.approx(value, rel=1e-12, abs=1e-12), metric
    single_class = _member_metrics("binary", np.zeros(n), p, None)
    assert np.isnan(single_class["auc"]).all() and np.isfinite(single_class["logloss"]).all()


def test_mix_under_vmap_matches_each_member_and_gradcheck():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(3, 5, 2, 4, dtype=torch.float64), -1).requires_grad_()
    h = torch.randn(3, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    ours = torch.vmap(mix)(w, h)  # [members, gates, batch, units]
    theirs = torch.stack([mix(w[k], h[k]) for k in range(3)])
    torch.testing.assert_close(ours, theirs)
    assert torch.autograd.gradcheck(lambda w, h: torch.vmap(mix)(w, h), (w, h))
    assert torch.autograd.gradcheck(
        lambda w, h: torch.vmap(mix, in_dims=(0, None))(w, h[0]), (w, h)
    )


def test_gate_records_still_work_after_a_population(correlated_parts):
    train, valid = correlated_parts
    factory = _small(MMoE)
    result = fit_population(
        lambda s: factory(train.schema, s), train, valid, SEEDS[:2], epochs=1, **FAST
    )
    model = result.model(1)
    model(next(iter(valid.loader(16, shuffle=False))))
    records = model.gate_records()
    assert len(records) == 2 and records[0].weights.shape == (16, 3)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"seeds": []}, "at least one member"),
        ({"seeds": [1, 2, 1]}, r"seeds \[1\] appear more than once"),
        ({"seeds": 5}, r"range\(5\)"),
        ({"seeds": [0.5]}, "must be integers"),
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"early_stopping": 0}, "early_stopping"),
        ({"monitor": "task9:auc"}, "monitor must be"),
        ({"monitor": "task1:auc"}, "not computed for regression"),
    ],
)
def test_bad_arguments_raise(correlated_parts, kwargs, match):
    train, valid = correlated_parts
    factory = _small(SharedBottom)
    arguments = {"seeds": SEEDS, "epochs": 1, **kwargs}
    seeds = arguments.pop("seeds")
    with pytest.raises((ValueError, TypeError), match=match):
        fit_population(lambda s: factory(train.schema, s), train, valid, seeds, **arguments)


def test_bad_models_and_data_raise(correlated_parts, funnel_parts):
    train, valid = correlated_parts
    with pytest.raises(TypeError, match="make_model must be a callable"):
        fit_population(SharedBottom(train.schema), train, valid, SEEDS)
    with pytest.raises(TypeError, match="must return a mtlbook MultiTaskModel"):
        fit_population(lambda s: torch.nn.Linear(2, 2), train, valid, SEEDS)
    with pytest.raises(ValueError, match="different parameters"):
        fit_population(
            lambda s: SharedBottom(train.schema, bottom_units=(8 + s,), seed=s), train, valid, SEEDS
        )
    with pytest.raises(ValueError, match="one architecture"):
        fit_population(
            lambda s: (SharedBottom if s == SEEDS[0] else MMoE)(train.schema), train, valid, SEEDS
        )
    with pytest.raises(ValueError, match="does not support dropout"):
        fit_population(
            lambda s: SharedBottom(train.schema, dropout=0.1, seed=s), train, valid, SEEDS
        )
    with pytest.raises(ValueError, match="schema differs"):
        fit_population(lambda s: SharedBottom(train.schema, seed=s), train, funnel_parts[1], SEEDS)
    with pytest.raises(TypeError, match="valid must be a MultiTaskData"):
        fit_population(lambda s: SharedBottom(train.schema, seed=s), train, None, SEEDS)
    result = fit_population(
        lambda s: SharedBottom(train.schema, seed=s), train, valid, SEEDS[:1], epochs=1, **FAST
    )
    with pytest.raises(IndexError, match=r"0 \.\. 0"):
        result.model(1)
    with pytest.raises(ValueError, match="schema differs"):
        result.evaluate(funnel_parts[1])


class _PythonNumber(SharedBottom):
    """Turns a tensor into a Python number inside forward: impossible under vmap."""

    def forward(self, batch):
        out = super().forward(batch)
        scale = max(1.0, float(out["task1"].abs().max()))
        return {name: value / scale for name, value in out.items()}


class _HiddenState(SharedBottom):
    """Keeps a seed-dependent tensor outside its parameters and buffers: vmap would silently
    use the first member's for every member."""

    def __init__(self, schema, seed=0):
        super().__init__(schema, bottom_units=(8,), tower_units=(4,), seed=seed)
        self.offset = torch.tensor(float(seed))

    def forward(self, batch):
        return {name: value + self.offset for name, value in super().forward(batch).items()}


@pytest.mark.parametrize(
    "cls, match",
    [
        (_PythonNumber, "does not run under torch.vmap"),
        (_HiddenState, "differ from the model's own"),
    ],
)
def test_models_that_cannot_be_vectorised_are_refused(correlated_parts, cls, match):
    train, valid = correlated_parts
    with pytest.raises(
        NotImplementedError,
        match=rf"{cls.__name__} cannot be trained as a "
        rf"vectorised population.*{match}",
    ):
        fit_population(lambda s: cls(train.schema, seed=s), train, valid, SEEDS, epochs=1)


def test_nan_guard_names_the_member(huge_task2_scale):
    train, valid = huge_task2_scale.split((0.8, 0.2), seed=0)
    with pytest.raises(FloatingPointError, match=r"task 'task2' of member 0 \(seed 3\).*step 1"):
        fit_population(
            lambda s: SharedBottom(train.schema, seed=s),
            train,
            valid,
            SEEDS,
            epochs=1,
            device="cpu",
        )


# ---------------------------------------------------------------- one data set per seed


def _funnel_parts_per_seed(seeds):
    """Each seed its own funnel draw and split (the same sizes), as repeat_fits makes them."""
    parts = [
        mb.simulate_funnel(
            1_200,
            seed=s,
            with_dwell_time=True,
            click_rate=0.1,
            purchase_rate=0.03,
            n_users=60,
            n_items=40,
        ).split((0.7, 0.3), seed=s)
        for s in seeds
    ]
    return [p[0] for p in parts], [p[1] for p in parts]


def test_members_with_their_own_data_are_separate_fit_runs():
    trains, valids = _funnel_parts_per_seed(SEEDS)
    factory = _small(MMoE)
    schema = trains[0].schema
    result = fit_population(
        lambda s: factory(schema, s), trains, valids, SEEDS, epochs=2, early_stopping=1, **FAST
    )
    for member, seed in enumerate(SEEDS):
        separate = _fit(
            factory, trains[member], valids[member], seed, epochs=2, early_stopping=1, **FAST
        )
        _assert_same_run(result, member, separate)
    scores = result.evaluate(valids)
    for member in range(len(SEEDS)):
        theirs = mb.evaluate(result.model(member), valids[member])
        ours = scores[scores["member"] == member]
        np.testing.assert_allclose(ours["value"], theirs["value"], rtol=RTOL, atol=ATOL)
    # The members really saw different data: scoring everyone on member 0's data differs.
    shared = result.evaluate(valids[0])
    assert not np.allclose(
        shared[shared["member"] == 1]["value"], scores[scores["member"] == 1]["value"]
    )


def test_fixed_task_weights_are_fixed_weights_in_fit(correlated_parts):
    train, valid = correlated_parts
    factory = _small(SharedBottom)
    weights = {"task1": 0.25, "task2": 2.0}
    result = fit_population(
        lambda s: factory(train.schema, s),
        train,
        valid,
        SEEDS[:2],
        task_weights=weights,
        epochs=2,
        **FAST,
    )
    for member, seed in enumerate(SEEDS[:2]):
        separate = _fit(
            factory,
            train,
            valid,
            seed,
            epochs=2,
            weighting=mb.weighting.FixedWeights(weights),
            **FAST,
        )
        _assert_same_run(result, member, separate)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda t, v: {"train": t[:2]}, ValueError, "holds 2 data sets for 3 seeds"),
        (
            lambda t, v: {"train": [t[0], t[1], t[2].subset(np.arange(10))]},
            ValueError,
            r"train\[2\] has 10 rows",
        ),
        (
            lambda t, v: {"valid": [v[0], v[1], v[2].select_tasks(["click"])]},
            ValueError,
            "another schema",
        ),
        (lambda t, v: {"train": "data"}, TypeError, "sequence of them"),
        (
            lambda t, v: {"task_weights": {"click": 1.0}},
            ValueError,
            r"missing \['purchase', 'dwell_time'\]",
        ),
        (
            lambda t, v: {"task_weights": {"click": -1.0, "purchase": 1.0, "dwell_time": 1.0}},
            ValueError,
            "finite number ≥ 0",
        ),
        (
            lambda t, v: {"task_weights": dict.fromkeys(["click", "purchase", "dwell_time"], 0.0)},
            ValueError,
            "every task weight is 0",
        ),
    ],
)
def test_bad_per_seed_data_and_weights_raise(change, error, match):
    trains, valids = _funnel_parts_per_seed(SEEDS)
    arguments = {"train": trains, "valid": valids, **change(trains, valids)}
    factory = _small(SharedBottom)
    with pytest.raises(error, match=match):
        fit_population(lambda s: factory(trains[0].schema, s), seeds=SEEDS, epochs=1, **arguments)


# ---------------------------------------------------------------- the harness's trainer


def test_population_trainer_gives_the_results_of_separate_fits(monkeypatch):
    from mtlbook.analysis import runs
    from mtlbook.analysis.runs import PerTask, repeat_fits, train_jobs
    from mtlbook.models import SingleTask
    from mtlbook.weighting import FixedWeights, UncertaintyWeighting

    calls = []
    original = runs.fit_population
    monkeypatch.setattr(
        runs,
        "fit_population",
        lambda make, train, valid, seeds, **kw: (
            calls.append((type(make(seeds[0])).__name__, len(seeds)))
            or original(make, train, valid, seeds, **kw)
        ),
    )

    def make_data(seed):
        return mb.make_correlated_tasks(600, 0.5, n_features=8, seed=seed)

    models_ = {
        "single": PerTask(lambda schema, seed: SingleTask(schema, hidden_units=(8,), seed=seed)),
        "mmoe": lambda schema, seed: MMoE(
            schema, n_experts=3, expert_units=(8,), tower_units=(4,), seed=seed
        ),
        "dropout": lambda schema, seed: SharedBottom(
            schema, bottom_units=(8,), dropout=0.2, seed=seed
        ),
    }
    weightings = {
        "equal": None,
        "fixed": lambda: FixedWeights({"task1": 2.0, "task2": 1.0}),
        "uw": UncertaintyWeighting,
    }
    weightings = {k: v for k, v in weightings.items() if v is not None} | {
        "equal": lambda: mb.weighting.EqualWeight()
    }
    settings = {"epochs": 3, "batch_size": 128, "lr": 1e-2, "device": "cpu", "early_stopping": 1}
    ours = repeat_fits(
        make_data,
        models_,
        [0, 1, 2],
        weightings=weightings,
        trainer=runs.population_trainer,
        **settings,
    )
    theirs = repeat_fits(
        make_data, models_, [0, 1, 2], weightings=weightings, trainer=train_jobs, **settings
    )
    keys = ["model", "weighting", "seed", "task", "metric"]
    pd.testing.assert_frame_equal(ours[keys], theirs[keys])
    np.testing.assert_allclose(ours["value"], theirs["value"], rtol=1e-4, atol=1e-5)
    assert (ours["best_epoch"] == theirs["best_epoch"]).all()
    assert (ours["epochs_run"] == theirs["epochs_run"]).all()
    # Populations: one per single-task model's task, one per constant weighting of the MMoE;
    # uncertainty weighting and the dropout model trained one by one.
    assert sorted(calls) == [("MMoE", 3), ("MMoE", 3), ("SingleTask", 3), ("SingleTask", 3)]
    # Arguments fit_population cannot honour send everything to fit.
    calls.clear()
    repeat_fits(
        make_data,
        {"mmoe": models_["mmoe"]},
        [0, 1],
        trainer=runs.population_trainer,
        restore_best=False,
        epochs=1,
        device="cpu",
    )
    assert calls == []


def test_compare_uses_the_population_trainer(monkeypatch):
    from mtlbook.analysis import runs

    groups = []
    original = runs.fit_population
    monkeypatch.setattr(
        runs,
        "fit_population",
        lambda make, train, valid, seeds, **kw: (
            groups.append(len(seeds)) or original(make, train, valid, seeds, **kw)
        ),
    )
    result = mb.compare(["shared_bottom"], "correlated:0.5", seeds=3, n_samples=400, epochs=1)
    assert groups == [3] and set(result.raw["seed"]) == {0, 1, 2}
