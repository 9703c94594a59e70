"""fit() on several processes: two gloo processes launched with torchrun train the runs of
``ddp_fit_script.py``; their weights and histories must be those of one process training on
the same global batches. Plus the sharding helpers, in this process."""

from __future__ import annotations

import doctest
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import ddp_fit_script as script
import numpy as np
import pytest
import torch
import torch.distributed as dist

import mtlbook as mb
from mtlbook.data import Batch, BatchLoader
from mtlbook.models import SharedBottom
from mtlbook.training import distributed
from mtlbook.weighting import CAGrad, EqualWeight
from mtlbook.weighting import __all__ as STRATEGIES

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch without gloo distributed support",
)

SCRIPT = Path(__file__).with_name("ddp_fit_script.py")
# Weights and history of two processes vs one: rounding only (the largest differences
# measured: 8e-7 on a weight, a relative 7e-8 on a history value). FAMO's weights come from
# the small change of the log losses across a step, which magnifies rounding (6e-6).
TOLERANCE = 1e-5
HISTORY_TOLERANCE = {"famo": 5e-5}


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict:
    """The results of ``ddp_fit_script.py`` run by two processes."""
    out = tmp_path_factory.mktemp("ddp")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(SCRIPT),
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A session of its own, so that a run that hangs is stopped with all its processes.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=SCRIPT.parent.parent,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"torchrun did not finish in 120 s:\n{stdout[-3000:]}\n{stderr[-6000:]}")
    if process.returncode != 0:
        pytest.fail(f"torchrun failed ({process.returncode}):\n{stdout[-3000:]}\n{stderr[-6000:]}")
    return torch.load(out / "results.pt", weights_only=False)


@pytest.fixture(scope="module")
def single() -> dict:
    """The same runs in this process."""
    train, valid = script.make_data()
    return {name: script.summary(script.run_one(name, train, valid)) for name in script.RUNS}


def _max_weight_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


@pytest.mark.parametrize("name", list(script.RUNS))
def test_two_processes_train_the_one_process_run(launched, single, name):
    assert launched["world_size"] == 2
    two, one = launched[name], single[name]
    assert _max_weight_difference(two["state"], one["state"]) < TOLERANCE
    for column in ("epoch", "split", "task", "metric"):
        assert two["history"][column] == one["history"][column]
    np.testing.assert_allclose(
        two["history"]["value"],
        one["history"]["value"],
        rtol=HISTORY_TOLERANCE.get(name, TOLERANCE),
        atol=1e-7,
    )
    assert (two["best_epoch"], two["epochs_run"]) == (one["best_epoch"], one["epochs_run"])


@pytest.mark.parametrize("name", list(script.STEPS))
@pytest.mark.parametrize("index", [0, -1])
def test_one_step_gradients_are_those_of_the_global_batch(launched, name, index):
    # Averaged over the two processes by DDP (or by the strategy), a step's gradients are those
    # of one process on the global batch: scale included, which Adam would hide. Batch -1 has
    # one row, so the shard of rank 0 is empty.
    two = launched["gradients"][name, index]
    one = script.step_gradients(name, script.make_data()[0], index)
    assert two.keys() == one.keys()
    for key, expected in one.items():
        scale = float(expected.abs().max())
        torch.testing.assert_close(
            two[key],
            expected,
            rtol=1e-5,
            atol=1e-6 * scale + 1e-12,
            msg=lambda m, key=key: f"{key}: {m}",
        )


def test_every_process_returns_the_same_result(launched):
    # Weights, history, best score and train_seconds, compared between the two processes.
    assert {name: launched[name]["spread"] for name in [*script.RUNS, "resumed"]} == dict.fromkeys(
        [*script.RUNS, "resumed"], 0.0
    )


def test_unseeded_random_weights_are_the_same_on_every_process(launched):
    # RLW(seed=None) seeds its generator from the system: fit gives rank 0's state to all.
    assert launched["rlw_unseeded_spread"] == 0.0


def test_masked_task_counts_are_global(launched, single):
    # dwell_time is masked: its train loss is the mean over the clicked rows of the global
    # batch, not a mean of the two shards' means.
    history = launched["equal"]["history"]
    rows = [
        i
        for i, (s, t) in enumerate(zip(history["split"], history["task"], strict=True))
        if s == "train" and t == "dwell_time"
    ]
    two = np.array(history["value"])[rows]
    one = np.array(single["equal"]["history"]["value"])[rows]
    np.testing.assert_allclose(two, one, rtol=TOLERANCE)


def test_checkpoint_written_by_rank_zero_and_resumed(launched):
    assert launched["files_after_first"] == ["run.pt"]  # one file, no leftovers
    assert launched["files_after_resume"] == ["run.pt"]
    assert launched["checkpoint_rng_ranks"] == 2
    resumed, whole = launched["resumed"], launched["equal"]
    assert all(torch.equal(resumed["state"][k], whole["state"][k]) for k in whole["state"])
    assert resumed["history"] == whole["history"]


def test_strategy_that_cannot_train_distributed_is_refused(launched):
    message = launched["refused"]
    assert message is not None and "Refused" in message and "several processes" in message


# ---------------------------------------------------------------------- in this process
def test_strategies_declare_how_they_train_distributed():
    manual = {name for name in STRATEGIES if getattr(mb.weighting, name).distributed == "manual"}
    assert manual == {"PCGrad", "MGDA", "CAGrad", "IMTL"}
    assert all(getattr(mb.weighting, name).distributed in ("ddp", "manual") for name in STRATEGIES)


@pytest.mark.parametrize("n", [0, 1, 5, 64])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_bounds_partition_the_batch(n, world):
    bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("bad", [(0, 2, 2), (0, -1, 2), (-1, 0, 2), (3, 0, 0)])
def test_shard_bounds_reject_bad_arguments(bad):
    with pytest.raises(ValueError, match="rank"):
        distributed.shard_bounds(*bad)


def test_sharded_batch_loaders_cover_the_global_batches(funnel_small):
    whole = list(funnel_small.loader(100, seed=4))
    shards = [
        list(BatchLoader(funnel_small, 100, shuffle=True, seed=4, shard=(r, 3))) for r in range(3)
    ]
    assert all(
        len(s) == len(whole) == len(BatchLoader(funnel_small, 100, True, 4, shard=(r, 3)))
        for r, s in enumerate(shards)
    )
    for b, batch in enumerate(whole):
        parts = [s[b] for s in shards]
        assert torch.equal(torch.cat([p.categorical for p in parts]), batch.categorical)
        for task in batch.labels:
            assert torch.equal(torch.cat([p.labels[task] for p in parts]), batch.labels[task])
        for task in batch.masks:
            assert torch.equal(torch.cat([p.masks[task] for p in parts]), batch.masks[task])
    with pytest.raises(ValueError, match="rank < world_size"):
        BatchLoader(funnel_small, 100, True, 4, shard=(2, 2))
    with pytest.raises(ValueError, match="shard"):
        BatchLoader(funnel_small, 100, True, 4, shard=2)


def test_sharded_loader_wraps_any_batch_source(funnel_small):
    source = funnel_small.loader(64, seed=1)
    sharded = [distributed.ShardedLoader(source, r, 2) for r in range(2)]
    state = sharded[0].state_dict()
    first = list(sharded[1])  # the first order
    sharded[0].load_state_dict(state)  # the shared source goes back to the first order
    again = list(sharded[1])
    assert len(sharded[0]) == len(source)
    assert all(torch.equal(a.dense, b.dense) for a, b in zip(first, again, strict=True))
    batches = list(funnel_small.loader(10, shuffle=False))
    halves = [list(distributed.ShardedLoader(batches, r, 2)) for r in range(2)]
    assert [len(b) for b in halves[0]] == [5] * len(batches)
    assert torch.equal(halves[1][0].dense, batches[0].dense[5:])


def test_shard_batch_outside_a_process_group_is_the_batch():
    batch = Batch(dense=torch.zeros(3, 1), categorical=None, labels={"y": torch.ones(3)})
    assert distributed.shard_batch(batch) is batch
    with pytest.raises(TypeError, match="Batch"):
        distributed.shard_batch({"y": torch.ones(3)}, 0, 2)


def test_helpers_outside_a_process_group(funnel_binary):
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (
        0,
        1,
        True,
    )
    model = SharedBottom(funnel_binary.schema, bottom_units=(8,), tower_units=(4,), seed=0)
    assert distributed.evaluate(model, funnel_binary).equals(mb.evaluate(model, funnel_binary))
    batch = next(iter(funnel_binary.loader(32)))
    losses = model.task_losses(model(batch), batch)
    same, extra = distributed.global_losses(losses, batch)
    assert same == losses and extra is None


def test_init_needs_torchrun_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        distributed.init("gloo")
    assert not distributed.is_distributed()


def test_fit_distributed_argument(funnel_binary):
    train, valid = funnel_binary.split((0.5, 0.5))
    model = SharedBottom(train.schema, bottom_units=(8,), tower_units=(4,), seed=0)
    with pytest.raises(ValueError, match="process group"):
        mb.fit(model, train, valid, epochs=1, distributed=True, progress=False, device="cpu")
    with pytest.raises(TypeError, match="distributed"):
        mb.fit(model, train, valid, epochs=1, distributed="yes", progress=False, device="cpu")
    # distributed=False is the plain run.
    a = mb.fit(
        model,
        train,
        valid,
        epochs=1,
        distributed=False,
        progress=False,
        device="cpu",
        weighting=CAGrad(),
    )
    b = mb.fit(
        SharedBottom(train.schema, bottom_units=(8,), tower_units=(4,), seed=0),
        train,
        valid,
        epochs=1,
        progress=False,
        device="cpu",
        weighting=CAGrad(),
    )
    assert a.history.equals(b.history)
    assert EqualWeight.distributed == "ddp"


def test_docstring_examples():
    result = doctest.testmod(distributed, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0 and result.failed == 0
