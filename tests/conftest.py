"""Small shared data sets for the unit tests.

Every fixture is built once for the whole test directory (``scope="package"``). The tests
treat these data sets as read-only; a test that needs to change data builds its own copy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mtlbook as mb
from mtlbook.data import MultiTaskData

# The models in these tests are tiny: one thread per operation is faster than several, which
# would mostly wait for each other.
torch.set_num_threads(1)

# Sizes of the small funnel used by the model and training tests.
SMALL_FUNNEL = {"n_users": 200, "n_items": 100}


@pytest.fixture(scope="package")
def funnel_small() -> MultiTaskData:
    """3,000 impressions, categorical + dense features, click / purchase / dwell_time."""
    return mb.simulate_funnel(
        3_000, seed=1, with_dwell_time=True, click_rate=0.1, purchase_rate=0.03, **SMALL_FUNNEL
    )


@pytest.fixture(scope="package")
def funnel_binary(funnel_small) -> MultiTaskData:
    """The small funnel with its binary tasks only: click and purchase (no dwell_time)."""
    return funnel_small.select_tasks(["click", "purchase"])


@pytest.fixture(scope="package")
def funnel_large() -> MultiTaskData:
    """200,000 impressions with the default knobs, for rate checks."""
    return mb.simulate_funnel(200_000, seed=0)


@pytest.fixture(scope="package")
def correlated_small() -> MultiTaskData:
    """Two dense-only regression tasks, 1,000 samples, 8 features."""
    return mb.make_correlated_tasks(1_000, 0.5, n_features=8, seed=0)


@pytest.fixture(scope="package")
def huge_task2_scale(correlated_small) -> MultiTaskData:
    """``correlated_small`` with task2's labels scaled by 1e25: its loss overflows at step 1."""
    data = correlated_small
    return MultiTaskData(
        dense=data.dense,
        labels={"task1": data.labels["task1"], "task2": data.labels["task2"] * 1e25},
        tasks=data.schema.tasks,
        dense_names=data.schema.dense,
    )


@pytest.fixture(scope="package")
def correlated_binary() -> MultiTaskData:
    """Two dense-only binary tasks, 2,000 samples, 8 features."""
    return mb.make_correlated_tasks(2_000, 0.8, n_features=8, task_type="binary", seed=0)


def _indexed_data(n: int = 103, seed: int = 0) -> MultiTaskData:
    rng = np.random.default_rng(seed)
    idx = np.arange(n, dtype=np.float64)
    mask_b = rng.random(n) < 0.5
    return MultiTaskData(
        dense=np.stack([idx, rng.standard_normal(n)], axis=1),
        categorical=(np.arange(n) % 5)[:, None],
        labels={"a": (rng.random(n) < 0.3).astype(float), "b": rng.standard_normal(n)},
        tasks={"a": "binary", "b": "regression"},
        masks={"b": mask_b},
        dense_names=["idx", "noise"],
        categorical_names=["cat"],
        groups=np.arange(n) % 7,
        truth=pd.DataFrame({"t": idx}),
    )


@pytest.fixture(scope="package")
def make_indexed():
    """Factory of a hand-made data set whose dense column ``idx`` is the row number.

    ``make_indexed(n, seed)``: task ``a`` is binary, task ``b`` is a regression task masked to
    about half of the rows, groups are ``idx % 7`` and the truth column ``t`` equals ``idx``.
    """
    return _indexed_data
