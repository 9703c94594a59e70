"""Serving cost: parameter counts and inference latency of serving setups (chapter 12.1)."""

from __future__ import annotations

import pytest
import torch

from mtlbook.analysis.serving import inference_latency
from mtlbook.book.ch12_1 import one_model, separate_models, serving_cost
from mtlbook.models import SharedBottom, SingleTask
from mtlbook.utils import count_parameters


def test_parameter_count_splits_embeddings_and_shared_parts(funnel_binary):
    model = SharedBottom(funnel_binary.schema)
    counts = count_parameters(model, by_part=True)
    assert counts["total"] == model.n_parameters() == count_parameters(model)
    table = model.input.embedding.weight
    assert counts["embedding"] == table.numel()
    assert counts["dense"] == counts["total"] - table.numel()
    shared = sum(p.numel() for p in model.shared_parameters())
    assert counts["shared"] == shared and counts["task"] == counts["total"] - shared
    both = count_parameters([model, model], by_part=True)
    assert both == {k: 2 * v for k, v in counts.items()}
    model.towers.weights[0].requires_grad_(False)  # frozen parameters are left out by default
    frozen = model.towers.weights[0].numel()
    assert count_parameters(model) == counts["total"] - frozen
    assert count_parameters(model, trainable_only=False) == counts["total"]


def test_separate_single_task_models_equal_one_single_task_in_size(funnel_small):
    separate = separate_models(SingleTask)(funnel_small)
    assert [m.task_names for m in separate] == [(t,) for t in funnel_small.task_names]
    together = one_model(SingleTask)(funnel_small)
    assert len(together) == 1
    assert count_parameters(separate, by_part=True) == count_parameters(together, by_part=True)


def test_inference_latency_reports_and_restores_mode(funnel_binary):
    model = SharedBottom(funnel_binary.schema)
    model.train()
    latency = inference_latency(model, funnel_binary, batch_size=128, repeats=3, warmup=1)
    assert set(latency) == {"median", "min", "max"}
    assert 0 < latency["min"] <= latency["median"] <= latency["max"]
    assert model.training  # put back as it was
    assert torch.is_grad_enabled()


def test_serving_cost_table(funnel_small):
    setups = {"separate": separate_models(SingleTask), "shared": one_model(SharedBottom)}
    table = serving_cost(
        funnel_small,
        setups,
        task_counts=(1, 3),
        baseline="separate",
        batch_size=64,
        repeats=2,
        warmup=0,
    )
    assert list(table["n_tasks"]) == [1, 1, 3, 3]
    assert list(table["n_models"]) == [1, 1, 3, 1]
    base = table[table["setup"] == "separate"]
    assert (base["parameter_ratio"] == 1).all() and (base["latency_ratio"] == 1).all()
    three = table[table["n_tasks"] == 3].set_index("setup")
    # Shared-Bottom keeps one copy of the embedding tables, the separate models three.
    assert three.loc["separate", "embedding"] == 3 * three.loc["shared", "embedding"]
    assert three.loc["shared", "parameter_ratio"] < 1
    assert (table["latency_ms"] > 0).all()


def test_serving_cost_rejects_bad_arguments(funnel_binary):
    setups = {"shared": one_model(SharedBottom)}
    with pytest.raises(ValueError, match="task_counts"):
        serving_cost(funnel_binary, setups, task_counts=(3,))
    with pytest.raises(ValueError, match="baseline"):
        serving_cost(funnel_binary, setups, baseline="nope")
    with pytest.raises(ValueError, match="setups"):
        serving_cost(funnel_binary, {})
    with pytest.raises(ValueError, match="serves tasks"):
        serving_cost(
            funnel_binary,
            {"half": lambda d: [SingleTask(d.select_tasks(["click"]).schema)]},
            task_counts=(2,),
            repeats=1,
        )
    with pytest.raises(ValueError, match="repeats"):
        inference_latency(SharedBottom(funnel_binary.schema), funnel_binary, repeats=0)
    with pytest.raises(TypeError, match="factory"):
        separate_models("SingleTask")
