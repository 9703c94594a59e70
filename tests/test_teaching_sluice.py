"""The teaching sluice network (chapter 12.3.5) computes what the library's model computes,
its orthogonality penalty included."""

from __future__ import annotations

import warnings

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

import mtlbook as mb
from mtlbook.book.page import setup_page
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.sluice import TeachingSluice, plot_sluice_diagram
from mtlbook.models import Sluice


def _random_mixing(model: Sluice, seed: int) -> None:
    """Random, unequal α and β (their initial values are the same for every seed), so that a
    matrix copied transposed, or a subspace taken from the wrong place, changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for matrix in [*model.alphas, model.beta]:
            matrix.raw.add_(0.5 * torch.randn(matrix.raw.shape, generator=generator))


@pytest.mark.parametrize(
    "data",
    [mb.make_correlated_tasks(64, 0.5), mb.simulate_funnel(256, seed=0)],
    ids=["correlated", "funnel"],
)
@pytest.mark.parametrize("shared_embeddings", [True, False])
def test_teaching_model_equals_library(data, shared_embeddings) -> None:
    model = Sluice(
        data.schema,
        hidden_units=(12, 12, 12),
        tower_units=(5,),
        n_subspaces=3,
        orthogonality_lambda=0.3,
        shared_embeddings=shared_embeddings,
        seed=1,
    )
    _random_mixing(model, seed=2)
    model.eval()
    teaching = TeachingSluice.from_library(model).eval()
    assert teaching.alphas[0].shape == (3 * len(data.schema.tasks),) * 2
    assert teaching.beta.shape == (len(data.schema.tasks), 3)
    batch = next(iter(data.loader(64, shuffle=False)))
    with torch.no_grad():
        assert max_difference(teaching(model.input(batch)), model(batch)) < 1e-6
        penalty, expected = teaching.regularization(), model.regularization()
    assert expected > 0
    assert torch.allclose(penalty, expected, rtol=1e-5, atol=1e-7)


def test_penalty_gradient_agrees() -> None:
    """The penalty pushes every weight the same way in both versions."""
    data = mb.make_correlated_tasks(64, 0.5)
    model = Sluice(data.schema, hidden_units=(8, 8), n_subspaces=2, seed=3)
    teaching = TeachingSluice.from_library(model)
    model.regularization().backward()
    teaching.regularization().backward()
    for column, layers in zip(model.columns, teaching.columns, strict=True):
        for k, layer in enumerate(layers):
            assert torch.allclose(layer.weight.grad, column.weights[0].grad[k].T, atol=1e-7)


def test_teaching_model_has_the_same_input_gradient() -> None:
    data = mb.make_correlated_tasks(64, 0.5)
    model = Sluice(data.schema, hidden_units=(8, 8), tower_units=(6,), n_subspaces=2, seed=3)
    _random_mixing(model, seed=4)
    model.eval()
    teaching = TeachingSluice.from_library(model).eval()
    batch = next(iter(data.loader(64, shuffle=False)))
    x = model.input(batch).detach()
    grads = []
    for forward in (teaching, lambda z: _library_from_input(model, z)):
        z = x.clone().requires_grad_(True)
        sum(out.sum() for out in forward(z).values()).backward()
        grads.append(z.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def _library_from_input(model: Sluice, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The library model's forward pass from the input layer's output ``x`` on."""
    original = model.input.forward
    model.input.forward = lambda _batch: x  # type: ignore[method-assign]
    try:
        return model(None)  # type: ignore[arg-type]
    finally:
        model.input.forward = original  # type: ignore[method-assign]


def test_diagram_has_chinese_labels() -> None:
    """Drawn with the book's font, every glyph present (a missing one is an error)."""
    with matplotlib.rc_context(), warnings.catch_warnings():
        setup_page()
        warnings.simplefilter("error")
        fig = plot_sluice_diagram()
        fig.canvas.draw()
        texts = " ".join(t.get_text() for t in fig.axes[0].texts)
        plt.close(fig)
    for label in ("子空间", "层权重", "任务塔 A", "任务塔 B"):
        assert label in texts
