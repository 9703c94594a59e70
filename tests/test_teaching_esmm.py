"""The teaching ESMM of chapter 12.5 computes what mtlbook.models.ESMM computes."""

from __future__ import annotations

import warnings

import matplotlib
import pytest
import torch

import mtlbook as mb
from mtlbook.book.page import setup_page
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.esmm import TeachingESMM
from mtlbook.models import ESMM, SharedBottom

FUNNEL_COLUMNS = ("pctr", "pcvr", "pctcvr")


@pytest.fixture(scope="module")
def funnel():
    data = mb.simulate_funnel(256, seed=0)
    return data, next(iter(data.loader(256, shuffle=False)))


def _random_esmm(schema, tower_units=(16, 8, 4), seed=3) -> ESMM:
    """ESMM with non-default sizes and seeded random weights (the library's initialisation:
    uniform weights and biases as ``nn.Linear``, normal embeddings)."""
    return ESMM(schema, tower_units=tower_units, embedding_dim=4, seed=seed).eval()


@pytest.mark.parametrize(("tower_units", "seed"), [((16, 8, 4), 3), ((12,), 4), ((32, 16), 5)])
def test_teaching_esmm_logits_equal_the_library(funnel, tower_units, seed):
    data, batch = funnel
    model = _random_esmm(data.schema, tower_units, seed)
    teaching = TeachingESMM.from_library(model)
    with torch.no_grad():
        x = model.input(batch)
        assert max_difference(teaching(x), model(batch)) < 1e-6


def test_teaching_esmm_probabilities_equal_the_library(funnel):
    data, batch = funnel
    model = _random_esmm(data.schema)
    teaching = TeachingESMM.from_library(model)
    with torch.no_grad():
        x = model.input(batch)
        mine = teaching.probabilities(x)
        library = model.predict_batch(batch)
        assert max_difference(mine, {k: library[k] for k in FUNNEL_COLUMNS}) < 1e-6
        # the transformed task outputs: pCTR for the click, pCTCVR for "clicked and bought"
        transformed = model.transform(model(batch))
        assert (
            max_difference({"click": mine["pctr"], "purchase": mine["pctcvr"]}, transformed) < 1e-6
        )
        torch.testing.assert_close(mine["pctcvr"], mine["pctr"] * mine["pcvr"])


def test_teaching_esmm_loss_is_the_library_loss(funnel):
    data, batch = funnel
    model = _random_esmm(data.schema)
    teaching = TeachingESMM.from_library(model)
    with torch.no_grad():
        x = model.input(batch)
        library = sum(model.task_losses(model(batch), batch).values())
        mine = teaching.loss(x, batch.labels["click"], batch.labels["purchase"])
    assert abs(float(mine) - float(library)) < 1e-5


def test_teaching_esmm_input_gradients_agree(funnel):
    data, batch = funnel
    model = _random_esmm(data.schema)
    teaching = TeachingESMM.from_library(model)
    x = model.input(batch).detach().requires_grad_(True)
    (grad_mine,) = torch.autograd.grad(sum(o.sum() for o in teaching(x).values()), x)
    x_lib = x.detach().clone().requires_grad_(True)
    model.input = _Constant(x_lib)  # the library's forward from the same x
    (grad_lib,) = torch.autograd.grad(sum(o.sum() for o in model(batch).values()), x_lib)
    torch.testing.assert_close(grad_mine, grad_lib, atol=1e-5, rtol=1e-5)


class _Constant(torch.nn.Module):
    """An input layer that returns a fixed tensor (so that gradients w.r.t. it can be taken)."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x, self.output_dim = x, x.shape[-1]

    def forward(self, batch) -> torch.Tensor:
        return self.x


def test_teaching_esmm_refuses_a_backbone(funnel):
    data, _ = funnel
    model = ESMM(data.schema, backbone=lambda schema: SharedBottom(schema, seed=0))
    with pytest.raises(ValueError, match="MLP towers"):
        TeachingESMM.from_library(model)


def test_esmm_diagram_has_the_chapter_labels():
    import matplotlib.pyplot as plt

    from mtlbook.book.ch12_5 import plot_esmm_diagram

    with matplotlib.rc_context(), warnings.catch_warnings():
        setup_page()  # the book's CJK font; a missing glyph raises
        fig = plot_esmm_diagram()
        fig.canvas.draw()
    texts = {t.get_text() for t in fig.axes[0].texts}
    for label in ("CTR 塔", "CVR 塔", "×", "pCTR", "pCVR", "pCTCVR"):
        assert label in texts
    assert any("共享嵌入" in t for t in texts) and any("曝光特征" in t for t in texts)
    plt.close(fig)
