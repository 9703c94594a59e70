"""The teaching cross-stitch network (chapter 12.3.5) computes what the library's model computes."""

from __future__ import annotations

import warnings

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

import mtlbook as mb
from mtlbook.book.page import setup_page
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.cross_stitch import TeachingCrossStitch, plot_cross_stitch_diagram
from mtlbook.models import CrossStitch


def _random_alphas(model: CrossStitch, seed: int) -> None:
    """Random, unequal α (the initial 0.9 / 0.1 is the same for every task and seed), so that an
    α copied transposed or to the wrong unit changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stitch in model.stitches:
            stitch.raw.add_(0.5 * torch.randn(stitch.raw.shape, generator=generator))


@pytest.mark.parametrize(
    "data",
    [mb.make_correlated_tasks(64, 0.5), mb.simulate_funnel(256, seed=0)],
    ids=["correlated", "funnel"],
)
@pytest.mark.parametrize("shared_embeddings", [True, False])
def test_teaching_model_equals_library(data, shared_embeddings) -> None:
    model = CrossStitch(
        data.schema,
        hidden_units=(12, 10, 6),
        tower_units=(5,),
        alpha_lr_scale=3.0,
        shared_embeddings=shared_embeddings,
        seed=1,
    )
    _random_alphas(model, seed=2)
    model.eval()
    teaching = TeachingCrossStitch.from_library(model).eval()
    assert len(teaching.columns) == 3 and len(teaching.alphas) == 3
    for stitch, alpha in zip(model.stitches, teaching.alphas, strict=True):
        assert torch.equal(alpha.detach(), stitch().detach())
    batch = next(iter(data.loader(64, shuffle=False)))
    with torch.no_grad():
        assert max_difference(teaching(model.input(batch)), model(batch)) < 1e-6


def test_teaching_model_has_the_same_input_gradient() -> None:
    data = mb.make_correlated_tasks(64, 0.5)
    model = CrossStitch(data.schema, hidden_units=(8, 8), tower_units=(6,), seed=3)
    _random_alphas(model, seed=4)
    model.eval()
    teaching = TeachingCrossStitch.from_library(model).eval()
    batch = next(iter(data.loader(64, shuffle=False)))
    x = model.input(batch).detach()
    grads = []
    for forward in (teaching, lambda z: _library_from_input(model, z)):
        z = x.clone().requires_grad_(True)
        sum(out.sum() for out in forward(z).values()).backward()
        grads.append(z.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def _library_from_input(model: CrossStitch, x: torch.Tensor) -> dict[str, torch.Tensor]:
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
        fig = plot_cross_stitch_diagram()
        fig.canvas.draw()
        texts = " ".join(t.get_text() for t in fig.axes[0].texts)
        plt.close(fig)
    for label in ("任务 A 的网络", "十字绣单元", "任务塔 A", "任务塔 B"):
        assert label in texts
