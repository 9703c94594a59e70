"""The teaching CGC and PLE (chapter 12.3.4) compute what mtlbook.models.CGC and PLE compute."""

from __future__ import annotations

import pytest
import torch

import mtlbook
from mtlbook.book.teaching import max_difference
from mtlbook.book.teaching.ple import TeachingCGC, TeachingPLE
from mtlbook.models import CGC, PLE


@pytest.fixture(scope="module")
def data():
    return mtlbook.make_correlated_tasks(64, 0.5)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Seeded random weights everywhere (biases too), so that no copy is right by accident."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


def _check(model, teaching_cls, data, seed):
    _randomise(model, seed)
    model.eval()
    teaching = teaching_cls.from_library(model).eval()
    batch = next(iter(data.loader(batch_size=64, shuffle=False)))
    with torch.no_grad():
        assert max_difference(teaching(model.input(batch)), model(batch)) < 1e-6
    # The gradient with respect to the input agrees too.
    x = model.input(batch).detach().requires_grad_(True)
    x_teaching = x.detach().clone().requires_grad_(True)
    library_out = model.towers(_library_features(model, x)).squeeze(-1)
    sum(o.sum() for o in library_out).backward()
    sum(o.sum() for o in teaching(x_teaching).values()).backward()
    assert (x.grad - x_teaching.grad).abs().max() < 1e-5
    return teaching


def _library_features(model: PLE, x: torch.Tensor) -> torch.Tensor:
    """The library's forward pass from the input layer's output ``x`` to the towers' input."""
    h = x
    for level in model.levels:
        h, _ = level(h)
    return h


@pytest.mark.parametrize("n_task_experts, n_shared_experts", [(2, 2), (3, 2)])
def test_teaching_cgc_equals_library(data, n_task_experts, n_shared_experts):
    model = CGC(
        data.schema,
        n_shared_experts=n_shared_experts,
        n_task_experts=n_task_experts,
        expert_units=(12, 6),
        tower_units=(5, 3),
        seed=1,
    )
    teaching = _check(model, TeachingCGC, data, seed=2)
    assert sum(p.numel() for p in teaching.parameters()) == model.n_parameters() - sum(
        p.numel() for p in model.input.parameters()
    )


@pytest.mark.parametrize("n_levels", [2, 3])
def test_teaching_ple_equals_library(data, n_levels):
    model = PLE(
        data.schema,
        n_levels=n_levels,
        n_shared_experts=2,
        n_task_experts=2,
        expert_units=(10, 7),
        tower_units=(4,),
        seed=3,
    )
    teaching = _check(model, TeachingPLE, data, seed=4)
    levels = list(teaching.levels)
    assert all(level.shared_gate is not None for level in levels[:-1])
    assert levels[-1].shared_gate is None


def test_teaching_ple_of_a_cgc_is_the_teaching_cgc(data):
    model = CGC(data.schema, n_shared_experts=2, n_task_experts=2, expert_units=(8,), seed=5)
    _randomise(model, 6)
    batch = next(iter(data.loader(batch_size=64, shuffle=False)))
    x = model.input(batch).detach()
    with torch.no_grad():
        one = TeachingCGC.from_library(model)(x)
        other = TeachingPLE.from_library(model)(x)
    assert max_difference(one, other) < 1e-6


def test_teaching_cgc_refuses_a_deeper_ple(data):
    with pytest.raises(ValueError, match="one level"):
        TeachingCGC.from_library(PLE(data.schema, n_levels=2, expert_units=(8,)))
