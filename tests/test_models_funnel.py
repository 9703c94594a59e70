"""The funnel models ESMM and AITM beyond the common contract of ``test_models.py``."""

from __future__ import annotations

import copy
import decimal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

import mtlbook as mb
from mtlbook.data import MultiTaskData
from mtlbook.models import AITM, ESMM, SharedBottom
from mtlbook.models.aitm import calibration_penalty
from mtlbook.models.esmm import ctcvr_logit


def _batch(data, n: int = 512):
    return next(iter(data.loader(batch_size=n, shuffle=False)))


def _three_steps(n: int = 200, seed: int = 0) -> MultiTaskData:
    """Three nested binary steps (view ⊇ click ⊇ buy) on four dense features."""
    rng = np.random.default_rng(seed)
    view = rng.random(n) < 0.6
    click = view & (rng.random(n) < 0.5)
    buy = click & (rng.random(n) < 0.5)
    return MultiTaskData(
        dense=rng.standard_normal((n, 4)),
        dense_names=["a", "b", "c", "d"],
        labels={"view": view * 1.0, "click": click * 1.0, "buy": buy * 1.0},
        tasks={"view": "binary", "click": "binary", "buy": "binary"},
    )


def _reference_logit(a: float, b: float) -> float:
    """``logit(σ(a)σ(b))`` with 60 significant digits (standard-library decimals)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        one = decimal.Decimal(1)
        p = one / (one + (-decimal.Decimal(a)).exp()) / (one + (-decimal.Decimal(b)).exp())
        return float((p / (one - p)).ln())


# ---------------------------------------------------------------------------------- ESMM
def test_esmm_pctcvr_is_pctr_times_pcvr(funnel_small):
    model = ESMM(funnel_small.schema)
    assert (model.ctr_task, model.ctcvr_task) == ("click", "purchase")
    pred = model.predict(funnel_small, batch_size=700)
    assert list(pred.columns) == ["click", "purchase", "dwell_time", "pctr", "pcvr", "pctcvr"]
    assert len(pred) == len(funnel_small)
    for column in ("pctr", "pcvr", "pctcvr"):
        assert pred[column].between(0, 1).all(), column
    np.testing.assert_allclose(pred["pctcvr"], pred["pctr"] * pred["pcvr"], rtol=1e-6)
    np.testing.assert_allclose(pred["purchase"], pred["pctcvr"], rtol=1e-5)
    np.testing.assert_array_equal(pred["click"], pred["pctr"])
    # The funnel logits of one batch say the same.
    batch = _batch(funnel_small, 64)
    logits = model.funnel(batch)
    torch.testing.assert_close(
        torch.sigmoid(logits["ctcvr"]), torch.sigmoid(logits["ctr"]) * torch.sigmoid(logits["cvr"])
    )
    torch.testing.assert_close(model(batch)["purchase"], logits["ctcvr"])


def test_ctcvr_logit_matches_log_odds():
    grid = torch.linspace(-8, 8, 33, dtype=torch.float64)
    a, b = torch.meshgrid(grid, grid, indexing="ij")
    p = torch.sigmoid(a) * torch.sigmoid(b)
    torch.testing.assert_close(ctcvr_logit(a, b), torch.log(p / (1 - p)))


@pytest.mark.parametrize(
    ("a", "b"), [(30, 30), (30, -30), (-30, 30), (-30, -30), (30, 0), (0, 30), (-30, 0), (12, 25)]
)
def test_ctcvr_logit_is_stable_for_extreme_logits(a, b):
    ta = torch.tensor([float(a)], requires_grad=True)
    tb = torch.tensor([float(b)], requires_grad=True)
    out = ctcvr_logit(ta, tb)  # float32, as in training
    assert out.item() == pytest.approx(_reference_logit(a, b), rel=1e-5, abs=1e-4)
    # Log-loss on the logit and its gradients stay finite for either label.
    for y in (0.0, 1.0):
        ta.grad = tb.grad = None
        F.binary_cross_entropy_with_logits(ctcvr_logit(ta, tb), torch.tensor([y])).backward()
        assert torch.isfinite(ta.grad).all() and torch.isfinite(tb.grad).all()


def test_ctcvr_logit_finite_far_beyond_float_saturation():
    big = torch.tensor([200.0, -200.0, 1e4, -1e4])
    for a in big:
        for b in big:
            assert torch.isfinite(ctcvr_logit(a, b)), (a, b)
    assert ctcvr_logit(torch.tensor(200.0), torch.tensor(200.0)).item() == pytest.approx(
        200 - np.log(2), abs=1e-3
    )


def test_esmm_losses_are_ctr_and_ctcvr_only(funnel_small):
    model = ESMM(funnel_small.schema)
    batch = _batch(funnel_small)
    losses = model.task_losses(model(batch), batch)
    assert list(losses) == list(funnel_small.task_names)  # no extra CVR term
    logits = model.funnel(batch)
    pctcvr = torch.sigmoid(logits["ctr"]) * torch.sigmoid(logits["cvr"])
    expected = F.binary_cross_entropy(pctcvr, batch.labels["purchase"])
    torch.testing.assert_close(losses["purchase"], expected)
    expected = F.binary_cross_entropy_with_logits(logits["ctr"], batch.labels["click"])
    torch.testing.assert_close(losses["click"], expected)
    assert model.regularization() is None


def _tower_grads(towers, first=None) -> dict[int, list[torch.Tensor]]:
    """Each task's slice of the towers' gradients, by the task's index in the schema: the
    stacked ``towers`` in task order, or, with ``first = (index, tower)``, that tower for task
    ``index`` and the stacked ``towers`` for the other tasks in order."""

    def params(module):  # their gradients; zeros for a tensor no loss has reached yet
        return [
            torch.zeros_like(p) if p.grad is None else p.grad
            for p in [*module.weights, *module.biases]
        ]

    if first is None:
        return {k: [g[k] for g in params(towers)] for k in range(towers.n_parallel)}
    index, tower = first
    others = [k for k in range(towers.n_parallel + 1) if k != index]
    grads = {k: [g[j] for g in params(towers)] for j, k in enumerate(others)}
    grads[index] = [g[0] for g in params(tower)]
    return grads


@pytest.mark.parametrize("backbone", ["mlp", SharedBottom])
def test_cvr_tower_learns_only_through_the_product(funnel_small, backbone):
    model = ESMM(funnel_small.schema, backbone=backbone)
    names = list(funnel_small.task_names)
    ctr, cvr, dwell = (names.index(n) for n in ("click", "purchase", "dwell_time"))
    batch = _batch(funnel_small)

    def tower_grads(task):
        model.zero_grad(set_to_none=False)
        model.task_losses(model(batch), batch)[task].backward()
        if backbone == "mlp":
            return _tower_grads(model.towers, first=(ctr, model.ctr_tower))
        return _tower_grads(model.backbone.towers)

    grads = tower_grads("click")  # the CTR loss alone never reaches the CVR tower
    assert all(g.abs().sum() > 0 for g in grads[ctr])
    assert all(torch.count_nonzero(g) == 0 for g in grads[cvr] + grads[dwell])
    grads = tower_grads("purchase")  # the CTCVR loss reaches both through the product
    assert all(g.abs().sum() > 0 for g in grads[ctr] + grads[cvr])
    assert all(torch.count_nonzero(g) == 0 for g in grads[dwell])
    grads = tower_grads("dwell_time")
    assert all(torch.count_nonzero(g) == 0 for g in grads[cvr])


def test_esmm_task_choice(funnel_small, funnel_binary, correlated_binary):
    for data in (funnel_small, funnel_binary):
        model = ESMM(data.schema)
        assert (model.ctr_task, model.ctcvr_task) == ("click", "purchase")
    model = ESMM(correlated_binary.schema)
    assert (model.ctr_task, model.ctcvr_task) == ("task1", "task2")
    model = ESMM(correlated_binary.schema, ctr_task="task2")
    assert (model.ctr_task, model.ctcvr_task) == ("task2", "task1")
    model = ESMM(correlated_binary.schema, ctcvr_task="task1")
    assert (model.ctr_task, model.ctcvr_task) == ("task2", "task1")
    out = model(_batch(correlated_binary, 16))
    assert list(out) == ["task1", "task2"]


def test_esmm_errors(funnel_small, correlated_small):
    schema = funnel_small.schema
    with pytest.raises(ValueError, match="at least 2 binary tasks"):
        ESMM(funnel_small.select_tasks(["click", "dwell_time"]).schema)
    with pytest.raises(ValueError, match="at least 2 binary tasks"):
        ESMM(correlated_small.schema)
    with pytest.raises(ValueError, match="at least 2 tasks"):
        ESMM(funnel_small.select_tasks(["click"]).schema)
    with pytest.raises(ValueError, match="'buy' is not a task"):
        ESMM(schema, ctcvr_task="buy")
    with pytest.raises(ValueError, match="must be a binary task"):
        ESMM(schema, ctcvr_task="dwell_time")
    with pytest.raises(ValueError, match="must differ"):
        ESMM(schema, ctr_task="click", ctcvr_task="click")
    with pytest.raises(ValueError, match="backbone"):
        ESMM(schema, backbone="mmoe")
    with pytest.raises(TypeError, match="MultiTaskModel"):
        ESMM(schema, backbone=lambda s: torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="tower_units"):
        ESMM(schema, tower_units=())


def test_esmm_with_a_backbone(funnel_small):
    model = ESMM(funnel_small.schema, backbone=SharedBottom, seed=3)
    same = ESMM(funnel_small.schema, backbone=SharedBottom, seed=3)
    assert all(
        torch.equal(p, q) for p, q in zip(model.parameters(), same.parameters(), strict=True)
    )
    assert [id(p) for p in model.shared_parameters()] == [
        id(p) for p in model.backbone.shared_parameters()
    ]
    pred = model.predict(funnel_small)
    np.testing.assert_allclose(pred["pctcvr"], pred["pctr"] * pred["pcvr"], rtol=1e-6)
    assert model.gate_records() == [] and model.regularization() is None


def test_esmm_recovers_the_pcvr_ranking():
    """Trained on click and click-and-buy labels only, ESMM ranks the true post-click
    conversion rate of held-out clicked impressions well above chance."""
    data = mb.simulate_funnel(
        20_000, seed=3, click_rate=0.1, purchase_rate=0.03, n_users=200, n_items=100
    )
    train, valid, test = data.split((0.7, 0.15, 0.15), seed=0)
    model = ESMM(data.schema, seed=0)
    mb.fit(model, train, valid, epochs=3, batch_size=256, lr=3e-3, device="cpu", progress=False)
    pred = model.predict(test)
    clicked = test.labels["click"] == 1
    truth = test.truth["pcvr"].to_numpy()[clicked]
    auc = roc_auc_score(truth > np.median(truth), pred["pcvr"].to_numpy()[clicked])
    assert auc > 0.6


# ---------------------------------------------------------------------------------- AITM
def test_calibration_penalty():
    non_increasing = torch.tensor([[0.9, 0.5, 0.2], [0.4, 0.5, 0.1], [0.1, 0.5, 0.0]])
    assert calibration_penalty(non_increasing).item() == 0.0
    rising = torch.tensor([[0.2, 0.6], [0.5, 0.1]])  # the first sample rises by 0.3
    assert calibration_penalty(rising).item() == pytest.approx(0.15)
    three = torch.tensor([[0.2], [0.5], [0.9]])  # rises by 0.3, then by 0.4
    assert calibration_penalty(three).item() == pytest.approx(0.7)


def test_aitm_regularization_is_the_weighted_calibrator(funnel_binary):
    model = AITM(funnel_binary.schema, calibrator_weight=0.6)
    with pytest.raises(RuntimeError, match="forward"):
        model.regularization()
    batch = _batch(funnel_binary, 64)
    click, purchase = (model.task_names.index(n) for n in ("click", "purchase"))
    bias = model.heads.biases[0]
    with torch.no_grad():  # purchase far likelier than click: every sample violates
        bias[click], bias[purchase] = -5.0, 5.0
    out = model(batch)
    probs = torch.sigmoid(torch.stack([out["click"], out["purchase"]]))
    reg = model.regularization()
    assert reg.item() > 0.5
    torch.testing.assert_close(reg, 0.6 * calibration_penalty(probs))
    reg.backward()
    assert model.heads.biases[0].grad[purchase].item() > 0  # pushes purchase down
    with torch.no_grad():  # purchase far less likely than click: no violation
        bias[click], bias[purchase] = 5.0, -5.0
    model(batch)
    assert model.regularization().item() == 0.0
    assert AITM(funnel_binary.schema, calibrator_weight=0.0).regularization() is None


def test_ait_attention_weights_are_recorded(funnel_small):
    model = AITM(funnel_small.schema)
    assert model.sequence == ("click", "purchase")
    batch = _batch(funnel_small, 50)
    for _ in range(2):  # records are replaced, not appended, by each forward pass
        model(batch)
        records = model.gate_records()
        assert len(records) == 1
    (record,) = records
    assert (record.level, record.gate, record.experts) == (2, "purchase", ("transfer", "own"))
    assert record.weights.shape == (50, 2) and not record.weights.requires_grad
    assert (record.weights >= 0).all()
    torch.testing.assert_close(record.weights.sum(1), torch.ones(50))


def test_aitm_three_steps_and_custom_sequence():
    data = _three_steps()
    batch = _batch(data, 32)
    model = AITM(data.schema)
    out = model(batch)
    assert list(out) == ["view", "click", "buy"]
    assert [(r.level, r.gate) for r in model.gate_records()] == [(2, "click"), (3, "buy")]
    reverse = AITM(data.schema, sequence=["buy", "view"])
    reverse(batch)
    assert [(r.level, r.gate) for r in reverse.gate_records()] == [(2, "view")]
    assert reverse.ait.n_steps == 1


def test_aitm_information_flows_forward_only(funnel_small):
    """The first step's loss reaches neither the later towers nor the AIT module; the later
    step's loss reaches the earlier tower through the transfer unit."""
    model = AITM(funnel_small.schema)
    click, purchase = (model.task_names.index(n) for n in ("click", "purchase"))
    batch = _batch(funnel_small)

    def loss_of(task):
        model.zero_grad(set_to_none=False)
        model.task_losses(model(batch), batch)[task].backward()

    loss_of("click")
    assert all(torch.count_nonzero(p.grad) == 0 for p in model.ait.parameters())
    grads = _tower_grads(model.towers, first=(click, model.first_tower))
    assert all(g.abs().sum() > 0 for g in grads[click])
    assert all(torch.count_nonzero(g) == 0 for g in grads[purchase])
    loss_of("purchase")
    assert all(p.grad.abs().sum() > 0 for p in model.ait.parameters())
    grads = _tower_grads(model.towers, first=(click, model.first_tower))
    assert all(g.abs().sum() > 0 for g in grads[click] + grads[purchase])


def test_aitm_trains_on_the_funnel(funnel_binary):
    train, valid = funnel_binary.split((0.8, 0.2), seed=0)
    model = AITM(funnel_binary.schema, seed=0)
    result = mb.fit(
        model, train, valid, epochs=3, batch_size=128, lr=3e-3, device="cpu", progress=False
    )
    hist = result.history
    loss = hist[(hist["split"] == "train") & (hist["task"] == "all") & (hist["metric"] == "loss")]
    values = loss.sort_values("epoch")["value"].to_numpy()
    assert np.isfinite(values).all() and values[-1] < values[0]
    pred = model.predict(valid)
    assert pred["purchase"].mean() < pred["click"].mean()
    copy.deepcopy(model)  # the recorded probabilities do not block copying


def test_aitm_errors(funnel_small, correlated_small):
    schema = funnel_small.schema
    with pytest.raises(ValueError, match="at least 2 binary tasks"):
        AITM(funnel_small.select_tasks(["click", "dwell_time"]).schema)
    with pytest.raises(ValueError, match="at least 2 binary tasks"):
        AITM(correlated_small.schema)
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['buy'\]"):
        AITM(schema, sequence=["click", "buy"])
    with pytest.raises(ValueError, match="repeats"):
        AITM(schema, sequence=["click", "click"])
    with pytest.raises(ValueError, match="at least 2 steps"):
        AITM(schema, sequence=["click"])
    with pytest.raises(ValueError, match="must be binary"):
        AITM(schema, sequence=["click", "dwell_time"])
    with pytest.raises(ValueError, match="calibrator_weight"):
        AITM(schema, calibrator_weight=-1.0)


# ---------------------------------------------------------------------- no masked funnel
def _masked(data: MultiTaskData, task: str, by: str = "click") -> MultiTaskData:
    """``data`` with ``task`` declared on the rows where ``by`` is 1 only."""
    return MultiTaskData(
        dense=data.dense,
        categorical=data.categorical,
        labels=data.labels,
        tasks=data.schema.tasks,
        masks={**data.masks, task: data.labels[by] == 1},
        dense_names=data.schema.dense,
        categorical_names=data.schema.categorical,
        cardinalities=data.schema.cardinalities,
    )


@pytest.mark.parametrize("model_cls", [ESMM, AITM])
@pytest.mark.parametrize("task", ["click", "purchase"])
def test_funnel_models_refuse_a_masked_funnel_step(funnel_binary, model_cls, task):
    masked = _masked(funnel_binary, task)
    train, valid = masked.split((0.8, 0.2), seed=0)
    model = model_cls(masked.schema)
    with pytest.raises(ValueError, match=rf"'{task}'.*masked"):
        mb.fit(model, train, valid, epochs=1, device="cpu", progress=False)
    with pytest.raises(ValueError, match=rf"'{task}'.*masked"):
        mb.fit_population(
            lambda seed: model_cls(masked.schema, seed=seed),
            train,
            valid,
            seeds=[0, 1],
            epochs=1,
            device="cpu",
            progress=False,
        )


def test_esmm_trains_beside_a_masked_task_outside_the_funnel(funnel_small):
    # dwell_time is masked to the clicks in the simulator; it is not a step of the funnel.
    assert "dwell_time" in funnel_small.masks
    train, valid = funnel_small.split((0.8, 0.2), seed=0)
    for model in (ESMM(funnel_small.schema), AITM(funnel_small.schema)):
        mb.fit(model, train, valid, epochs=1, device="cpu", progress=False)
