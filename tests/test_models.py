"""Every model in ``mtlbook.models.__all__`` against the common contract, plus the layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mtlbook as mb
import mtlbook.models as models
from mtlbook.data import MultiTaskData
from mtlbook.models import InputLayer, MultiTaskModel, ParallelMLP, SharedBottom, SingleTask

MODEL_NAMES = list(models.__all__)
DATASETS = ["funnel_small", "correlated_small"]
#: What a model that cannot take a data set's schema is tested on instead: the same data with
#: binary tasks only (funnel models such as ESMM and AITM need binary funnel steps).
BINARY_VARIANTS = {"funnel_small": "funnel_binary", "correlated_small": "correlated_binary"}


def accepts(model_cls, schema) -> bool:
    """Whether ``model_cls`` declares that it can be built for ``schema``.

    Reads the class attributes ``min_tasks`` and ``binary_tasks_only`` of every model and
    ``min_binary_tasks`` of models that need some binary tasks but take others besides.
    """
    n_binary = sum(t.kind == "binary" for t in schema.tasks)
    return (
        len(schema.tasks) >= model_cls.min_tasks
        and not (model_cls.binary_tasks_only and n_binary < len(schema.tasks))
        and n_binary >= getattr(model_cls, "min_binary_tasks", 0)
    )


@pytest.fixture(params=MODEL_NAMES)
def model_cls(request):
    return getattr(models, request.param)


@pytest.fixture(params=DATASETS)
def data(request, model_cls):
    """The data set, or its binary variant for a model that declares it cannot take it
    (:func:`test_schemas_a_model_cannot_take_raise` checks that it indeed refuses)."""
    data = request.getfixturevalue(request.param)
    if accepts(model_cls, data.schema):
        return data
    variant = request.getfixturevalue(BINARY_VARIANTS[request.param])
    assert accepts(model_cls, variant.schema), (
        f"{model_cls.__name__} takes neither {request.param} nor its binary variant"
    )
    return variant


def _batch(data, n: int = 512):
    """The first ``n`` rows as one batch (the small funnel has clicks among them)."""
    return next(iter(data.loader(batch_size=n, shuffle=False)))


def _total_loss(model, batch):
    return torch.stack(list(model.task_losses(model(batch), batch).values())).sum()


def _same_weights(a, b) -> bool:
    pa, pb = list(a.parameters()), list(b.parameters())
    return len(pa) == len(pb) and all(torch.equal(x, y) for x, y in zip(pa, pb, strict=True))


def test_all_lists_only_model_classes():
    assert MODEL_NAMES, "mtlbook.models.__all__ is empty"
    for name in MODEL_NAMES:
        cls = getattr(models, name)
        assert isinstance(cls, type) and issubclass(cls, MultiTaskModel), name
        assert cls is not MultiTaskModel
    for block in ("MultiTaskModel", "InputLayer", "ParallelMLP"):
        assert block not in MODEL_NAMES


def test_outputs_keys_and_shapes(model_cls, data):
    model = model_cls(data.schema)
    assert isinstance(model, MultiTaskModel)
    assert model.task_names == data.task_names
    batch = _batch(data, 64)
    out = model(batch)
    assert list(out) == list(data.task_names)
    for name, value in out.items():
        assert value.shape == (64,), name
        assert value.dtype == torch.float32
        assert torch.isfinite(value).all()


def test_single_task_schema(model_cls):
    rng = np.random.default_rng(0)
    one = MultiTaskData(
        dense=rng.standard_normal((40, 3)),
        categorical=rng.integers(0, 4, size=(40, 2)),
        labels={"y": (rng.random(40) < 0.5).astype(float)},
        tasks={"y": "binary"},
        dense_names=["a", "b", "c"],
        categorical_names=["u", "v"],
    )
    if not accepts(model_cls, one.schema):
        with pytest.raises(ValueError, match=model_cls.__name__):
            model_cls(one.schema)
        return
    model = model_cls(one.schema)
    batch = _batch(one, 8)
    out = model(batch)
    assert list(out) == ["y"] and out["y"].shape == (8,)
    _total_loss(model, batch).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_predict_shapes_and_ranges(model_cls, data):
    model = model_cls(data.schema)
    pred = model.predict(data, batch_size=300)
    # The task columns first, in task order; a model may add its own after them (ESMM: pctr,
    # pcvr, pctcvr).
    names = list(data.task_names)
    assert list(pred.columns[: len(names)]) == names
    assert not set(pred.columns[len(names) :]) & set(names)
    assert len(pred) == len(data)
    for task in data.schema.tasks:
        if task.kind == "binary":
            assert ((pred[task.name] > 0) & (pred[task.name] < 1)).all()
    assert model.training  # predict restores the mode


def test_gradients_reach_every_parameter(model_cls, data):
    model = model_cls(data.schema)
    batch = _batch(data)
    if "dwell_time" in data.task_names:
        assert batch.masks["dwell_time"].any()
    _total_loss(model, batch).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_batch_size_one(model_cls, data):
    model = model_cls(data.schema)
    batch = next(iter(data.loader(batch_size=1, shuffle=False)))
    out = model(batch)
    for value in out.values():
        assert value.shape == (1,)
    loss = _total_loss(model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    assert all(v.shape == (1,) for v in model(batch).values())


def test_seed_fixes_initial_weights(model_cls, data):
    a = model_cls(data.schema, seed=1)
    b = model_cls(data.schema, seed=1)
    c = model_cls(data.schema, seed=2)
    assert _same_weights(a, b)
    assert not _same_weights(a, c)
    # Every parameter depends on the seed, except those with a fixed initialisation from the
    # paper (cross-stitch and sluice mixing weights), which are then equal for every seed.
    d = model_cls(data.schema, seed=3)
    for (name, pa), pc, pd in zip(
        a.named_parameters(), c.parameters(), d.parameters(), strict=True
    ):
        assert not torch.equal(pa, pc) or torch.equal(pa, pd), name


def test_seed_does_not_depend_on_global_rng(model_cls, data):
    torch.manual_seed(123)
    a = model_cls(data.schema, seed=5)
    torch.manual_seed(456)
    b = model_cls(data.schema, seed=5)
    assert _same_weights(a, b)


def test_construction_with_seed_leaves_global_rng_unchanged(model_cls, data):
    torch.manual_seed(2024)
    state = torch.get_rng_state()
    model_cls(data.schema, seed=7)
    unchanged = torch.equal(state, torch.get_rng_state())
    assert unchanged, f"{model_cls.__name__}(schema, seed=7) advanced the global torch RNG"


def test_reset_parameters_with_seed_leaves_global_rng_unchanged(model_cls, data):
    model = model_cls(data.schema, seed=7)
    before = [p.detach().clone() for p in model.parameters()]
    state = torch.get_rng_state()
    model.reset_parameters(seed=7)
    assert torch.equal(state, torch.get_rng_state())
    assert all(torch.equal(x, y) for x, y in zip(before, model.parameters(), strict=True))


def test_unseeded_models_follow_global_rng(model_cls, data):
    torch.manual_seed(99)
    a = model_cls(data.schema, seed=None)
    torch.manual_seed(99)
    b = model_cls(data.schema, seed=None)
    c = model_cls(data.schema, seed=None)
    assert _same_weights(a, b)
    assert not _same_weights(b, c)


def test_unseeded_reset_draws_new_weights(model_cls, data):
    """``reset_parameters()`` without a seed uses (and advances) the global random state."""
    torch.manual_seed(0)
    model = model_cls(data.schema, seed=None)
    model.reset_parameters()
    first = [p.detach().clone() for p in model.parameters()]
    model.reset_parameters()
    same = all(torch.equal(x, y) for x, y in zip(first, model.parameters(), strict=True))
    assert not same, "two unseeded reset_parameters() calls gave identical weights"


def test_rejects_non_schema(model_cls, data):
    with pytest.raises(TypeError, match="Schema"):
        model_cls(data)


@pytest.mark.parametrize("data_name", DATASETS)
def test_schemas_a_model_cannot_take_raise(request, model_cls, data_name):
    """A model builds for every schema it declares it accepts and refuses the others with a
    ValueError that names it."""
    data = request.getfixturevalue(data_name)
    if accepts(model_cls, data.schema):
        assert model_cls(data.schema).task_names == data.task_names
    else:
        with pytest.raises(ValueError, match=model_cls.__name__):
            model_cls(data.schema)


def test_batch_of_another_schema_raises(request, model_cls):
    """A model built for one data set, given a batch or data of another, says so clearly."""
    pairs = [(name, other) for name in DATASETS for other in DATASETS if other != name]
    for name, other in pairs:
        data, wrong = (request.getfixturevalue(n) for n in (name, other))
        if not accepts(model_cls, data.schema):
            data = request.getfixturevalue(BINARY_VARIANTS[name])
        model = model_cls(data.schema)
        with pytest.raises(ValueError, match="does not match the model's schema"):
            model(_batch(wrong, 8))
        with pytest.raises(ValueError, match="schema differs"):
            model.predict(wrong)
    # The same features with other tasks: the forward pass cannot tell, predict can.
    full, binary = request.getfixturevalue("funnel_small"), request.getfixturevalue("funnel_binary")
    data, wrong = (full, binary) if accepts(model_cls, full.schema) else (binary, full)
    with pytest.raises(ValueError, match="schema differs"):
        model_cls(data.schema).predict(wrong)


def test_training_loss_falls(model_cls, data):
    train, valid = data.split((0.8, 0.2), seed=0)
    model = model_cls(data.schema, seed=0)
    result = mb.fit(
        model, train, valid, epochs=4, batch_size=128, lr=3e-3, device="cpu", progress=False
    )
    hist = result.history
    loss = hist[(hist["split"] == "train") & (hist["task"] == "all") & (hist["metric"] == "loss")]
    values = loss.sort_values("epoch")["value"].to_numpy()
    assert len(values) == 4
    assert np.isfinite(values).all()
    assert values[-1] < values[0]


def test_shared_parameters():
    schema = mb.make_correlated_tasks(10, 0.5, n_features=4).schema
    shared = SharedBottom(schema).shared_parameters()
    assert len(shared) > 0
    model = SharedBottom(schema)
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in model.shared_parameters()} <= ids
    tower_ids = {id(p) for p in model.towers.parameters()}
    assert not tower_ids & {id(p) for p in model.shared_parameters()}
    assert SingleTask(schema).shared_parameters() == []


@pytest.mark.parametrize("data_name", DATASETS)
def test_single_task_gradient_isolation(request, data_name):
    data = request.getfixturevalue(data_name)
    model = SingleTask(data.schema, seed=0)
    batch = _batch(data)
    names = data.task_names
    for a, task_a in enumerate(names):
        model.zero_grad(set_to_none=False)
        losses = model.task_losses(model(batch), batch)
        losses[task_a].backward()
        for w in [*model.networks.weights, *model.networks.biases]:
            for b in range(len(names)):
                grad = w.grad[b]
                if b == a:
                    assert grad.abs().sum() > 0, (task_a, b)
                else:
                    assert torch.count_nonzero(grad) == 0, (task_a, names[b])
        if model.input.embedding is not None:
            total = model.input.total_categories
            grad = model.input.embedding.weight.grad
            for b in range(len(names)):
                block = grad[b * total : (b + 1) * total]
                if b == a:
                    assert block.abs().sum() > 0
                else:
                    assert torch.count_nonzero(block) == 0


def _loop_mlp(mlp: ParallelMLP, x: torch.Tensor, p: int) -> torch.Tensor:
    h = x if x.dim() == 2 else x[p]
    last = len(mlp.weights) - 1
    for i, (w, b) in enumerate(zip(mlp.weights, mlp.biases, strict=True)):
        h = h @ w[p] + b[p, 0]
        if i < last or mlp.final_activation:
            h = torch.relu(h)
    return h


@pytest.mark.parametrize("final_activation", [False, True])
@pytest.mark.parametrize("units", [(5,), (7, 3), (6, 4, 2)])
def test_parallel_mlp_equals_loop_of_mlps(units, final_activation):
    torch.manual_seed(0)
    mlp = ParallelMLP(4, 9, units, final_activation=final_activation)
    for w in mlp.weights:
        assert w.shape[0] == 4
    x2 = torch.randn(11, 9)
    x3 = torch.randn(4, 11, 9)
    out2, out3 = mlp(x2), mlp(x3)
    assert out2.shape == out3.shape == (4, 11, units[-1])
    for p in range(4):
        torch.testing.assert_close(out2[p], _loop_mlp(mlp, x2, p))
        torch.testing.assert_close(out3[p], _loop_mlp(mlp, x3, p))
    assert mlp.out_dim == units[-1]


def test_parallel_mlp_equals_separate_linear_layers():
    torch.manual_seed(1)
    mlp = ParallelMLP(3, 5, (4, 2))
    x = torch.randn(8, 5)
    for p in range(3):
        first = torch.nn.Linear(5, 4)
        second = torch.nn.Linear(4, 2)
        with torch.no_grad():
            first.weight.copy_(mlp.weights[0][p].T)
            first.bias.copy_(mlp.biases[0][p, 0])
            second.weight.copy_(mlp.weights[1][p].T)
            second.bias.copy_(mlp.biases[1][p, 0])
        torch.testing.assert_close(mlp(x)[p], second(torch.relu(first(x))))


@pytest.mark.parametrize(
    ("args", "units"), [((0, 3), (2,)), ((2, 0), (2,)), ((2, 3), ()), ((2, 3), (4, 0))]
)
def test_parallel_mlp_bad_sizes(args, units):
    with pytest.raises(ValueError, match="ParallelMLP"):
        ParallelMLP(*args, units)


def test_input_layer_shapes(funnel_small, correlated_small):
    batch = _batch(funnel_small, 16)
    layer = InputLayer(funnel_small.schema, embedding_dim=4)
    assert layer.output_dim == 3 + 6 * 4
    assert layer(batch).shape == (16, layer.output_dim)
    copies = InputLayer(funnel_small.schema, embedding_dim=4, n_copies=3)
    assert copies(batch).shape == (3, 16, copies.output_dim)
    dense_only = InputLayer(correlated_small.schema)
    batch = _batch(correlated_small, 16)
    torch.testing.assert_close(dense_only(batch), batch.dense)


def test_input_layer_fields_use_their_own_rows(funnel_small):
    """Field j of value v reads row offset_j + v of the shared table."""
    layer = InputLayer(funnel_small.schema, embedding_dim=2)
    batch = _batch(funnel_small, 8)
    out = layer(batch)
    offsets = np.concatenate([[0], np.cumsum(funnel_small.schema.cardinalities)[:-1]])
    table = layer.embedding.weight
    for j, offset in enumerate(offsets):
        rows = table[batch.categorical[:, j] + int(offset)]
        torch.testing.assert_close(out[:, 2 * j : 2 * j + 2], rows)
