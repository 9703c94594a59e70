"""The teaching loss-balancing code of chapter 12.4.1 equals mtlbook.weighting, step by step."""

from __future__ import annotations

import copy

import pytest
import torch

import mtlbook as mb
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.balancing import (
    TeachingGradNorm,
    TeachingUncertainty,
    adam_step,
    manual_loss,
)
from mtlbook.models import SharedBottom
from mtlbook.weighting import FixedWeights, GradNorm, UncertaintyWeighting

LR = 1e-2
STEPS = 4


@pytest.fixture(scope="module", params=["funnel", "correlated"])
def data(request) -> mb.MultiTaskData:
    """A binary and a regression task (with a mask), or two regression tasks."""
    if request.param == "funnel":
        return mb.simulate_funnel(
            800, seed=3, with_dwell_time=True, click_rate=0.2, n_users=50, n_items=40
        ).select_tasks(["click", "dwell_time"])
    return mb.make_correlated_tasks(400, 0.5, seed=3)


def small_model(data: mb.MultiTaskData) -> SharedBottom:
    # two bottom layers, so that the "last shared layer" is not the only one
    return SharedBottom(data.schema, bottom_units=(16, 8), tower_units=(4,), seed=7)


def batches(data: mb.MultiTaskData) -> list:
    return list(data.loader(128, shuffle=False))[:STEPS]


def library_steps(model, weighting, steps) -> list[dict]:
    """What mb.fit does each step: losses -> weighting.backward -> Adam step (the weighting
    set up beforehand, as fit does once before training)."""
    optimizer = torch.optim.Adam([*model.parameters(), *weighting.parameters()], lr=LR)
    record = []
    for batch in steps:
        optimizer.zero_grad()
        total = weighting.backward(model.task_losses(model(batch), batch), model)
        record.append(
            {
                "total": total.detach(),
                "grads": [p.grad.clone() for p in weighting.parameters()],
                "weights": dict(getattr(weighting, "next_weights", weighting.weights)),
            }
        )
        optimizer.step()
    return record


def parameters(model) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters())


def test_manual_loss_and_adam_step_equal_fixed_weights_and_torch_adam(data):
    model = small_model(data)
    weights = dict(zip(data.task_names, [1.7, 0.3], strict=True))
    library, teaching = copy.deepcopy(model), copy.deepcopy(model)
    fixed = FixedWeights(weights)
    fixed.setup(library.task_names, library)
    library_steps(library, fixed, batches(data))
    state: dict = {}
    for batch in batches(data):
        teaching.zero_grad(set_to_none=True)
        manual_loss(teaching.task_losses(teaching(batch), batch), weights).backward()
        adam_step(list(teaching.parameters()), state, lr=LR)
    assert max_difference(parameters(teaching), parameters(library)) < 1e-6
    # the outputs agree too
    batch = batches(data)[0]
    with torch.no_grad():
        assert max_difference(teaching(batch), library(batch)) < 1e-6


def test_adam_step_changes_the_direction_of_the_gradient():
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.tensor([1.0, 1e-3])
    adam_step([p], {}, lr=0.1)
    # the first step moves every coordinate by about lr, whatever the gradient's size
    assert torch.allclose(p.detach(), torch.tensor([-0.1, -0.1]), atol=1e-4)
    reference = torch.zeros(2, requires_grad=True)
    reference.grad = torch.tensor([1.0, 1e-3])
    torch.optim.Adam([reference], lr=0.1).step()
    assert torch.allclose(p, reference, atol=1e-7)


def test_teaching_uncertainty_equals_the_library(data):
    model = small_model(data)
    library, teaching = copy.deepcopy(model), copy.deepcopy(model)
    strategy = UncertaintyWeighting()
    strategy.setup(library.task_names, library)
    teaching_strategy = TeachingUncertainty.from_library(strategy)
    record = library_steps(library, strategy, batches(data))

    state: dict = {}
    learnable = [*teaching.parameters(), *teaching_strategy.parameters()]
    for batch, step in zip(batches(data), record, strict=True):
        for p in learnable:
            p.grad = None
        losses = teaching.task_losses(teaching(batch), batch)
        total = teaching_strategy(losses)
        total.backward()
        assert abs(total.item() - step["total"].item()) <= 1e-6 * abs(step["total"].item())
        s = teaching_strategy.log_vars
        grad_s = torch.stack([s[t].grad for t in data.task_names])
        assert float((grad_s - step["grads"][0]).abs().max()) < 1e-6
        closed = torch.stack(
            [
                -teaching_strategy.factor(t) * torch.exp(-s[t].detach()) * losses[t].detach() + 0.5
                for t in data.task_names
            ]
        )
        assert float((grad_s - closed).abs().max()) < 1e-5
        adam_step(learnable, state, lr=LR)

    s_teaching = torch.stack([teaching_strategy.log_vars[t] for t in data.task_names])
    assert float((s_teaching - strategy.log_vars).detach().abs().max()) < 1e-6
    assert max_difference(parameters(teaching), parameters(library)) < 1e-6
    assert teaching_strategy.weights() == pytest.approx(strategy.weights, abs=1e-6)
    kinds = {t: data.schema.task(t).kind for t in data.task_names}
    factors = {t: teaching_strategy.factor(t) for t in data.task_names}
    assert factors == {t: 0.5 if k == "regression" else 1.0 for t, k in kinds.items()}


@pytest.mark.parametrize(("alpha", "lr"), [(1.5, 0.025), (0.0, 0.5), (3.0, 0.1)])
def test_teaching_gradnorm_equals_the_library(data, alpha, lr):
    model = small_model(data)
    library, teaching = copy.deepcopy(model), copy.deepcopy(model)
    strategy = GradNorm(alpha=alpha, lr=lr)
    strategy.setup(library.task_names, library)
    assert strategy.layer_names == ["bottom.weights.1"]  # the last of two shared layers
    teaching_strategy = TeachingGradNorm.from_library(strategy)
    layer = parameters(teaching)[strategy.layer_names[0]]
    record = library_steps(library, strategy, batches(data))

    state: dict = {}
    for batch, step in zip(batches(data), record, strict=True):
        teaching.zero_grad(set_to_none=True)
        teaching_strategy.backward(teaching.task_losses(teaching(batch), batch), layer)
        adam_step(list(teaching.parameters()), state, lr=LR)
        weights = teaching_strategy.weights()
        assert weights == pytest.approx(step["weights"], abs=1e-6)
        assert sum(weights.values()) == pytest.approx(len(weights), abs=1e-5)
    assert max_difference(parameters(teaching), parameters(library)) < 1e-6
    # the weights moved: the comparison is not between two sets of ones
    assert max(abs(w - 1) for w in record[-1]["weights"].values()) > 0.01
