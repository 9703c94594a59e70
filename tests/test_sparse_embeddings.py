"""Embedding tables with sparse gradients: fit trains them with SparseAdam, the rest with Adam."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mtlbook as mb
from mtlbook.data import MultiTaskData
from mtlbook.models import MMoE, SharedBottom, sparse_embeddings
from mtlbook.weighting import FAMO, PCGrad, UncertaintyWeighting


def small_vocabulary(n: int = 1024, seed: int = 0) -> MultiTaskData:
    """Two fields of 3 values: every batch of 256 rows holds every value of both fields."""
    rng = np.random.default_rng(seed)
    categorical = rng.integers(0, 3, (n, 2))
    categorical[:6] = [[0, 0], [1, 1], [2, 2], [0, 1], [1, 2], [2, 0]]
    dense = rng.standard_normal((n, 4))
    logit = dense[:, 0] + (categorical[:, 0] == 1) - (categorical[:, 1] == 2)
    labels = {
        "click": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float),
        "score": logit + 0.1 * rng.standard_normal(n),
    }
    return MultiTaskData(
        dense=dense,
        categorical=categorical,
        labels=labels,
        tasks={"click": "binary", "score": "regression"},
        dense_names=[f"x{i}" for i in range(4)],
        categorical_names=["f0", "f1"],
        cardinalities=[3, 3],
    )


def test_sparse_embeddings_switches_every_table_and_back(funnel_small):
    model = MMoE(funnel_small.schema, seed=0)
    assert sparse_embeddings(model) is model
    assert model.input.embedding.sparse
    sparse_embeddings(model, False)
    assert not model.input.embedding.sparse


def test_a_model_without_categorical_features_has_nothing_to_make_sparse():
    data = mb.make_correlated_tasks(50, 0.5, seed=0)
    with pytest.raises(ValueError, match="no embedding table"):
        sparse_embeddings(SharedBottom(data.schema))


def test_sparse_training_equals_dense_adam_when_every_row_is_in_every_batch():
    # SparseAdam is "lazy" Adam: it updates the rows a batch uses. Where every batch uses every
    # row the two optimisers do the same arithmetic (but for eps), so the weights agree.
    data = small_vocabulary()
    train, valid = data.split((0.75, 0.25), seed=0)
    runs = {}
    for sparse in (False, True):
        model = MMoE(train.schema, n_experts=3, expert_units=(8,), tower_units=(4,), seed=1)
        if sparse:
            sparse_embeddings(model)
        runs[sparse] = mb.fit(model, train, valid, epochs=2, batch_size=256, progress=False, seed=2)
    dense, sparse = (runs[s].model.state_dict() for s in (False, True))
    for name, value in dense.items():
        # SparseAdam adds eps before the bias correction, Adam after it: ~1e-6 apart here, while
        # a table that is not trained, or trained twice, is ~1e-2 away.
        torch.testing.assert_close(sparse[name], value, rtol=0, atol=1e-5, msg=name)
    assert (
        runs[True].model.input.embedding.weight.grad is None
        or runs[True].model.input.embedding.sparse
    )


def test_sparse_training_resumes_from_a_checkpoint(tmp_path, funnel_small):
    train, valid = funnel_small.split((0.8, 0.2), seed=0)

    def model():
        return sparse_embeddings(MMoE(train.schema, n_experts=2, expert_units=(8,), seed=0))

    whole = mb.fit(model(), train, valid, epochs=2, batch_size=128, progress=False)
    path = tmp_path / "run.pt"
    mb.fit(model(), train, valid, epochs=1, batch_size=128, progress=False, checkpoint=path)
    resumed = mb.fit(
        model(),
        train,
        valid,
        epochs=2,
        batch_size=128,
        progress=False,
        checkpoint=path,
        resume=True,
    )
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)
    # a dense run cannot pick up the sparse run's optimiser state
    dense = sparse_embeddings(model(), False)
    with pytest.raises(Exception, match="sparse"):
        mb.fit(
            dense,
            train,
            valid,
            epochs=2,
            batch_size=128,
            progress=False,
            checkpoint=path,
            resume=True,
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weighting": PCGrad()}, "PCGrad"),
        ({"weighting": FAMO(max_grad_norm=1.0)}, "FAMO"),
        ({"weight_decay": 1e-4}, "weight_decay"),
    ],
)
def test_what_sparse_tables_cannot_train_with(funnel_small, kwargs, match):
    train, valid = funnel_small.split((0.8, 0.2), seed=0)
    model = sparse_embeddings(MMoE(train.schema, seed=0))
    with pytest.raises(ValueError, match=match):
        mb.fit(model, train, valid, epochs=1, progress=False, **kwargs)


def test_a_loss_weighting_trains_sparse_tables(funnel_small):
    train, valid = funnel_small.split((0.8, 0.2), seed=0)
    model = sparse_embeddings(MMoE(train.schema, seed=0))
    before = model.input.embedding.weight.detach().clone()
    mb.fit(model, train, valid, epochs=1, progress=False, weighting=UncertaintyWeighting())
    assert not torch.equal(before, model.input.embedding.weight)


def test_a_population_refuses_sparse_tables(funnel_small):
    train, valid = funnel_small.split((0.8, 0.2), seed=0)
    with pytest.raises(ValueError, match="sparse gradients"):
        mb.fit_population(
            lambda s: sparse_embeddings(MMoE(train.schema, seed=s)),
            train,
            valid,
            [0, 1],
            epochs=1,
            progress=False,
        )
