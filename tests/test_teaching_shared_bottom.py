"""The input layer and Shared-Bottom of chapter 12.3.1 written the plain way equal the library's."""

from __future__ import annotations

import pytest
import torch

import mtlbook as mb
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.shared_bottom import TeachingInput, TeachingSharedBottom
from mtlbook.models import SharedBottom


def _first_batch(data, size=128):
    return next(iter(data.loader(batch_size=size, shuffle=False)))


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Seeded random weights everywhere (not the initial scheme: biases and tables too)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


@pytest.fixture(scope="module")
def funnel():
    return mb.simulate_funnel(256, seed=0)


@pytest.mark.parametrize("copies, copy", [(1, 0), (3, 2)])
def test_input_layer_equals_library(funnel, copies, copy):
    layer = mb.models.layers.InputLayer(funnel.schema, embedding_dim=5, n_copies=copies)
    _randomise(layer, 1)
    teaching = TeachingInput.from_library(layer, copy=copy)
    batch = _first_batch(funnel)
    expected = layer(batch)
    expected = expected if copies == 1 else expected[copy]
    assert [t.num_embeddings for t in teaching.tables] == list(funnel.schema.cardinalities)
    assert torch.equal(teaching(batch), expected)


def test_input_layer_without_categorical_fields_is_the_dense_block():
    data = mb.make_correlated_tasks(64, 0.5)
    model = SharedBottom(data.schema, seed=0)
    batch = _first_batch(data)
    teaching = TeachingInput.from_library(model.input)
    assert len(teaching.tables) == 0
    assert torch.equal(teaching(batch), model.input(batch))


@pytest.mark.parametrize("make_data", ["funnel", "correlated"])
def test_shared_bottom_equals_library(funnel, make_data):
    data = funnel if make_data == "funnel" else mb.make_correlated_tasks(64, 0.5)
    model = SharedBottom(data.schema, bottom_units=(24, 12), tower_units=(8, 4), embedding_dim=4)
    _randomise(model, 2)
    model.eval()
    teaching = TeachingSharedBottom.from_library(model)
    n_library = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("input"))
    assert sum(p.numel() for p in teaching.parameters()) == n_library
    batch = _first_batch(data)
    with torch.no_grad():
        assert max_difference(teaching(model.input(batch)), model(batch)) < 1e-6


def test_shared_bottom_without_tower_hidden_layers(funnel):
    model = SharedBottom(funnel.schema, bottom_units=(16,), tower_units=(), seed=3).eval()
    teaching = TeachingSharedBottom.from_library(model)
    batch = _first_batch(funnel)
    with torch.no_grad():
        assert max_difference(teaching(model.input(batch)), model(batch)) < 1e-6


def test_shared_bottom_input_gradients_agree(funnel):
    """Gradients w.r.t. the dense inputs, through the input layer, the bottom and the towers."""
    model = SharedBottom(funnel.schema, bottom_units=(24, 12), tower_units=(8,), seed=4).eval()
    embed = TeachingInput.from_library(model.input)
    teaching = TeachingSharedBottom.from_library(model)
    batch = _first_batch(funnel, 64)
    grads = []
    for net in (lambda b: teaching(embed(b)), model):
        dense = batch.dense.clone().requires_grad_(True)
        out = net(mb.data.Batch(dense=dense, categorical=batch.categorical))
        sum(v.sum() for v in out.values()).backward()
        grads.append(dense.grad)
    assert (grads[0] - grads[1]).abs().max() < 1e-6


def test_full_model_with_teaching_input_equals_library(funnel):
    """The input layer and the Shared-Bottom together, from the batch to the outputs."""
    model = SharedBottom(funnel.schema, bottom_units=(16, 8), tower_units=(4,), seed=5).eval()
    embed = TeachingInput.from_library(model.input)
    teaching = TeachingSharedBottom.from_library(model)
    batch = _first_batch(funnel)
    with torch.no_grad():
        assert max_difference(teaching(embed(batch)), model(batch)) < 1e-6
