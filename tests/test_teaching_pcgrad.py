"""PCGrad of chapter 12.4.2 written the plain way leaves the library's gradients and steps."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mtlbook as mb
from mtlbook.book.teaching.pcgrad import TeachingPCGrad
from mtlbook.models import SharedBottom
from mtlbook.weighting import PCGrad


def _cosines(model, batch) -> torch.Tensor:
    """``[T, T]`` cosines of the tasks' gradients of the shared parameters on ``batch``."""
    losses = model.task_losses(model(batch), batch)
    shared = model.shared_parameters()
    rows = []
    for loss in losses.values():
        grads = torch.autograd.grad(loss, shared, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    unit = torch.nn.functional.normalize(torch.stack(rows), dim=1)
    return unit @ unit.T


def _steps(model, batches, backward, n_steps=3):
    """``n_steps`` Adam steps driven like ``mtlbook.fit``; the gradients of every step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(n_steps):
        batch = batches[step % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        losses = model.task_losses(model(batch), batch)
        backward(losses, model)
        history.append({n: p.grad.clone() for n, p in model.named_parameters()})
        optimizer.step()
    return history


def _largest_gap(a, b) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


@pytest.mark.parametrize("make_data", ["correlated", "funnel3"])
def test_pcgrad_equals_library(make_data):
    if make_data == "correlated":  # two tasks with anti-correlated labels: conflicting gradients
        data = mb.make_correlated_tasks(64, -0.9, n_features=10)
    else:  # three tasks (click, purchase, dwell time)
        data = mb.simulate_funnel(256, seed=0, with_dwell_time=True)
    model = SharedBottom(data.schema, bottom_units=(8, 4), tower_units=(4,), seed=1)
    batches = list(data.loader(batch_size=64, shuffle=False))
    cosines = _cosines(model, batches[0])
    assert (cosines < 0).any()  # the first step has a conflict, so the surgery is tested
    if make_data == "funnel3":  # dwell time conflicts with both others: the order matters
        assert (cosines[2, :2] < 0).all()
    teaching_model = copy.deepcopy(model)
    library = PCGrad(seed=5)
    library.setup(model.task_names, model)
    teaching = TeachingPCGrad(seed=5)

    expected = _steps(model, batches, library.backward)
    got = _steps(teaching_model, batches, teaching.backward)
    for e, g in zip(expected, got, strict=True):
        assert _largest_gap(e, g) < 1e-6
    after = dict(model.named_parameters())
    for name, p in teaching_model.named_parameters():
        assert float((p - after[name]).detach().abs().max()) < 1e-6


class _Linear(nn.Module):
    """Losses ``L_i = a_i · θ + b_i²``: task ``i``'s gradient of the shared ``θ`` is ``a_i``."""

    def __init__(self, directions: torch.Tensor) -> None:
        super().__init__()
        self.directions = directions  # [T, P]
        self.theta = nn.Parameter(torch.zeros(directions.shape[1]))
        self.heads = nn.Parameter(torch.ones(directions.shape[0]))  # one per task

    def shared_parameters(self):
        return [self.theta]

    def losses(self) -> dict[str, torch.Tensor]:
        return {f"t{i}": a @ self.theta + self.heads[i] ** 2 for i, a in enumerate(self.directions)}


def _shared_gradient(strategy, directions, n_steps=4):
    model = _Linear(directions)
    if isinstance(strategy, PCGrad):
        strategy.setup([f"t{i}" for i in range(len(directions))], model)
    grads = []
    for _ in range(n_steps):  # the generator advances: a new order every step
        model.zero_grad(set_to_none=True)
        strategy.backward(model.losses(), model)
        grads.append(model.theta.grad.clone())
        assert torch.allclose(model.heads.grad, 2 * model.heads.detach())  # plain gradient
    return torch.stack(grads)


def test_three_tasks_follow_the_library_order():
    # g_0 conflicts with g_1 and g_2, and the result depends on which one it meets first
    directions = torch.tensor([[1.0, 0.0, 0.5], [-1.0, 1.0, 0.0], [-0.5, -2.0, 1.0]])
    results = {}
    for seed in range(6):
        expected = _shared_gradient(PCGrad(seed=seed), directions)
        got = _shared_gradient(TeachingPCGrad(seed=seed), directions)
        assert float((expected - got).abs().max()) < 1e-6
        results[seed] = got
    distinct = {tuple(r.flatten().round(decimals=5).tolist()) for r in results.values()}
    assert len(distinct) > 1  # the order matters here, so matching it is tested


def test_a_task_without_gradient_sits_out():
    directions = torch.tensor([[1.0, 0.0], [0.0, 0.0], [-1.0, 1.0]])  # task 1: zero gradient
    for seed in range(3):
        expected = _shared_gradient(PCGrad(seed=seed), directions)
        got = _shared_gradient(TeachingPCGrad(seed=seed), directions)
        assert float((expected - got).abs().max()) < 1e-6


def test_two_tasks_do_not_depend_on_the_order():
    directions = torch.tensor([[1.0, 0.2], [-1.0, 1.0]])
    a = _shared_gradient(TeachingPCGrad(seed=0), directions, n_steps=1)
    b = _shared_gradient(TeachingPCGrad(seed=1), directions, n_steps=1)
    g1, g2 = directions
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # each projected once onto the other's normal plane
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    assert torch.allclose(a[0], p1 + p2) and torch.allclose(b[0], p1 + p2)
