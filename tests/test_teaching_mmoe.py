"""The teaching MMoE and OMoE (chapter 12.3.3) compute what the library's models compute."""

from __future__ import annotations

import pytest
import torch

import mtlbook as mb
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.mmoe import TeachingMMoE, TeachingOMoE
from mtlbook.models import MMoE, OMoE

CASES = [
    (MMoE, TeachingMMoE),
    (OMoE, TeachingOMoE),
]


def _sharpen_gates(model: MMoE, seed: int) -> None:
    """Random gate weights three times the initial scale: peaked, unequal mixtures, so that a
    gate or an expert copied to the wrong place changes the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.gates.parameters():
            p.mul_(3.0).add_(0.1 * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize(("library", "teaching_cls"), CASES)
@pytest.mark.parametrize(
    "data",
    [mb.make_correlated_tasks(64, 0.5), mb.simulate_funnel(256, seed=0)],
    ids=["correlated", "funnel"],
)
def test_teaching_model_equals_library(library, teaching_cls, data) -> None:
    model = library(data.schema, n_experts=3, expert_units=(12, 6), tower_units=(5, 4), seed=1)
    _sharpen_gates(model, seed=2)
    model.eval()
    teaching = teaching_cls.from_library(model).eval()
    assert len(teaching.experts) == 3
    assert len(teaching.gates) == (1 if library is OMoE else len(data.schema.tasks))
    batch = next(iter(data.loader(64, shuffle=False)))
    with torch.no_grad():
        assert max_difference(teaching(model.input(batch)), model(batch)) < 1e-6


@pytest.mark.parametrize(("library", "teaching_cls"), CASES)
def test_teaching_model_has_the_same_input_gradient(library, teaching_cls) -> None:
    data = mb.make_correlated_tasks(64, 0.5)
    model = library(data.schema, n_experts=4, expert_units=(8, 8), tower_units=(6,), seed=3).eval()
    teaching = teaching_cls.from_library(model).eval()
    batch = next(iter(data.loader(64, shuffle=False)))
    x = model.input(batch).detach()
    grads = []
    for forward in (teaching, lambda z: _library_from_input(model, z)):
        z = x.clone().requires_grad_(True)
        sum(out.sum() for out in forward(z).values()).backward()
        grads.append(z.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def _library_from_input(model: MMoE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The library model's forward pass from the input layer's output ``x`` on."""
    original = model.input.forward
    model.input.forward = lambda _batch: x  # type: ignore[method-assign]
    try:
        return model(None)  # type: ignore[arg-type]
    finally:
        model.input.forward = original  # type: ignore[method-assign]


def test_from_library_refuses_the_other_model() -> None:
    data = mb.make_correlated_tasks(64, 0.5)
    with pytest.raises(ValueError, match="cannot copy"):
        TeachingMMoE.from_library(OMoE(data.schema))
    with pytest.raises(ValueError, match="cannot copy"):
        TeachingOMoE.from_library(MMoE(data.schema))
