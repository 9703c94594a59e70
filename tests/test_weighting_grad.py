"""Gradient-based weighting strategies: each one's defining property on plain vectors and
through a model, the gradients they leave in the parameters, runs inside fit() with several
model families, and the errors for models that share nothing."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

import mtlbook as mb
from mtlbook.data import Batch, MultiTaskData
from mtlbook.models import PLE, CrossStitch, MMoE, SharedBottom, SingleTask, Sluice, SoftSharing
from mtlbook.weighting import (
    IMTL,
    MGDA,
    CAGrad,
    EqualWeight,
    GradNorm,
    PCGrad,
    Weighting,
    standard_strategies,
)
from mtlbook.weighting._grads import task_gradients
from mtlbook.weighting.cagrad import cagrad_direction
from mtlbook.weighting.imtl import imtl_weights
from mtlbook.weighting.mgda import min_norm_weights
from mtlbook.weighting.pcgrad import project_conflicting

FAST = {"batch_size": 256, "device": "cpu", "progress": False, "lr": 3e-3}

STRATEGIES = {
    "GradNorm": GradNorm,
    "PCGrad": PCGrad,
    "MGDA": MGDA,
    "MGDA-loss+": lambda: MGDA(normalization="loss+"),
    "CAGrad": CAGrad,
    "IMTL": IMTL,
    "IMTL-G": lambda: IMTL(mode="grad"),
    "IMTL-L": lambda: IMTL(mode="loss"),
}

MODELS = {
    "SharedBottom": lambda s: SharedBottom(s, bottom_units=(16,), tower_units=(8,), seed=0),
    "MMoE": lambda s: MMoE(s, n_experts=2, expert_units=(8,), tower_units=(8,), seed=0),
    "PLE": lambda s: PLE(s, n_levels=2, expert_units=(8,), tower_units=(8,), seed=0),
    "CrossStitch": lambda s: CrossStitch(s, hidden_units=(8, 8), seed=0),
}


# ---------------------------------------------------------------------- helpers
def _line_data(sign: float, n: int = 256, seed: int = 0) -> MultiTaskData:
    """Two regression tasks on the same signal, ``b = sign · a``: they agree (``sign = 1``) or
    pull the shared layers in opposite directions (``sign = -1``)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    a = 3.0 * x[:, 0] + x[:, 1]
    return MultiTaskData(
        dense=x,
        labels={"a": a, "b": sign * a},
        tasks={"a": "regression", "b": "regression"},
        dense_names=[f"x{i}" for i in range(4)],
    )


def _twin_towers(data: MultiTaskData) -> SharedBottom:
    """A SharedBottom whose two linear heads start identical, so that opposite targets give
    opposite gradients on the shared bottom."""
    model = SharedBottom(data.schema, bottom_units=(8,), tower_units=(), seed=0)
    with torch.no_grad():
        for p in model.towers.parameters():
            p[1] = p[0]
    return model


def _batch(data: MultiTaskData, size: int = 512):
    return next(iter(data.loader(batch_size=size, shuffle=False)))


def _step(model, weighting: Weighting, batch, setup: bool = True) -> torch.Tensor:
    """One training step's backward: gradients are left in ``.grad``."""
    if setup:
        weighting.setup(model.task_names, model)
    model.zero_grad(set_to_none=True)
    losses = model.task_losses(model(batch), batch)
    return weighting.backward(losses, model, model.regularization())


def _task_grads(model, batch) -> torch.Tensor:
    """``[T, P]`` task gradients on the shared parameters, from a fresh forward pass."""
    losses = model.task_losses(model(batch), batch)
    return task_gradients(list(losses.values()), model.shared_parameters()).detach()


def _flat_grad(params) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in params])


def _specific(model):
    shared = {id(p) for p in model.shared_parameters()}
    return [p for p in model.parameters() if id(p) not in shared]


# ---------------------------------------------------------------------- PCGrad
def test_pcgrad_projection_on_vectors():
    conflicting = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    out = project_conflicting(conflicting, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))
    assert torch.dot(out[0], conflicting[1]) >= -1e-7
    assert torch.dot(out[1], conflicting[0]) >= -1e-7
    agreeing = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    torch.testing.assert_close(project_conflicting(agreeing, torch.Generator()), agreeing)


def test_pcgrad_projects_onto_the_original_gradients():
    grads = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, -1.0, 0.5]])
    out = project_conflicting(grads, torch.Generator().manual_seed(3))
    # The same visiting orders, drawn again, with the rule written out: project onto g_j.
    gen = torch.Generator().manual_seed(3)
    for i in range(3):
        others = [j for j in range(3) if j != i]
        g = grads[i].clone()
        for k in torch.randperm(2, generator=gen).tolist():
            gj = grads[others[k]]
            if torch.dot(g, gj) < 0:
                g = g - torch.dot(g, gj) / torch.dot(gj, gj) * gj
        torch.testing.assert_close(out[i], g)


@pytest.mark.parametrize("sign", [-1.0, 1.0])
def test_pcgrad_through_a_model(sign):
    data = _line_data(sign)
    batch = _batch(data)
    model, reference = _twin_towers(data), _twin_towers(data)
    grads = _task_grads(model, batch)  # [2, P]
    conflict = float(grads[0] @ grads[1]) < 0
    assert conflict == (sign < 0)  # the data do what they are built for

    pcgrad = PCGrad(seed=0)
    _step(model, pcgrad, batch)
    _step(reference, EqualWeight(), batch)
    update = _flat_grad(model.shared_parameters())
    expected = project_conflicting(grads, torch.Generator().manual_seed(0)).sum(0)
    torch.testing.assert_close(update, expected)
    if conflict:
        # Each projected gradient is orthogonal to the other task's gradient, so the update
        # raises neither loss to first order.
        assert (grads @ update >= -1e-6 * update.norm() * grads.norm(dim=1)).all()
        assert min(pcgrad.weights.values()) < 1.0
    else:
        torch.testing.assert_close(update, _flat_grad(reference.shared_parameters()))
        assert pcgrad.weights == {"a": 1.0, "b": 1.0}
    # The towers get the ordinary gradient of the summed loss.
    torch.testing.assert_close(_flat_grad(_specific(model)), _flat_grad(_specific(reference)))


def test_pcgrad_leaves_the_global_rng_alone(funnel_small):
    batch = _batch(funnel_small)
    grads = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        model = MODELS["SharedBottom"](funnel_small.schema)
        _step(model, PCGrad(seed=5), batch)
        assert torch.equal(torch.get_rng_state(), before)
        grads.append(_flat_grad(model.parameters()))
    torch.testing.assert_close(grads[0], grads[1])  # the order depends on `seed` only


# ---------------------------------------------------------------------- MGDA
def test_mgda_two_tasks_closed_form():
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        g1, g2 = torch.randn(2, 5, generator=gen, dtype=torch.float64)
        alpha = min_norm_weights(torch.stack([g1, g2]) @ torch.stack([g1, g2]).T)
        expected = float(((g2 - g1) @ g2) / (g1 - g2).pow(2).sum())
        assert float(alpha[0]) == pytest.approx(min(max(expected, 0.0), 1.0), abs=1e-12)
        assert float(alpha.sum()) == pytest.approx(1.0) and (alpha >= 0).all()
    # Clipped: g1 lies between the origin and g2, so g1 itself is the min-norm point.
    g = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(
        min_norm_weights(g @ g.T), torch.tensor([1.0, 0.0], dtype=torch.float64)
    )
    for bad in (torch.zeros(0, 0), torch.zeros(2, 3), torch.zeros(3)):
        with pytest.raises(ValueError, match="gram must be a non-empty square"):
            min_norm_weights(bad)


def test_mgda_frank_wolfe_finds_the_min_norm_point():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    for n_tasks in (3, 4, 5):
        grads = torch.randn(n_tasks, 8, generator=gen, dtype=torch.float64)
        alpha = min_norm_weights(grads @ grads.T)
        assert (alpha >= 0).all() and float(alpha.sum()) == pytest.approx(1.0)
        # Optimality (KKT): v·g_t ≥ ‖v‖² for every t, with equality where α_t > 0.
        v = alpha @ grads
        slack = (grads @ v - v @ v) / (v @ v)  # [T]
        assert (slack >= -1e-3).all()
        assert (slack[alpha > 1e-2].abs() < 1e-3).all()
        # No point of the hull is shorter (checked on random points).
        hull = torch.distributions.Dirichlet(torch.ones(n_tasks, dtype=torch.float64))
        others = hull.sample((2000,)) @ grads
        assert float(v.norm()) <= float(others.norm(dim=1).min()) + 1e-6


def test_mgda_through_a_model(funnel_small):
    batch = _batch(funnel_small)
    model, reference = (MODELS["SharedBottom"](funnel_small.schema) for _ in range(2))
    grads = _task_grads(model, batch)
    mgda = MGDA()
    _step(model, mgda, batch)
    _step(reference, EqualWeight(), batch)
    alpha = torch.tensor(list(mgda.weights.values()))
    assert (alpha >= 0).all() and float(alpha.sum()) == pytest.approx(1.0)
    expected = min_norm_weights((grads @ grads.T).double())
    torch.testing.assert_close(alpha, expected.float())
    torch.testing.assert_close(_flat_grad(model.shared_parameters()), alpha @ grads)
    torch.testing.assert_close(_flat_grad(_specific(model)), _flat_grad(_specific(reference)))


def test_mgda_upper_bound_uses_the_shared_representation(funnel_small):
    batch = _batch(funnel_small)
    model = MODELS["SharedBottom"](funnel_small.schema)
    ub = MGDA(upper_bound=True)
    _step(model, ub, batch)
    losses = model.task_losses(model(batch), batch)
    rep = model.shared_representation()
    grads = task_gradients(list(losses.values()), [rep])
    expected = min_norm_weights((grads @ grads.T).double())
    np.testing.assert_allclose(list(ub.weights.values()), expected.numpy(), atol=1e-6)
    copy.deepcopy(model)  # the recorded representation does not block copying

    with pytest.raises(ValueError, match=r"MGDA-UB needs the shared representation.*MMoE"):
        _step(MODELS["MMoE"](funnel_small.schema), MGDA(upper_bound=True), batch)
    with pytest.raises(ValueError, match="normalization must be one of"):
        MGDA(normalization="max")


# ---------------------------------------------------------------------- CAGrad
def test_cagrad_with_c0_is_the_average_gradient(funnel_small):
    grads = torch.randn(3, 7, generator=torch.Generator().manual_seed(0))
    direction, coef = cagrad_direction(grads, c=0.0)
    torch.testing.assert_close(direction, grads.mean(0))
    torch.testing.assert_close(coef, torch.full((3,), 1 / 3))

    # Through a model (Sluice: the regulariser reaches the shared columns): with c = 0 the
    # official scaling by T makes CAGrad exactly equal weighting.
    batch = _batch(funnel_small)
    model, reference = (Sluice(funnel_small.schema, hidden_units=(8, 8), seed=0) for _ in range(2))
    cagrad = CAGrad(c=0.0)
    _step(model, cagrad, batch)
    _step(reference, EqualWeight(), batch)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)
    assert cagrad.weights == pytest.approx(dict.fromkeys(funnel_small.task_names, 1.0))


def test_cagrad_improves_the_worst_task():
    gen = torch.Generator().manual_seed(2)
    grads = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    grads[1] = -0.8 * grads[0] + 0.3 * grads[1]  # a conflict
    c = 0.5
    direction, coef = cagrad_direction(grads, c)
    d = direction * (1 + c * c)  # the paper's d
    g0 = grads.mean(0)
    torch.testing.assert_close(coef @ grads, direction)
    assert float((d - g0).norm()) == pytest.approx(c * float(g0.norm()), rel=1e-6)
    worst = float((grads @ d).min())
    assert worst > float((grads @ g0).min())
    # d maximises the worst improvement over the ball ‖d − g_0‖ ≤ c‖g_0‖ (random points).
    torch.manual_seed(0)
    u = torch.randn(5000, 6, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True) * torch.rand(5000, 1, dtype=torch.float64)
    ball = g0 + c * float(g0.norm()) * u
    assert worst >= float((ball @ grads.T).min(dim=1).values.max()) - 1e-6


# ---------------------------------------------------------------------- IMTL-G
def test_imtl_equal_projections_on_vectors():
    gen = torch.Generator().manual_seed(0)
    for n_tasks in (2, 3, 4):
        scales = torch.tensor([1.0, 10.0, 0.1, 3.0][:n_tasks], dtype=torch.float64)
        grads = torch.randn(n_tasks, 8, generator=gen, dtype=torch.float64) * scales[:, None]
        alpha = imtl_weights(grads)
        assert float(alpha.sum()) == pytest.approx(1.0)
        g = alpha @ grads
        units = grads / grads.norm(dim=1, keepdim=True)
        projections = units @ g
        torch.testing.assert_close(projections, projections[:1].expand(n_tasks))
        assert float(projections[0]) > 0


def test_imtl_through_a_model(funnel_small):
    batch = _batch(funnel_small)
    model, reference = (MODELS["MMoE"](funnel_small.schema) for _ in range(2))
    grads = _task_grads(model, batch).double()
    imtl = IMTL()
    _step(model, imtl, batch)
    _step(reference, EqualWeight(), batch)
    update = _flat_grad(model.shared_parameters()).double()
    projections = (grads / grads.norm(dim=1, keepdim=True)) @ update
    torch.testing.assert_close(projections, projections[:1].expand(3), rtol=1e-4, atol=1e-6)
    assert sum(imtl.weights.values()) == pytest.approx(1.0)
    torch.testing.assert_close(_flat_grad(_specific(model)), _flat_grad(_specific(reference)))


def _set_log_scales(imtl: IMTL, values) -> None:
    with torch.no_grad():
        imtl.parameters()[0].copy_(torch.tensor(values))


@pytest.mark.parametrize("mode", ["hybrid", "loss"])
def test_imtl_loss_scales_and_their_gradient(funnel_small, mode):
    """IMTL-L: the losses become e^s L − s; s_t gets e^{s_t} L_t − 1, the model e^{s_t} ∇L_t."""
    batch = _batch(funnel_small)
    model, reference = (MODELS["MMoE"](funnel_small.schema) for _ in range(2))
    imtl = IMTL(mode=mode)
    imtl.setup(model.task_names, model)
    s = torch.tensor([0.3, -0.2, 0.5])
    _set_log_scales(imtl, s.tolist())
    _step(model, imtl, batch, setup=False)
    losses = model.task_losses(model(batch), batch)
    values = torch.stack(list(losses.values())).detach()
    torch.testing.assert_close(imtl.parameters()[0].grad, s.exp() * values - 1)
    assert imtl.loss_scales == pytest.approx(
        dict(zip(model.task_names, s.exp().tolist(), strict=True))
    )
    # The towers (every parameter in mode "loss") get the gradient of Σ e^{s_t} L_t.
    ref_losses = reference.task_losses(reference(batch), batch)
    scaled = s.exp() * torch.stack(list(ref_losses.values()))  # [T]
    grads = task_gradients(list(scaled), reference.shared_parameters()).detach()  # [T, P]
    scaled.sum().backward()
    params = _specific(model) if mode == "hybrid" else list(model.parameters())
    ref_params = _specific(reference) if mode == "hybrid" else list(reference.parameters())
    torch.testing.assert_close(_flat_grad(params), _flat_grad(ref_params))
    if mode == "hybrid":  # IMTL-G on the scaled losses' gradients
        alpha = imtl_weights(grads).float()
        torch.testing.assert_close(
            _flat_grad(model.shared_parameters()), alpha @ grads, rtol=1e-4, atol=1e-7
        )
        expected = (alpha * s.exp()).tolist()  # the factor on each raw gradient
        assert list(imtl.weights.values()) == pytest.approx(expected, rel=1e-5)
    else:
        assert list(imtl.weights.values()) == pytest.approx(s.exp().tolist())


def test_imtl_modes_and_names(funnel_small):
    assert IMTL().mode == "hybrid" and IMTL().name == "IMTL"  # the paper's full method
    assert IMTL(mode="grad").name == "IMTL-G" and IMTL(mode="loss").name == "IMTL-L"
    assert standard_strategies()["imtl"]().mode == "hybrid"
    grad_only = IMTL(mode="grad")
    grad_only.setup(funnel_small.task_names, MODELS["MMoE"](funnel_small.schema))
    assert grad_only.parameters() == []
    with pytest.raises(ValueError, match="mode must be one of"):
        IMTL(mode="both")
    # IMTL-L needs no shared parameters: it only rescales the losses.
    IMTL(mode="loss").setup(funnel_small.task_names, SingleTask(funnel_small.schema))


def test_imtl_loss_balances_the_scaled_losses():
    """Trained, every e^{s_t} L_t moves towards 1: the large task is scaled down."""
    data = _toy_scales()
    train, valid = data.split((0.75, 0.25), seed=0)
    model = SharedBottom(data.schema, bottom_units=(32,), tower_units=(), seed=0)
    imtl = IMTL(mode="loss")
    mb.fit(
        model,
        train,
        valid,
        epochs=4,
        batch_size=64,
        lr=3e-2,
        device="cpu",
        progress=False,
        weighting=imtl,
    )
    # The balance point e^s = 1 / L: the loss in the hundreds is scaled down, the one below 1 up.
    scales = imtl.loss_scales
    assert scales["sigma100"] < 1.0 < scales["sigma1"]


# ---------------------------------------------------------------------- empty tasks
def _without_labels(batch: Batch, task: str) -> Batch:
    """``batch`` in which ``task`` has no labelled row (its mask is all false)."""
    empty = torch.zeros(len(batch), dtype=torch.bool)
    return Batch(
        dense=batch.dense,
        categorical=batch.categorical,
        labels=batch.labels,
        masks={**batch.masks, task: empty},
    )


@pytest.mark.parametrize("strategy", ["PCGrad", "MGDA", "MGDA-UB", "CAGrad", "IMTL", "IMTL-G"])
def test_a_task_without_labelled_rows_sits_the_step_out(funnel_small, strategy):
    make = {"MGDA-UB": lambda: MGDA(upper_bound=True)}.get(strategy) or STRATEGIES[strategy]
    batch = _without_labels(_batch(funnel_small), "dwell_time")
    present = ("click", "purchase")
    model, reference = (MODELS["SharedBottom"](funnel_small.schema) for _ in range(2))
    weighting = make()
    _step(model, weighting, batch)
    update = _flat_grad(model.shared_parameters())
    # Left in, the empty task's zero gradient made MGDA's and IMTL's combination ~1e-15.
    assert float(update.norm()) > 1e-3
    # The same step as the strategy set up for the two tasks that have labels.
    two = make()
    two.setup(present, reference)
    reference.zero_grad(set_to_none=True)
    losses = reference.task_losses(reference(batch), batch)
    two.backward({t: losses[t] for t in present}, reference, reference.regularization())
    torch.testing.assert_close(update, _flat_grad(reference.shared_parameters()))
    weights = weighting.weights
    assert [weights[t] for t in present] == pytest.approx([two.weights[t] for t in present])
    if strategy != "PCGrad":  # PCGrad reports 1 for a gradient it did not change
        assert weights["dwell_time"] == 0


def test_gradnorm_keeps_its_weights_in_a_step_with_an_empty_task(funnel_small):
    full = _batch(funnel_small)
    model = MODELS["MMoE"](funnel_small.schema)
    gradnorm = GradNorm()
    _step(model, gradnorm, _without_labels(full, "dwell_time"))
    assert gradnorm.next_weights == dict.fromkeys(funnel_small.task_names, 1.0)
    assert gradnorm._initial is None  # L_i(0) waits for a step in which every task takes part
    assert float(_flat_grad(model.shared_parameters()).norm()) > 0  # the model still trains
    _step(model, gradnorm, full, setup=False)
    assert gradnorm.next_weights != dict.fromkeys(funnel_small.task_names, 1.0)
    losses = model.task_losses(model(full), full)
    torch.testing.assert_close(gradnorm._initial, torch.stack(list(losses.values())).detach())


# ---------------------------------------------------------------------- GradNorm
def _toy_scales(n: int = 512, sigmas=(1.0, 100.0), seed: int = 0) -> MultiTaskData:
    """The paper's toy problem, small: regression targets ``σ_i tanh((B + ε_i) x)`` that share
    ``B`` and differ in their scale ``σ_i``."""
    rng = np.random.default_rng(seed)
    d = 10
    x = rng.standard_normal((n, d))
    base = rng.normal(0.0, 1.0, d) / np.sqrt(d)
    labels = {
        f"sigma{s:g}": s * np.tanh(x @ (base + rng.normal(0.0, 0.35, d) / np.sqrt(d)))
        for s in sigmas
    }
    return MultiTaskData(
        dense=x,
        labels=labels,
        tasks=dict.fromkeys(labels, "regression"),
        dense_names=[f"x{i}" for i in range(d)],
    )


class _WeightLog(mb.Callback):
    def __init__(self, weighting):
        self.weighting, self.steps = weighting, []

    def on_step_end(self, model, step, losses):
        self.steps.append(dict(self.weighting.next_weights))


def test_gradnorm_weights_positive_sum_to_t_and_move_as_in_the_paper():
    data = _toy_scales()
    train, valid = data.split((0.75, 0.25), seed=0)
    model = SharedBottom(data.schema, bottom_units=(32, 32), tower_units=(), seed=0)
    gradnorm = GradNorm()
    log = _WeightLog(gradnorm)
    result = mb.fit(
        model,
        train,
        valid,
        epochs=3,
        batch_size=64,
        device="cpu",
        progress=False,
        weighting=gradnorm,
        callbacks=[log],
    )
    assert gradnorm.layer_names == ["bottom.weights.1"]  # the last shared weight matrix
    assert len(log.steps) == 3 * 6
    for weights in log.steps:
        values = np.array(list(weights.values()))
        assert (values > 0).all()
        assert values.sum() == pytest.approx(2.0, rel=1e-5)
    # The task with the larger output scale has the larger gradient: it is down-weighted.
    first, last = log.steps[0], log.steps[-1]
    assert first["sigma100"] < 1.0 < first["sigma1"]
    assert last["sigma100"] < first["sigma100"] and last["sigma1"] > first["sigma1"]
    # The history holds the weights the epoch's last step applied: the previous step's update.
    hist = result.history
    logged = hist[(hist["metric"] == "weight") & (hist["epoch"] == 3)].set_index("task")["value"]
    assert logged.to_dict() == pytest.approx(log.steps[-2])
    assert gradnorm.weights == pytest.approx(log.steps[-2])


def test_gradnorm_first_step_is_equal_weighting_and_updates_its_weights(funnel_small):
    batch = _batch(funnel_small)
    model, reference = (MODELS["MMoE"](funnel_small.schema) for _ in range(2))
    gradnorm = GradNorm(alpha=0.0)
    assert gradnorm.parameters() == []  # its own optimiser, not fit's
    _step(model, gradnorm, batch)
    _step(reference, EqualWeight(), batch)
    for p, q in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    assert gradnorm.weights == dict.fromkeys(funnel_small.task_names, 1.0)
    # α = 0: the target is the mean gradient norm; the task with the largest one loses weight.
    norms = task_gradients(
        list(model.task_losses(model(batch), batch).values()), gradnorm._layer
    ).norm(dim=1)
    weights = torch.tensor(list(gradnorm.next_weights.values()))
    assert int(weights.argmin()) == int(norms.argmax())
    assert float(weights.sum()) == pytest.approx(3.0)


def test_gradnorm_layer_choice(funnel_small):
    schema = funnel_small.schema
    batch = _batch(funnel_small)
    cases = {
        "SharedBottom": ["bottom.weights.0"],
        "MMoE": ["experts.groups.0.weights.0"],
        "PLE": ["levels.1.experts.groups.1.weights.0"],
        # the last column layer: the last unit's rows reach one task each
        "CrossStitch": ["columns.1.weights.0"],
    }
    for name, expected in cases.items():
        gradnorm = GradNorm()
        gradnorm.setup(schema.task_names, MODELS[name](schema))
        assert gradnorm.layer_names == expected, name
    model = MODELS["SharedBottom"](schema)
    chosen = GradNorm(layer="input.embedding.weight")
    _step(model, chosen, batch)
    assert chosen.layer_names == ["input.embedding.weight"]
    every = GradNorm(layer="all")
    every.setup(schema.task_names, model)
    assert len(every.layer_names) == len(model.shared_parameters())
    with pytest.raises(ValueError, match=r"'towers\.weights\.0' is not a shared parameter"):
        GradNorm(layer="towers.weights.0").setup(schema.task_names, model)
    with pytest.raises(ValueError, match=r"has no parameter 'bottom\.weights\.7'"):
        GradNorm(layer="bottom.weights.7").setup(schema.task_names, model)
    with pytest.raises(ValueError, match="alpha must be"):
        GradNorm(alpha=-1.0)


# ---------------------------------------------------------------------- fit() and errors
@pytest.fixture(scope="module")
def parts(funnel_small):
    return funnel_small.split((0.7, 0.3), seed=0)


@pytest.mark.parametrize(("strategy", "family"), list(itertools.product(STRATEGIES, MODELS)))
def test_strategy_runs_in_fit(parts, strategy, family):
    train, valid = parts
    weighting = STRATEGIES[strategy]()
    result = mb.fit(
        MODELS[family](train.schema), train, valid, epochs=1, weighting=weighting, **FAST
    )
    hist = result.history
    weights = hist[(hist["split"] == "train") & (hist["metric"] == "weight")]
    assert list(weights["task"]) == list(train.task_names)
    assert np.isfinite(weights["value"]).all()
    assert weights["value"].tolist() == pytest.approx(list(weighting.weights.values()))
    assert np.isfinite(hist["value"]).all()


def test_mgda_upper_bound_runs_in_fit(parts):
    train, valid = parts
    result = mb.fit(
        MODELS["SharedBottom"](train.schema),
        train,
        valid,
        epochs=1,
        weighting=MGDA(upper_bound=True),
        **FAST,
    )
    weights = result.history.query("metric == 'weight'")["value"]
    assert len(weights) == 3 and weights.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("strategy", ["GradNorm", "PCGrad", "MGDA", "CAGrad", "IMTL"])
def test_models_without_shared_parameters_are_refused(parts, strategy):
    train, valid = parts
    for model in (
        SingleTask(train.schema, hidden_units=(8,), seed=0),
        SoftSharing(train.schema, hidden_units=(8,), seed=0),
    ):
        name = type(model).__name__
        with pytest.raises(ValueError, match=rf"^{strategy} .*but {name} has none"):
            mb.fit(model, train, valid, epochs=1, weighting=STRATEGIES[strategy](), **FAST)
