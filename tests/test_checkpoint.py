"""Checkpoints of fit(): a run interrupted and resumed ends bitwise like the uninterrupted run
(every weighting strategy, dropout, early stopping); atomic writes; the refusals (another
configuration, corrupt files, other format versions, files that are not checkpoints)."""

from __future__ import annotations

import copy
import doctest
import importlib
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import mtlbook as mb
import mtlbook.weighting as weighting_module
from mtlbook.data import BatchLoader, MultiTaskData
from mtlbook.models import SharedBottom
from mtlbook.training.checkpoint import CHECKPOINT_VERSION, CheckpointError, load_checkpoint
from mtlbook.weighting import (
    DWA,
    FAMO,
    IMTL,
    MGDA,
    RLW,
    CAGrad,
    EqualWeight,
    FixedWeights,
    GradNorm,
    PCGrad,
    ScheduledWeights,
    UncertaintyWeighting,
    Weighting,
)

BATCH = 50
FAST = {"batch_size": BATCH, "device": "cpu", "progress": False, "lr": 1e-2}
EPOCHS = 4

#: Every strategy of mtlbook.weighting (some in two settings); test_every_strategy_is_covered
#: checks that none is missing.
STRATEGIES = {
    "equal": EqualWeight,
    "fixed": lambda: FixedWeights({"task1": 1.0, "task2": 3.0, "task3": 0.5}),
    "uncertainty": UncertaintyWeighting,
    "dwa": DWA,
    "rlw": lambda: RLW(seed=3),
    "rlw-dirichlet": lambda: RLW("dirichlet", seed=4),
    "famo": FAMO,
    "scheduled-epoch": lambda: ScheduledWeights(
        {"task1": 1.0, "task2": 2.0, "task3": 1.0}, ratios=0.8
    ),
    "scheduled-step": lambda: ScheduledWeights(
        ratios={"task1": 1.0, "task2": 0.95, "task3": 1.05}, per="step"
    ),
    "gradnorm": GradNorm,
    "pcgrad": lambda: PCGrad(seed=5),
    "mgda": MGDA,
    "mgda-ub": lambda: MGDA(upper_bound=True),
    "cagrad": CAGrad,
    "imtl": IMTL,
}


@pytest.fixture(scope="module")
def parts():
    """Three tasks (two binary, one regression), task2 defined on 70% of the samples: with
    three tasks PCGrad's random orders and MGDA's Frank-Wolfe iterations come into play."""
    base = mb.make_correlated_tasks(400, 0.3, n_features=6, task_type="binary", seed=2)
    rng = np.random.default_rng(0)
    task3 = base.dense @ rng.standard_normal(base.dense.shape[1]) + rng.standard_normal(400)
    data = MultiTaskData(
        dense=base.dense,
        labels={**base.labels, "task3": task3},
        tasks={"task1": "binary", "task2": "binary", "task3": "regression"},
        masks={"task2": rng.random(400) < 0.7},
        dense_names=base.schema.dense,
    )
    return data.split((0.5, 0.5), seed=0)


@pytest.fixture(scope="module")
def flipped(parts):
    """The validation half with flipped binary labels and negated regression labels: the
    validation loss rises while training."""
    valid = parts[1]
    labels = {
        "task1": 1.0 - valid.labels["task1"],
        "task2": 1.0 - valid.labels["task2"],
        "task3": -valid.labels["task3"],
    }
    return MultiTaskData(
        dense=valid.dense,
        labels=labels,
        tasks=valid.schema.tasks,
        masks=valid.masks,
        dense_names=valid.schema.dense,
    )


def _model(schema, dropout: float = 0.0) -> SharedBottom:
    return SharedBottom(schema, bottom_units=(12,), tower_units=(6,), dropout=dropout, seed=1)


class _Interrupted(Exception):
    pass


class _CrashAt(mb.Callback):
    """Stops the run by raising after the optimiser step ``step`` (mid-epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, model, step, losses):
        if step == self.step:
            raise _Interrupted(step)


def _steps_per_epoch(train) -> int:
    return len(train.loader(BATCH))


def _same_state(a, b) -> bool:
    """Equal nested states: tensors bitwise, everything else by ==."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return (
            isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return (
            isinstance(b, list | tuple)
            and len(a) == len(b)
            and all(_same_state(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


def _assert_same_result(resumed, whole) -> None:
    pd.testing.assert_frame_equal(resumed.history, whole.history, check_exact=True)
    assert (resumed.best_epoch, resumed.best_score, resumed.epochs_run, resumed.monitor) == (
        whole.best_epoch,
        whole.best_score,
        whole.epochs_run,
        whole.monitor,
    )
    a, b = resumed.model.state_dict(), whole.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _interrupt_and_resume(
    train, valid, path, make_weighting, *, crash_step, dropout=0.0, reuse_objects=False, **kwargs
):
    """Run until ``crash_step`` with checkpoints, then resume; return the resumed result
    and the weighting it ended with."""
    model, weighting = _model(train.schema, dropout), make_weighting()
    with pytest.raises(_Interrupted):
        mb.fit(
            model,
            train,
            valid,
            weighting=weighting,
            checkpoint=path,
            callbacks=[_CrashAt(crash_step)],
            **kwargs,
            **FAST,
        )
    # The last complete epoch before the crash was saved.
    assert load_checkpoint(path)["epoch"] == (crash_step - 1) // _steps_per_epoch(train)
    if not reuse_objects:  # as in a new process: everything built afresh
        model, weighting = _model(train.schema, dropout), make_weighting()
    result = mb.fit(
        model, train, valid, weighting=weighting, checkpoint=path, resume=True, **kwargs, **FAST
    )
    return result, weighting


# ---------------------------------------------------------------------- resume = uninterrupted
def test_every_strategy_is_covered():
    covered = {type(make()) for make in STRATEGIES.values()}
    strategies = {getattr(weighting_module, n) for n in weighting_module.__all__} - {Weighting}
    assert strategies <= covered, strategies - covered


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_resumed_run_equals_uninterrupted(parts, tmp_path, name):
    train, valid = parts
    make = STRATEGIES[name]
    whole_weighting = make()
    whole = mb.fit(
        _model(train.schema), train, valid, epochs=EPOCHS, weighting=whole_weighting, **FAST
    )
    # Crash two steps into epoch 3: the checkpoint of epoch 2 is resumed.
    crash = 2 * _steps_per_epoch(train) + 2
    path = tmp_path / "run.pt"
    resumed, weighting = _interrupt_and_resume(
        train, valid, path, make, crash_step=crash, epochs=EPOCHS
    )
    _assert_same_result(resumed, whole)
    assert _same_state(weighting.state_dict(), whole_weighting.state_dict())
    final = load_checkpoint(path)
    assert final["epoch"] == EPOCHS and not final["stopped"]


@pytest.mark.parametrize("name", ["dwa", "famo", "gradnorm"])
def test_resume_with_the_crashed_objects(parts, tmp_path, name):
    """Passing the model and strategy the crashed run left half-trained changes nothing."""
    train, valid = parts
    whole_weighting = STRATEGIES[name]()
    whole = mb.fit(
        _model(train.schema), train, valid, epochs=EPOCHS, weighting=whole_weighting, **FAST
    )
    resumed, weighting = _interrupt_and_resume(
        train,
        valid,
        tmp_path / "run.pt",
        STRATEGIES[name],
        crash_step=2 * _steps_per_epoch(train) + 1,
        epochs=EPOCHS,
        reuse_objects=True,
    )
    _assert_same_result(resumed, whole)
    assert _same_state(weighting.state_dict(), whole_weighting.state_dict())


@pytest.mark.parametrize("name", ["equal", "rlw"])
def test_resume_with_dropout(parts, tmp_path, name):
    train, valid = parts
    whole = mb.fit(
        _model(train.schema, dropout=0.3),
        train,
        valid,
        epochs=4,
        seed=7,
        weighting=STRATEGIES[name](),
        **FAST,
    )
    resumed, _ = _interrupt_and_resume(
        train,
        valid,
        tmp_path / "run.pt",
        STRATEGIES[name],
        crash_step=2 * _steps_per_epoch(train) + 3,
        dropout=0.3,
        epochs=4,
        seed=7,
    )
    _assert_same_result(resumed, whole)
    # The dropout masks matter: another seed gives other numbers.
    other = mb.fit(
        _model(train.schema, dropout=0.3),
        train,
        valid,
        epochs=4,
        seed=8,
        weighting=STRATEGIES[name](),
        **FAST,
    )
    assert not other.history.equals(whole.history)


@pytest.mark.parametrize("restore_best", [True, False])
def test_resume_with_early_stopping(parts, flipped, tmp_path, restore_best):
    train, _ = parts
    options = {"epochs": 8, "early_stopping": 2, "restore_best": restore_best}
    whole = mb.fit(_model(train.schema), train, flipped, **options, **FAST)
    assert whole.epochs_run < 8, "the construction should stop early"
    assert whole.epochs_run == whole.best_epoch + 2  # patience 2 ran out
    # Crash in the last epoch: the resumed checkpoint has a stale epoch and an older best.
    crash = (whole.epochs_run - 1) * _steps_per_epoch(train) + 1
    path = tmp_path / "run.pt"
    resumed, _ = _interrupt_and_resume(
        train, flipped, path, EqualWeight, crash_step=crash, **options
    )
    _assert_same_result(resumed, whole)
    assert load_checkpoint(path)["stopped"]
    # Resuming a run that stopped early gives its result again, without training.
    again = mb.fit(
        _model(train.schema),
        train,
        flipped,
        checkpoint=path,
        resume=True,
        callbacks=[_CrashAt(1)],
        **options,
        **FAST,
    )
    _assert_same_result(again, whole)


def test_more_epochs_continue_a_finished_run(parts, tmp_path):
    """epochs=2, then resume with epochs=5: the run of epochs=5 (nothing depends on the
    total), also when checkpoints are written every 2 epochs only."""
    train, valid = parts
    whole = mb.fit(_model(train.schema), train, valid, epochs=5, weighting=DWA(), **FAST)
    path = tmp_path / "run.pt"
    short = mb.fit(
        _model(train.schema),
        train,
        valid,
        epochs=3,
        weighting=DWA(),
        checkpoint=path,
        checkpoint_every=2,
        **FAST,
    )
    assert load_checkpoint(path)["epoch"] == 3  # the last epoch is always saved
    assert not short.history.equals(whole.history)
    resumed = mb.fit(
        _model(train.schema),
        train,
        valid,
        epochs=5,
        weighting=DWA(),
        checkpoint=path,
        checkpoint_every=2,
        resume=True,
        **FAST,
    )
    _assert_same_result(resumed, whole)


def test_checkpoint_every_and_resume_from_another_file(parts, tmp_path):
    train, valid = parts
    whole = mb.fit(_model(train.schema), train, valid, epochs=4, weighting=FAMO(), **FAST)
    first, second = tmp_path / "a" / "run.pt", tmp_path / "b.pt"
    with pytest.raises(_Interrupted):  # crash in epoch 4; saved after epoch 2 only
        mb.fit(
            _model(train.schema),
            train,
            valid,
            epochs=4,
            weighting=FAMO(),
            checkpoint=first,
            checkpoint_every=2,
            callbacks=[_CrashAt(3 * _steps_per_epoch(train) + 1)],
            **FAST,
        )
    assert load_checkpoint(first)["epoch"] == 2
    resumed = mb.fit(
        _model(train.schema),
        train,
        valid,
        epochs=4,
        weighting=FAMO(),
        checkpoint=second,
        resume=first,
        **FAST,
    )
    _assert_same_result(resumed, whole)
    assert load_checkpoint(first)["epoch"] == 2  # the file resumed from is left alone
    assert load_checkpoint(second)["epoch"] == 4


def test_checkpoint_holds_the_history_and_plain_data(parts, tmp_path):
    train, valid = parts
    path = tmp_path / "run.pt"
    result = mb.fit(_model(train.schema), train, valid, epochs=2, checkpoint=path, **FAST)
    state = torch.load(path, weights_only=True)  # plain tensors and containers only
    assert state["version"] == CHECKPOINT_VERSION
    history = pd.DataFrame(state["history"], columns=result.history.columns)
    pd.testing.assert_frame_equal(history, result.history, check_exact=True)
    assert state["best_epoch"] == result.best_epoch
    for name, value in state["best_state"].items():
        assert torch.equal(value, result.model.state_dict()[name])
    assert sorted(os.listdir(tmp_path)) == ["run.pt"]  # no temporary file left behind


# ---------------------------------------------------------------------- atomic writes
def test_failed_save_keeps_the_previous_checkpoint(parts, tmp_path, monkeypatch):
    train, valid = parts
    path = tmp_path / "run.pt"
    mb.fit(_model(train.schema), train, valid, epochs=2, checkpoint=path, **FAST)
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, file, *args, **kwargs):
        real_save(obj, file, *args, **kwargs)
        file.seek(0)
        file.truncate(100)  # a half-written file, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="No space"):
        mb.fit(_model(train.schema), train, valid, epochs=3, checkpoint=path, resume=True, **FAST)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 2
    assert sorted(os.listdir(tmp_path)) == ["run.pt"]


# ---------------------------------------------------------------------- refusals
def test_resume_with_another_configuration_names_the_difference(parts, tmp_path):
    train, valid = parts
    path = tmp_path / "run.pt"
    mb.fit(
        _model(train.schema), train, valid, epochs=2, weighting=DWA(2.0), checkpoint=path, **FAST
    )
    before = path.read_bytes()
    changes = [
        ({"lr": 1e-3}, r"lr: checkpoint 0\.01, now 0\.001"),
        ({"seed": 1}, r"seed: checkpoint 0, now 1"),
        ({"batch_size": 40}, r"batch_size: checkpoint 50, now 40"),
        ({"weighting": DWA(3.0)}, r"weighting temperature: checkpoint 2\.0, now 3\.0"),
        ({"weighting": EqualWeight()}, r"weighting: checkpoint '.*DWA', now '.*EqualWeight'"),
        ({"monitor": "task1:auc"}, r"monitor"),
        ({"early_stopping": 3}, r"early_stopping: checkpoint None, now 3"),
    ]
    for change, message in changes:
        options = {**FAST, "weighting": DWA(2.0), **change}
        with pytest.raises(CheckpointError, match=message):
            mb.fit(
                _model(train.schema),
                train,
                valid,
                epochs=3,
                checkpoint=path,
                resume=True,
                **options,
            )
    with pytest.raises(CheckpointError, match=r"model structure: .*Dropout"):
        mb.fit(
            _model(train.schema, dropout=0.1),
            train,
            valid,
            epochs=3,
            checkpoint=path,
            resume=True,
            weighting=DWA(2.0),
            **FAST,
        )
    with pytest.raises(CheckpointError, match=r"train samples: checkpoint 200, now 150"):
        mb.fit(
            _model(train.schema),
            train.subset(np.arange(150)),
            valid,
            epochs=3,
            checkpoint=path,
            resume=True,
            weighting=DWA(2.0),
            **FAST,
        )
    with pytest.raises(CheckpointError, match=r"already run 2 epochs.*epochs=1"):
        mb.fit(
            _model(train.schema),
            train,
            valid,
            epochs=1,
            checkpoint=path,
            resume=True,
            weighting=DWA(2.0),
            **FAST,
        )
    assert path.read_bytes() == before


def test_corrupt_missing_and_foreign_checkpoints(parts, tmp_path):
    train, valid = parts
    path = tmp_path / "run.pt"
    mb.fit(_model(train.schema), train, valid, epochs=1, checkpoint=path, **FAST)
    good = path.read_bytes()

    def resume_from(file):
        return mb.fit(_model(train.schema), train, valid, epochs=2, resume=file, **FAST)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="not a readable mtlbook checkpoint"):
        resume_from(truncated)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(CheckpointError, match="not a readable mtlbook checkpoint"):
        resume_from(noise)
    foreign = tmp_path / "weights.pt"
    torch.save({"weight": torch.ones(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an mtlbook checkpoint"):
        resume_from(foreign)
    future = tmp_path / "future.pt"
    torch.save({**torch.load(path, weights_only=True), "version": CHECKPOINT_VERSION + 1}, future)
    with pytest.raises(CheckpointError, match=f"version {CHECKPOINT_VERSION + 1}"):
        resume_from(future)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resume_from(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"resume=True .* checkpoint is None"):
        mb.fit(_model(train.schema), train, valid, epochs=2, resume=True, **FAST)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        mb.fit(_model(train.schema), train, valid, checkpoint=path, checkpoint_every=0, **FAST)
    with pytest.raises(TypeError, match="resume must be False, True or a checkpoint path"):
        mb.fit(_model(train.schema), train, valid, resume=1, **FAST)
    assert path.read_bytes() == good


def test_never_overwrites_what_is_not_a_checkpoint_of_this_run(parts, tmp_path):
    train, valid = parts
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    with pytest.raises(FileExistsError, match="not a readable mtlbook checkpoint"):
        mb.fit(_model(train.schema), train, valid, epochs=1, checkpoint=notes, **FAST)
    assert notes.read_text() == "my notes"

    path = tmp_path / "run.pt"
    mb.fit(_model(train.schema), train, valid, epochs=1, checkpoint=path, **FAST)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"another configuration.*\n.*lr: "):
        mb.fit(_model(train.schema), train, valid, epochs=1, checkpoint=path, **{**FAST, "lr": 0.5})
    # Nor as the target of a run resumed from another file.
    other = tmp_path / "other.pt"
    fast = {**FAST, "lr": 0.5}
    mb.fit(_model(train.schema), train, valid, epochs=1, checkpoint=other, **fast)
    with pytest.raises(FileExistsError, match="another configuration"):
        mb.fit(_model(train.schema), train, valid, epochs=2, checkpoint=path, resume=other, **fast)
    assert path.read_bytes() == before
    # The same run started again from scratch may replace its own checkpoint.
    mb.fit(_model(train.schema), train, valid, epochs=2, checkpoint=path, **FAST)
    assert load_checkpoint(path)["epoch"] == 2


# ---------------------------------------------------------------------- the state APIs
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_state_round_trip_continues_identically(parts, name):
    """A strategy loaded with another's state reports the same weights and takes the same
    next step, in a custom loop too (no after_step: FAMO keeps a weight step pending)."""
    train, _ = parts
    batches = list(train.loader(BATCH, seed=0))

    def step(model, strategy, optimizer, batch):
        optimizer.zero_grad(set_to_none=True)
        strategy.backward(model.task_losses(model(batch), batch), model, model.regularization())
        optimizer.step()

    model, a = _model(train.schema), STRATEGIES[name]()
    a.setup(model.task_names, model)
    optimizer = torch.optim.SGD(list(model.parameters()) + a.parameters(), lr=0.05)
    for epoch in (1, 2):
        for batch in batches[epoch - 1 :: 2]:
            step(model, a, optimizer, batch)
        a.epoch_end(epoch, {"task1": 0.7 / epoch, "task2": 0.5, "task3": 1.0 + epoch})
    step(model, a, optimizer, batches[0])
    twin, b = copy.deepcopy(model), STRATEGIES[name]()
    b.setup(twin.task_names, twin)
    b.load_state_dict(a.state_dict())
    assert b.weights == a.weights
    assert _same_state(b.state_dict(), a.state_dict())
    twin_optimizer = torch.optim.SGD(list(twin.parameters()) + b.parameters(), lr=0.05)
    step(model, a, optimizer, batches[1])
    step(twin, b, twin_optimizer, batches[1])
    assert _same_state(b.state_dict(), a.state_dict())
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)


def test_weighting_state_api():
    model = _model(mb.make_correlated_tasks(10, 0.3, n_features=6, seed=0).schema)
    dwa = DWA()
    with pytest.raises(RuntimeError, match="setup"):
        dwa.state_dict()
    dwa.setup(model.task_names, model)
    dwa.epoch_end(1, {"task1": 0.5, "task2": 0.7})
    dwa.epoch_end(2, {"task1": 0.4, "task2": 0.7})
    state = dwa.state_dict()
    dwa.epoch_end(3, {"task1": 0.3, "task2": 0.6})  # the state is a copy
    other = DWA()
    other.setup(model.task_names, model)
    other.load_state_dict(state)
    reference = DWA()
    reference.setup(model.task_names, model)
    reference.epoch_end(1, {"task1": 0.5, "task2": 0.7})
    reference.epoch_end(2, {"task1": 0.4, "task2": 0.7})
    assert other.weights_for_epoch(3) == reference.weights_for_epoch(3)
    with pytest.raises(ValueError, match="epoch must be an integer from 1 to 3"):
        other.weights_for_epoch(4)  # the third epoch's losses came after the state
    with pytest.raises(ValueError, match=r"is of mtlbook\.weighting\.dwa\.DWA, not of .*FAMO"):
        famo = FAMO()
        famo.setup(model.task_names, model)
        famo.load_state_dict(state)
    assert DWA(temperature=3.0).config() == {
        "class": "mtlbook.weighting.dwa.DWA",
        "temperature": 3.0,
    }
    assert RLW("dirichlet").config()["distribution"] == "dirichlet"


def test_learnable_tensors_are_restored_in_place():
    """Private optimisers keep working: they hold the very tensors that are restored."""
    model = _model(mb.make_correlated_tasks(10, 0.3, n_features=6, seed=0).schema)
    source, target = GradNorm(), GradNorm()
    for g in (source, target):
        g.setup(model.task_names, model)
    with torch.no_grad():
        source._w.copy_(torch.tensor([0.5, 1.5]))
    held = target._w
    target.load_state_dict(source.state_dict())
    assert target._w is held and target._optimizer.param_groups[0]["params"][0] is held
    assert torch.equal(held, torch.tensor([0.5, 1.5]))


def test_batch_loader_state(parts):
    train, _ = parts
    a, b = train.loader(BATCH, seed=1), train.loader(BATCH, seed=2)
    for _ in range(2):
        list(a)
    b.load_state_dict(a.state_dict())
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.dense, y.dense)
    with pytest.raises(ValueError, match="batch_size: state 50, loader 40"):
        train.loader(40).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match=r"state must be a BatchLoader\.state_dict"):
        a.load_state_dict({"generator": None})


@pytest.mark.parametrize(
    "target",
    [
        "mtlbook.training.checkpoint",
        "mtlbook.training.loop",
        "mtlbook.weighting.base",
        "BatchLoader",
    ],
)
def test_docstring_examples(target, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    if target == "BatchLoader":
        obj, name = BatchLoader, "mtlbook.data.BatchLoader"
    else:
        importlib.import_module(target)
        obj, name = sys.modules[target], target
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = doctest.DocTestFinder().find(obj, name)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, result
