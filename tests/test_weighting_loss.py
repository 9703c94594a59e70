"""Loss-based weighting strategies: each one's published formula, its input checks, and a run
inside fit() with two model families."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import mtlbook as mb
from mtlbook.models import MMoE, SharedBottom
from mtlbook.weighting import (
    DWA,
    FAMO,
    RLW,
    FixedWeights,
    ScheduledWeights,
    UncertaintyWeighting,
    Weighting,
)

FAST = {"batch_size": 128, "device": "cpu", "progress": False, "lr": 1e-2}
TASKS = ("click", "purchase", "dwell_time")  # the small funnel: binary, binary, regression


def _shared_bottom(schema) -> SharedBottom:
    return SharedBottom(schema, bottom_units=(16,), tower_units=(8,), seed=0)


def _mmoe(schema) -> MMoE:
    return MMoE(schema, n_experts=2, expert_units=(8,), tower_units=(8,), seed=0)


@pytest.fixture(scope="module")
def parts(funnel_small):
    return funnel_small.split((0.7, 0.3), seed=0)


@pytest.fixture(scope="module")
def batch(funnel_small):
    return next(iter(funnel_small.loader(batch_size=512, shuffle=False)))


def _leaf_losses(values: dict[str, float]) -> dict[str, torch.Tensor]:
    """Per-task losses as leaf tensors, so that their ``.grad`` shows each task's multiplier."""
    return {k: torch.tensor(float(v), requires_grad=True) for k, v in values.items()}


def _grads(losses: dict[str, torch.Tensor]) -> np.ndarray:
    return np.array([float(v.grad) for v in losses.values()])


# ---------------------------------------------------------------------- UncertaintyWeighting
def test_uncertainty_weighting_loss_and_gradient(funnel_small):
    model = _shared_bottom(funnel_small.schema)
    uw = UncertaintyWeighting()
    uw.setup(model.task_names, model)
    assert uw.kinds == {"click": "binary", "purchase": "binary", "dwell_time": "regression"}
    assert uw.parameters() == [uw.log_vars]
    assert torch.equal(uw.log_vars.detach(), torch.zeros(3))  # s_k = 0 at the start
    s = np.array([0.3, -0.7, 1.2])
    loss_values = np.array([0.4, 0.1, 25.0])
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor(s))
    losses = _leaf_losses(dict(zip(TASKS, loss_values, strict=True)))
    total = uw.backward(losses, model)

    factor = np.array([1.0, 1.0, 0.5])  # 1/σ² for binary, 1/(2σ²) for regression
    expected = np.sum(factor * np.exp(-s) * loss_values + 0.5 * s)
    assert float(total) == pytest.approx(expected, rel=1e-6)
    # ∂L/∂s_k = −c_k e^{−s_k} L_k + ½ ;  ∂L/∂L_k = c_k e^{−s_k}.
    np.testing.assert_allclose(
        uw.log_vars.grad.numpy(), -factor * np.exp(-s) * loss_values + 0.5, rtol=1e-5
    )
    np.testing.assert_allclose(_grads(losses), factor * np.exp(-s), rtol=1e-6)
    np.testing.assert_allclose(list(uw.weights.values()), factor * np.exp(-s), rtol=1e-6)
    assert uw.log_variances == pytest.approx(dict(zip(TASKS, s, strict=True)))


def test_uncertainty_weighting_adds_the_regulariser_and_needs_a_schema(funnel_small):
    model = _shared_bottom(funnel_small.schema)
    uw = UncertaintyWeighting()
    uw.setup(model.task_names, model)
    losses = _leaf_losses(dict.fromkeys(TASKS, 1.0))
    extra = torch.tensor(0.25, requires_grad=True)
    total = uw.backward(losses, model, extra)
    assert float(total) == pytest.approx(1.0 + 1.0 + 0.5 + 0.25)
    assert float(extra.grad) == 1.0  # added unweighted
    with pytest.raises(TypeError, match="schema"):
        UncertaintyWeighting().setup(["a", "b"], nn.Linear(2, 2))


# ---------------------------------------------------------------------- FixedWeights
def test_fixed_weights_scale_gradients_exactly(funnel_small, batch):
    weights = {"click": 1.0, "purchase": 7.5, "dwell_time": 0.01}
    model = _shared_bottom(funnel_small.schema)
    twin = _shared_bottom(funnel_small.schema)
    fixed = FixedWeights(weights)
    fixed.setup(model.task_names, model)
    total = fixed.backward(model.task_losses(model(batch), batch), model)

    losses = twin.task_losses(twin(batch), batch)
    manual = sum(weights[k] * v for k, v in losses.items())
    manual.backward()
    assert float(total) == pytest.approx(float(manual.detach()), rel=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert fixed.weights == weights


@pytest.mark.parametrize(
    ("weights", "error", "match"),
    [
        ({"click": 1.0, "purchase": 1.0}, ValueError, "dwell_time"),
        ({"click": 1.0, "purchase": 1.0, "dwell_time": 1.0, "like": 1.0}, ValueError, "like"),
        # a misspelt task: both the unknown name and the task it leaves without a weight
        (
            {"clik": 1.0, "purchase": 1.0, "dwell_time": 1.0},
            ValueError,
            r"no value for task\(s\) \['click'\] and names task\(s\) \['clik'\]",
        ),
        ({"click": 1.0, "purchase": -1.0, "dwell_time": 1.0}, ValueError, "purchase"),
        ({"click": 1.0, "purchase": float("nan"), "dwell_time": 1.0}, ValueError, "purchase"),
        ({"click": float("inf"), "purchase": 1.0, "dwell_time": 1.0}, ValueError, "click"),
        ({"click": "1", "purchase": 1.0, "dwell_time": 1.0}, TypeError, "click"),
        ({"click": 0.0, "purchase": 0.0, "dwell_time": 0.0}, ValueError, "every weight is 0"),
        ([1.0, 1.0, 1.0], TypeError, "mapping"),
    ],
)
def test_fixed_weights_reject_bad_input(funnel_small, weights, error, match):
    model = _shared_bottom(funnel_small.schema)
    with pytest.raises(error, match=match):
        FixedWeights(weights).setup(model.task_names, model)


# ---------------------------------------------------------------------- ScheduledWeights
def test_scheduled_weights_follow_the_ple_schedule():
    omega0 = {"a": 1.0, "b": 4.0}
    gamma = {"a": 1.1, "b": 0.5}
    schedule = ScheduledWeights(omega0, gamma)
    model = nn.Linear(1, 1)
    schedule.setup(["a", "b"], model)
    for epoch in range(1, 6):  # t = epoch − 1 finished epochs
        for _ in range(3):
            losses = _leaf_losses({"a": 2.0, "b": 3.0})
            schedule.backward(losses, model)
            t = epoch - 1
            expected = [omega0[k] * gamma[k] ** t for k in ("a", "b")]
            np.testing.assert_allclose(_grads(losses), expected, rtol=1e-6)
            assert list(schedule.weights.values()) == pytest.approx(expected)
        schedule.epoch_end(epoch, {"a": 2.0, "b": 3.0})
    assert schedule.weights_at(10) == pytest.approx({"a": 1.1**10, "b": 4.0 * 0.5**10})


def test_scheduled_weights_per_step_and_bad_input():
    schedule = ScheduledWeights(ratios=0.9, per="step")
    model = nn.Linear(1, 1)
    schedule.setup(["a", "b"], model)
    for step in range(5):
        losses = _leaf_losses({"a": 1.0, "b": 1.0})
        schedule.backward(losses, model)
        np.testing.assert_allclose(_grads(losses), [0.9**step] * 2, rtol=1e-6)
    with pytest.raises(ValueError, match="per"):
        ScheduledWeights(per="batch")
    with pytest.raises(ValueError, match=r"ratios\['b'\]"):
        ScheduledWeights(ratios={"a": 1.0, "b": 0.0})
    with pytest.raises(ValueError, match="ratios"):
        ScheduledWeights(ratios=-1.0)
    with pytest.raises(ValueError, match="'b'"):
        ScheduledWeights({"a": 1.0}).setup(["a", "b"], model)


# ---------------------------------------------------------------------- DWA
def test_dwa_weights_match_the_formula():
    epoch_losses = [[0.9, 2.0, 30.0], [0.7, 1.9, 20.0], [0.6, 1.85, 12.0], [0.4, 1.84, 8.0]]
    dwa = DWA()
    model = nn.Linear(1, 1)
    dwa.setup(["a", "b", "c"], model)
    for epoch, row in enumerate(epoch_losses, start=1):
        dwa.epoch_end(epoch, dict(zip("abc", row, strict=True)))
    assert dwa.weights_for_epoch(1) == dwa.weights_for_epoch(2) == dict.fromkeys("abc", 1.0)
    for t in range(3, len(epoch_losses) + 2):
        r = np.array(epoch_losses[t - 2]) / np.array(epoch_losses[t - 3])
        expected = 3 * np.exp(r / 2) / np.exp(r / 2).sum()
        got = np.array(list(dwa.weights_for_epoch(t).values()))
        np.testing.assert_allclose(got, expected, rtol=1e-12)
        assert got.sum() == pytest.approx(3.0)
    # The task whose loss fell least (b, in the last epoch) gets the largest weight.
    last = dwa.weights_for_epoch(5)
    assert max(last, key=last.get) == "b"
    # The next step uses the weights of epoch 5.
    losses = _leaf_losses({"a": 1.0, "b": 1.0, "c": 1.0})
    dwa.backward(losses, model)
    np.testing.assert_allclose(_grads(losses), list(last.values()), rtol=1e-6)
    assert dwa.weights == pytest.approx(last)
    with pytest.raises(ValueError, match="epoch"):
        dwa.weights_for_epoch(7)


def test_dwa_is_one_for_two_epochs_and_rejects_zero_losses():
    dwa = DWA(temperature=2.0)
    model = nn.Linear(1, 1)
    dwa.setup(["a", "b"], model)
    for epoch in (1, 2):
        losses = _leaf_losses({"a": 5.0, "b": 0.1})
        dwa.backward(losses, model)
        np.testing.assert_allclose(_grads(losses), [1.0, 1.0])
        dwa.epoch_end(epoch, {"a": 5.0 / epoch, "b": 0.1})
    with pytest.raises(ValueError, match="'b'"):
        dwa.epoch_end(3, {"a": 1.0, "b": 0.0})
    with pytest.raises(ValueError, match="temperature"):
        DWA(temperature=0)


# ---------------------------------------------------------------------- RLW
def _rlw_draws(rlw: RLW, n: int) -> np.ndarray:
    model = nn.Module()  # no parameters, so building it draws no random numbers
    rlw.setup(["a", "b", "c"], model)
    rows = []
    for _ in range(n):
        losses = _leaf_losses({"a": 1.0, "b": 2.0, "c": 3.0})
        rlw.backward(losses, model)
        np.testing.assert_allclose(_grads(losses), list(rlw.weights.values()), rtol=1e-6)
        rows.append(list(rlw.weights.values()))
    return np.array(rows)


@pytest.mark.parametrize("distribution", ["normal", "dirichlet"])
def test_rlw_draws_reproducible_distributions(distribution):
    state = torch.get_rng_state()
    draws = _rlw_draws(RLW(distribution, seed=3), 50)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert (draws >= 0).all()
    np.testing.assert_allclose(draws.sum(axis=1), 1.0, rtol=1e-6)
    assert len({tuple(row) for row in draws.round(6)}) == len(draws)  # new weights each step
    np.testing.assert_array_equal(draws, _rlw_draws(RLW(distribution, seed=3), 50))
    assert not np.allclose(draws, _rlw_draws(RLW(distribution, seed=4), 50))
    # On average every task gets 1/K.
    assert np.abs(_rlw_draws(RLW(distribution), 2000).mean(axis=0) - 1 / 3).max() < 0.02


def test_rlw_rejects_bad_input():
    with pytest.raises(ValueError, match="distribution"):
        RLW("bernoulli")
    with pytest.raises(TypeError, match="seed"):
        RLW(seed=1.5)


# ---------------------------------------------------------------------- FAMO
def test_famo_step_is_the_published_gradient():
    famo = FAMO()
    model = nn.Linear(1, 1)
    famo.setup(["a", "b"], model)
    with torch.no_grad():
        famo.logits.copy_(torch.tensor([0.4, -0.2]))
    z = torch.softmax(torch.tensor([0.4, -0.2]), 0).numpy()
    ell = np.array([0.5, 4.0])
    losses = _leaf_losses({"a": ell[0], "b": ell[1]})
    total = famo.backward(losses, model)
    c = 1.0 / np.sum(z / ell)
    np.testing.assert_allclose(_grads(losses), c * z / ell, rtol=1e-5)
    np.testing.assert_allclose(list(famo.loss_multipliers.values()), c * z / ell, rtol=1e-5)
    assert float(total) == pytest.approx(c, rel=1e-5)  # Σ_k (c z_k / ℓ_k) ℓ_k = c


def test_famo_favours_the_task_whose_loss_falls_slowly():
    famo = FAMO()
    model = nn.Linear(1, 1)
    famo.setup(["fast", "slow"], model)
    assert famo.weights == pytest.approx({"fast": 0.5, "slow": 0.5})
    for step in range(60):
        famo.backward(_leaf_losses({"fast": 2.0 * 0.9**step, "slow": 2.0 * 0.99**step}), model)
        z = famo.weights
        assert all(v > 0 for v in z.values())
        assert sum(z.values()) == pytest.approx(1.0)
    assert z["slow"] > 0.6 > 0.4 > z["fast"]


def test_famo_explicit_update_equals_the_deferred_one():
    losses = [{"a": 1.0, "b": 2.0}, {"a": 0.5, "b": 1.9}, {"a": 0.3, "b": 1.7}]
    model = nn.Linear(1, 1)
    deferred, explicit = FAMO(), FAMO()
    deferred.setup(["a", "b"], model)
    explicit.setup(["a", "b"], model)
    for before, after in itertools.pairwise(losses):
        deferred.backward(_leaf_losses(before), model)
        explicit.backward(_leaf_losses(before), model)
        explicit.update({k: torch.tensor(v) for k, v in after.items()})
    deferred.backward(_leaf_losses(losses[-1]), model)  # runs the pending update first
    explicit.backward(_leaf_losses(losses[-1]), model)  # nothing pending
    torch.testing.assert_close(deferred.logits, explicit.logits)
    assert not torch.equal(deferred.logits, torch.zeros(2))


def test_famo_task_without_samples_sits_the_step_out():
    famo = FAMO()
    model = nn.Linear(1, 1)
    famo.setup(["a", "b"], model)
    losses = _leaf_losses({"a": 0.5, "b": 0.0})  # b: a masked task with no labelled sample
    famo.backward(losses, model)
    np.testing.assert_allclose(_grads(losses), [1.0, 0.0], rtol=1e-6)
    famo.backward(_leaf_losses({"a": 0.4, "b": 0.3}), model)
    assert torch.equal(famo.logits.detach(), torch.zeros(2))  # no weight step from that pair
    with pytest.raises(ValueError, match="min_losses"):
        FAMO(min_losses={"a": 0.0}).setup(["a", "b"], model)
    with pytest.raises(ValueError, match="lr"):
        FAMO(lr=0.0)


# ---------------------------------------------------------------------- inside fit()
STRATEGIES = {
    "FixedWeights": lambda: FixedWeights({"click": 1.0, "purchase": 3.0, "dwell_time": 1e-3}),
    "ScheduledWeights": lambda: ScheduledWeights(
        {"click": 1.0, "purchase": 2.0, "dwell_time": 1e-3}, ratios=0.8
    ),
    "UncertaintyWeighting": UncertaintyWeighting,
    "DWA": DWA,
    "RLW": lambda: RLW(seed=1),
    "FAMO": FAMO,
}


@pytest.mark.parametrize("make_model", [_shared_bottom, _mmoe], ids=["SharedBottom", "MMoE"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_trains_inside_fit(parts, name, make_model):
    train, valid = parts
    weighting: Weighting = STRATEGIES[name]()
    result = mb.fit(make_model(train.schema), train, valid, epochs=3, weighting=weighting, **FAST)
    hist = result.history
    w = hist[(hist["split"] == "train") & (hist["metric"] == "weight")].pivot(
        index="epoch", columns="task", values="value"
    )
    assert list(w.index) == [1, 2, 3] and set(w.columns) == set(TASKS)
    assert np.isfinite(w.to_numpy()).all() and (w.to_numpy() >= 0).all()
    click = (
        hist[(hist["split"] == "train") & (hist["task"] == "click") & (hist["metric"] == "loss")]
        .sort_values("epoch")["value"]
        .to_numpy()
    )
    assert click[-1] < click[0]
    assert math.isfinite(result.best_score)

    if name == "ScheduledWeights":
        np.testing.assert_allclose(w["purchase"], [2.0, 1.6, 1.28])
    elif name == "DWA":
        np.testing.assert_allclose(w.loc[[1, 2]].to_numpy(), 1.0)
        assert w.loc[3].sum() == pytest.approx(3.0) and not np.allclose(w.loc[3], 1.0)
    elif name in ("RLW", "FAMO"):
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    elif name == "UncertaintyWeighting":
        assert not torch.equal(weighting.log_vars.detach(), torch.zeros(3))  # s_k were trained


def test_rlw_inside_fit_is_reproducible(parts):
    train, valid = parts
    runs = [
        mb.fit(
            _shared_bottom(train.schema), train, valid, epochs=2, weighting=RLW(seed=5), **FAST
        ).history
        for _ in range(2)
    ]
    assert runs[0].equals(runs[1])
