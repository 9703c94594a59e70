"""The teaching AITM of chapter 12.5 computes what mtlbook.models.AITM computes."""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest
import torch

import mtlbook as mb
from mtlbook.book.page import setup_page
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.aitm import TeachingAITM
from mtlbook.data import MultiTaskData
from mtlbook.models import AITM


def _three_steps(n: int = 256, seed: int = 0) -> MultiTaskData:
    """Three nested binary steps (view ⊇ click ⊇ buy) on four dense features; the schema
    lists them out of sequence order so that the weight mapping is exercised."""
    rng = np.random.default_rng(seed)
    view = rng.random(n) < 0.6
    click = view & (rng.random(n) < 0.5)
    buy = click & (rng.random(n) < 0.5)
    return MultiTaskData(
        dense=rng.standard_normal((n, 4)),
        dense_names=["a", "b", "c", "d"],
        labels={"buy": buy * 1.0, "view": view * 1.0, "click": click * 1.0},
        tasks={"buy": "binary", "view": "binary", "click": "binary"},
    )


def _batch(data):
    return next(iter(data.loader(len(data), shuffle=False)))


def _random_aitm(schema, tower_units=(16, 8), seed=3, **kwargs) -> AITM:
    """AITM with non-default sizes and seeded random weights (the library's initialisation),
    the head of the last step shifted up so that the calibrator has something to penalise."""
    model = AITM(schema, tower_units=tower_units, embedding_dim=4, seed=seed, **kwargs)
    with torch.no_grad():
        model.heads.biases[0][model.task_names.index(model.sequence[-1])] += 1.0
    return model.eval()


CASES = [
    ("funnel", None, (16, 8)),
    ("funnel", None, (12, 8, 6)),
    ("steps", ("view", "click", "buy"), (16, 8)),
    ("steps", ("view", "click", "buy"), (10,)),
]


@pytest.fixture(scope="module")
def datasets():
    return {"funnel": mb.simulate_funnel(256, seed=0), "steps": _three_steps()}


@pytest.mark.parametrize(("name", "sequence", "tower_units"), CASES)
def test_teaching_aitm_equals_the_library(datasets, name, sequence, tower_units):
    data = datasets[name]
    batch = _batch(data)
    model = _random_aitm(data.schema, tower_units, seed=len(tower_units), sequence=sequence)
    teaching = TeachingAITM.from_library(model)
    with torch.no_grad():
        x = model.input(batch)
        mine, library = teaching(x), model(batch)
        assert max_difference(mine, library) < 1e-6
        # the calibrator is the library's regularization() of the same forward pass
        penalty = teaching.calibrator(mine)
        assert float(penalty) > 0  # random weights: some later step above the earlier one
        assert abs(float(penalty) - float(model.regularization())) < 1e-6


def test_teaching_aitm_attention_weights_are_the_recorded_gates(datasets, monkeypatch):
    data = datasets["steps"]
    batch = _batch(data)
    model = _random_aitm(data.schema, sequence=("view", "click", "buy"))
    teaching = TeachingAITM.from_library(model)
    seen: list[torch.Tensor] = []
    softmax = torch.softmax

    def recording_softmax(*args, **kwargs):
        seen.append(softmax(*args, **kwargs))
        return seen[-1]

    # the teaching forward's only softmax is the attention over (p_{t−1}, q_t) of each step
    monkeypatch.setattr(torch, "softmax", recording_softmax)
    with torch.no_grad():
        teaching(model.input(batch))
    monkeypatch.undo()
    with torch.no_grad():
        model(batch)
    records = {r.level: r.weights for r in model.gate_records()}
    assert len(seen) == 2 and sorted(records) == [2, 3]
    for level, weights in enumerate(seen, start=2):
        torch.testing.assert_close(weights, records[level], atol=1e-6, rtol=0)


def test_teaching_aitm_input_gradients_agree(datasets):
    data = datasets["steps"]
    batch = _batch(data)
    model = _random_aitm(data.schema, sequence=("view", "click", "buy"))
    teaching = TeachingAITM.from_library(model)
    x = model.input(batch).detach().requires_grad_(True)
    (grad_mine,) = torch.autograd.grad(sum(o.sum() for o in teaching(x).values()), x)
    x_lib = x.detach().clone().requires_grad_(True)
    model.input = _Constant(x_lib)
    (grad_lib,) = torch.autograd.grad(sum(o.sum() for o in model(batch).values()), x_lib)
    torch.testing.assert_close(grad_mine, grad_lib, atol=1e-5, rtol=1e-5)


class _Constant(torch.nn.Module):
    """An input layer that returns a fixed tensor (so that gradients w.r.t. it can be taken)."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.x, self.output_dim = x, x.shape[-1]

    def forward(self, batch) -> torch.Tensor:
        return self.x


def test_teaching_aitm_refuses_tasks_outside_the_sequence():
    data = mb.simulate_funnel(128, seed=0, with_dwell_time=True)
    model = AITM(data.schema, seed=0)
    with pytest.raises(ValueError, match="conversion steps only"):
        TeachingAITM.from_library(model)


def test_aitm_diagram_has_the_chapter_labels():
    import matplotlib.pyplot as plt

    from mtlbook.book.ch12_5 import plot_aitm_diagram

    with matplotlib.rc_context(), warnings.catch_warnings():
        setup_page()  # the book's CJK font; a missing glyph raises
        fig = plot_aitm_diagram()
        fig.canvas.draw()
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    for label in ("曝光特征", "共享嵌入", "信息传递", "注意力单元", "pCTR", "pCTCVR", "校准器"):
        assert label in texts
    plt.close(fig)
