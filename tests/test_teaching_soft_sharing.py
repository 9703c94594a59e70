"""Soft parameter sharing of chapter 12.3.2 written the plain way equals the library's:
the outputs and the penalty λ Σ_{a<b} ‖θ_a − θ_b‖²."""

from __future__ import annotations

import pytest
import torch

import mtlbook as mb
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.soft_sharing import TeachingSoftSharing
from mtlbook.models import SoftSharing


def _first_batch(data, size=128):
    return next(iter(data.loader(batch_size=size, shuffle=False)))


def _randomise(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def _three_task_funnel():
    return mb.simulate_funnel(256, seed=0, with_dwell_time=True)


CASES = [
    ("funnel", False),
    ("funnel", True),
    ("funnel3", False),
    ("correlated", False),
]


def _data(name):
    if name == "correlated":
        return mb.make_correlated_tasks(64, 0.5)
    if name == "funnel3":
        return _three_task_funnel()
    return mb.simulate_funnel(256, seed=0)


@pytest.mark.parametrize("name, shared_embeddings", CASES)
def test_soft_sharing_equals_library(name, shared_embeddings):
    data = _data(name)
    model = SoftSharing(
        data.schema,
        hidden_units=(24, 12),
        tower_units=(6,),
        l2_lambda=0.37,
        shared_embeddings=shared_embeddings,
        embedding_dim=4,
    )
    _randomise(model, 1)
    model.eval()
    teaching = TeachingSoftSharing.from_library(model)
    assert sum(p.numel() for p in teaching.parameters()) == model.n_parameters()
    batch = _first_batch(data)
    with torch.no_grad():
        assert max_difference(teaching(batch), model(batch)) < 1e-6
        ours, theirs = float(teaching.regularization()), float(model.regularization())
    assert theirs > 0
    assert abs(ours - theirs) / theirs < 1e-6


def test_penalty_is_zero_for_equal_networks_and_lambda_zero():
    data = mb.simulate_funnel(256, seed=0)
    model = SoftSharing(data.schema, hidden_units=(8,), l2_lambda=0.0, seed=2)
    teaching = TeachingSoftSharing.from_library(model)
    with torch.no_grad():
        assert float(teaching.regularization()) == 0.0
    for k in range(1, len(teaching.task_names)):  # make every network a copy of network 0
        with torch.no_grad():
            for mine, first in zip(teaching.tied(k), teaching.tied(0), strict=True):
                mine.copy_(first)
    teaching.l2_lambda = 1.0
    with torch.no_grad():
        assert float(teaching.regularization()) == 0.0


def test_gradients_of_outputs_and_penalty_agree():
    data = mb.simulate_funnel(256, seed=0)
    model = SoftSharing(data.schema, hidden_units=(16, 8), l2_lambda=0.5, seed=3).eval()
    teaching = TeachingSoftSharing.from_library(model)
    batch = _first_batch(data, 64)
    grads = []
    for net in (teaching, model):
        dense = batch.dense.clone().requires_grad_(True)
        b = mb.data.Batch(dense=dense, categorical=batch.categorical)
        loss = sum(v.sum() for v in net(b).values()) + net.regularization()
        loss.backward()
        grads.append(dense.grad)
    assert (grads[0] - grads[1]).abs().max() < 1e-5
    # the penalty's gradient on task 1's first bottom layer: [out, in] vs the library's [in, out]
    assert torch.allclose(
        teaching.bottoms[1][0].weight.grad.T, model.bottoms.weights[0].grad[1], atol=1e-5
    )
