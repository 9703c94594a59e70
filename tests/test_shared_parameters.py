"""``shared_parameters()`` is exactly what autograd says every task shares, for every model.

The gradient-based weightings combine the tasks' gradients on ``model.shared_parameters()`` and
give every other parameter the plain sum, so a model that lists too few parameters hides its
conflicts from them, and one that lists too many invents conflicts. Instead of a list per model,
the tests here differentiate every task's loss on a batch and compare, element by element, the
parameters each task reaches with what the model declares; they run over every model in
``mtlbook.models.__all__`` (and ESMM over every backbone), so a new model is checked as soon as
it is listed there.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mtlbook.models as models
from mtlbook.data import MultiTaskData
from mtlbook.models import (
    AITM,
    ESMM,
    PLE,
    CrossStitch,
    DSelectK,
    MultiTaskModel,
    Sluice,
    SoftSharing,
)
from mtlbook.models.reach import partly_shared, probe_batch, shared_by_reach, task_reach
from mtlbook.weighting import GradNorm
from mtlbook.weighting._grads import task_gradients


def _batch(data: MultiTaskData, size: int = 512):
    return next(iter(data.loader(batch_size=size, shuffle=True, seed=0)))


@pytest.fixture(scope="module")
def funnel_steps(funnel_small) -> MultiTaskData:
    """The small funnel with a third binary step after the purchase (a repurchase), for AITM
    with a three-step sequence."""
    rng = np.random.default_rng(0)
    purchase = funnel_small.labels["purchase"]
    return MultiTaskData(
        dense=funnel_small.dense,
        categorical=funnel_small.categorical,
        labels={
            "click": funnel_small.labels["click"],
            "purchase": purchase,
            "repurchase": purchase * (rng.random(len(purchase)) < 0.5),
        },
        tasks={"click": "binary", "purchase": "binary", "repurchase": "binary"},
        dense_names=funnel_small.schema.dense,
        categorical_names=funnel_small.schema.categorical,
        cardinalities=funnel_small.schema.cardinalities,
    )


def _variants(name: str):
    """(label, factory) pairs: a model's default and the variants whose sharing differs."""
    cls = getattr(models, name)
    yield name, cls
    extra = {
        "PLE": [
            ("PLE-3", lambda s: PLE(s, n_levels=3)),
            (
                "PLE-4",
                lambda s: PLE(
                    s, n_levels=4, n_shared_experts=1, n_task_experts=2, expert_units=(8,)
                ),
            ),
            ("PLE-no-task-experts", lambda s: PLE(s, n_task_experts=0)),
        ],
        "CrossStitch": [
            ("CrossStitch-1", lambda s: CrossStitch(s, hidden_units=(16,))),
            (
                "CrossStitch-3-own-embeddings",
                lambda s: CrossStitch(s, hidden_units=(8, 8, 8), shared_embeddings=False),
            ),
        ],
        "Sluice": [("Sluice-3", lambda s: Sluice(s, hidden_units=(8, 8, 8)))],
        "SoftSharing": [
            ("SoftSharing-shared-embeddings", lambda s: SoftSharing(s, shared_embeddings=True))
        ],
        "DSelectK": [
            ("DSelectK-static", lambda s: DSelectK(s, per_example=False)),
            ("DSelectK-5", lambda s: DSelectK(s, n_experts=5)),
        ],
        "AITM": [("AITM-two-steps", lambda s: AITM(s, sequence=("click", "purchase")))],
        # ESMM with every model of the package as its backbone.
        "ESMM": [
            (f"ESMM+{b}", lambda s, b=b: ESMM(s, backbone=getattr(models, b)))
            for b in models.__all__
        ],
    }
    yield from extra.get(name, [])


def _cases():
    for name in models.__all__:
        for label, factory in _variants(name):
            for data in ("funnel_small", "funnel_binary", "funnel_steps"):
                yield pytest.param(factory, data, id=f"{label}-{data}")


def _build(request, factory, data_name):
    data = request.getfixturevalue(data_name)
    try:
        model = factory(data.schema)
    except ValueError as err:  # a model that needs another kind of task set
        pytest.skip(f"not built for {data_name}: {err}")
    return model, data


def _loss_reach(model: MultiTaskModel, batch) -> dict[str, torch.Tensor]:
    """``{name: [tasks, *shape] bool}``: where each task's *loss* has a non-zero gradient."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    losses = model.task_losses(model(batch), batch)
    reach = {}
    rows = []
    for loss in losses.values():
        grads = torch.autograd.grad(
            loss, [p for _, p in named], retain_graph=True, allow_unused=True
        )
        rows.append(
            [
                torch.zeros_like(p, dtype=torch.bool) if g is None else g != 0
                for (_, p), g in zip(named, grads, strict=True)
            ]
        )
    for i, (name, _) in enumerate(named):
        reach[name] = torch.stack([row[i] for row in rows])
    return reach


def _declared(model: MultiTaskModel) -> list[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for p in model.shared_parameters()]


@pytest.mark.parametrize(("factory", "data_name"), list(_cases()))
def test_shared_parameters_are_exactly_those_every_task_reaches(request, factory, data_name):
    model, data = _build(request, factory, data_name)
    model.eval()  # no dropout in the way
    reach = _loss_reach(model, _batch(data))
    by_every_task = {n for n, r in reach.items() if bool(r.all(dim=0).any())}
    declared = _declared(model)
    assert len(declared) == len(set(declared)), "a parameter is listed twice"
    assert set(declared) == by_every_task, (
        f"listed but not reached by every task: {sorted(set(declared) - by_every_task)}; "
        f"reached by every task but not listed: {sorted(by_every_task - set(declared))}"
    )
    # The library's probe differentiates the outputs (random weights per sample, every row,
    # no labels): it finds the same set. A masked task's loss (dwell_time, on clicks only) does
    # not reach the embedding rows of the users who never click in the batch, so tensors shared
    # in part are looked for with the probe, where only the structure of the model counts.
    probe = task_reach(model)
    assert {n for n, r in probe.items() if bool(r.all(dim=0).any())} == by_every_task
    partly = partly_shared(probe)
    if isinstance(model, ESMM) and model.backbone is not None:
        # The documented superset: a backbone tensor stacked over the tasks is listed whole
        # although only pCTR's part of it is shared.
        assert set(partly) <= set(declared)
    else:
        assert partly == [], f"tensors shared in part only: {partly}"


@pytest.mark.parametrize(("factory", "data_name"), list(_cases()))
def test_gradnorm_layer_is_reached_by_every_task(request, factory, data_name):
    model, data = _build(request, factory, data_name)
    if not model.shared_parameters():
        pytest.skip("the model shares nothing")
    gradnorm = GradNorm()
    gradnorm.setup(model.task_names, model)
    batch = _batch(data)
    losses = model.task_losses(model(batch), batch)
    norms = task_gradients(list(losses.values()), gradnorm._layer).norm(dim=1)  # [T]
    assert (norms > 0).all(), dict(zip(model.task_names, norms.tolist(), strict=True))
    # It is the last shared weight tensor: nothing listed after it is a weight.
    shared = model.shared_parameters()
    last = max(i for i, p in enumerate(shared) if any(p is q for q in gradnorm._layer))
    names = _declared(model)
    assert all(p.dim() < 2 or "bias" in names[i] for i, p in enumerate(shared) if i > last)


# ---------------------------------------------------------------------- the defects, one by one
def test_esmm_shares_the_ctr_tower_on_the_funnel(funnel_binary, funnel_small):
    model = ESMM(funnel_binary.schema)
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in model.ctr_tower.parameters()} <= shared
    assert not {id(p) for p in model.towers.parameters()} & shared  # the CVR tower
    # With a third task (dwell_time, on its own tower) only the embeddings are shared.
    model = ESMM(funnel_small.schema)
    assert model.shared_parameters() == list(model.input.parameters())


def test_aitm_shares_the_first_tower_with_every_later_step(funnel_binary):
    model = AITM(funnel_binary.schema)
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in model.first_tower.parameters()} <= shared
    assert not {id(p) for p in model.ait.parameters()} & shared


def test_ple_shares_the_shared_gate_not_the_lower_task_gates(funnel_small):
    model = PLE(funnel_small.schema, n_levels=2)
    shared = {id(p) for p in model.shared_parameters()}
    low, top = model.levels
    assert {id(p) for p in low.shared_gate.parameters()} <= shared
    assert not {id(p) for p in low.gates.parameters()} & shared  # feed one task's experts
    task_experts, _ = low.expert_parameters()  # mixed into the next level by the shared gate
    assert {id(p) for p in task_experts} <= shared
    task_experts, _ = top.expert_parameters()
    assert not {id(p) for p in task_experts} & shared


def test_gradnorm_layers_of_the_models_it_got_wrong(funnel_small):
    schema = funnel_small.schema
    expected = {
        models.OMoE(schema): "experts.groups.0.weights.0",  # not the gate
        CrossStitch(schema): "columns.1.weights.0",  # not the last unit's per-task rows
        Sluice(schema): "columns.1.weights.0",
        ESMM(
            funnel_small.select_tasks(["click", "purchase"]).schema
        ): "ctr_tower.weights.2",  # the output layer of pCTR's tower (64, 32, 1)
    }
    for model, name in expected.items():
        gradnorm = GradNorm()
        gradnorm.setup(model.task_names, model)
        assert gradnorm.layer_names == [name], type(model).__name__


def test_probe_batch_and_reach(funnel_small):
    batch = probe_batch(funnel_small.schema, n_samples=32, seed=1)
    assert len(batch) == 32 and set(batch.labels) == set(funnel_small.task_names)
    assert (batch.categorical < torch.tensor(funnel_small.schema.cardinalities)).all()
    state = torch.random.get_rng_state()
    model = models.SharedBottom(funnel_small.schema)
    model.train()
    reach = task_reach(model)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global state is untouched
    assert model.training  # the mode is restored
    tower = reach["towers.weights.0"]  # [tasks, tasks, in, out]: task t reaches slice t only
    for t in range(len(model.task_names)):
        assert tower[t, t].any() and not tower[t, [k for k in range(3) if k != t]].any()
    assert partly_shared(reach) == []
    assert shared_by_reach(model) == _declared(model)  # in the order of named_parameters()
