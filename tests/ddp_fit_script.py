"""Small training runs of :func:`mtlbook.fit` on several processes, for ``test_distributed.py``.

Launched by the test with ``python -m torch.distributed.run --standalone --nproc_per_node=2
tests/ddp_fit_script.py OUT`` (gloo, CPU). Every process runs the runs of :data:`RUNS`; rank 0
saves their weights and histories to ``OUT/results.pt``, with what the processes found when
they compared their results with each other. The test imports this file too, to train the
same runs in one process (:func:`run_one`) and compare.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

import mtlbook as mb
from mtlbook.data import BatchLoader
from mtlbook.models import DSelectK, MMoE, SharedBottom
from mtlbook.training import distributed
from mtlbook.weighting import (
    DWA,
    FAMO,
    MGDA,
    RLW,
    EqualWeight,
    GradNorm,
    PCGrad,
    UncertaintyWeighting,
    Weighting,
)

#: 940 impressions: 705 training ones (11 global batches of 64 and a last one of 1 row, so
#: one of two processes has an empty shard) and 235 validation ones; dwell_time is a
#: regression task defined on clicked impressions only (masked).
N_IMPRESSIONS, BATCH_SIZE = 940, 64


def make_data() -> tuple[mb.MultiTaskData, mb.MultiTaskData]:
    data = mb.simulate_funnel(
        N_IMPRESSIONS,
        seed=3,
        with_dwell_time=True,
        n_users=60,
        n_items=40,
        click_rate=0.2,
        purchase_rate=0.06,
    )
    return data.split((0.75, 0.25), seed=0)


class Refused(EqualWeight):
    """A strategy that declares it cannot train on several processes."""

    distributed = None


#: name -> (model class, weighting factory, epochs, monitor)
RUNS = {
    "equal": (MMoE, EqualWeight, 3, "loss"),
    "uncertainty": (MMoE, UncertaintyWeighting, 3, "purchase:auc"),
    "dwa": (MMoE, DWA, 3, "loss"),
    "famo": (MMoE, FAMO, 2, "loss"),
    "gradnorm": (MMoE, GradNorm, 2, "loss"),
    "pcgrad": (MMoE, PCGrad, 2, "loss"),
    "mgda_ub": (SharedBottom, lambda: MGDA(upper_bound=True), 2, "loss"),
    # A regulariser that is a mean over the batch (the selectors' entropy), with PCGrad.
    "dselect_pcgrad": (DSelectK, PCGrad, 2, "loss"),
    "dselect_equal": (DSelectK, EqualWeight, 2, "loss"),
}


def build(name: str, train: mb.MultiTaskData) -> tuple[torch.nn.Module, Weighting, int, str]:
    model_class, make_weighting, epochs, monitor = RUNS[name]
    if model_class is MMoE:
        model = MMoE(train.schema, n_experts=3, expert_units=(8,), tower_units=(4,), seed=0)
    elif model_class is DSelectK:
        model = DSelectK(
            train.schema,
            n_experts=3,
            k=2,
            expert_units=(8,),
            tower_units=(4,),
            entropy_reg=0.1,
            seed=0,
        )
    else:
        model = SharedBottom(train.schema, bottom_units=(8,), tower_units=(4,), seed=0)
    return model, make_weighting(), epochs, monitor


def run_one(name: str, train, valid, **kwargs) -> mb.training.FitResult:
    model, weighting, epochs, monitor = build(name, train)
    options = {"epochs": epochs, "monitor": monitor, **kwargs}
    return mb.fit(
        model,
        train,
        valid,
        batch_size=BATCH_SIZE,
        lr=5e-3,
        weighting=weighting,
        device="cpu",
        progress=False,
        **options,
    )


def summary(result: mb.training.FitResult) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in result.model.state_dict().items()},
        "history": result.history.to_dict("list"),
        "best_epoch": result.best_epoch,
        "best_score": result.best_score,
        "epochs_run": result.epochs_run,
        "train_seconds": result.train_seconds,
    }


def spread(item: dict) -> float:
    """The largest difference of a weight or history value between the processes."""
    flat = torch.cat(
        [v.double().reshape(-1) for v in item["state"].values()]
        + [
            torch.tensor(item["history"]["value"], dtype=torch.float64),
            torch.tensor([item["best_score"], item["train_seconds"]], dtype=torch.float64),
        ]
    )
    parts = [torch.zeros_like(flat) for _ in range(distributed.world_size())]
    torch.distributed.all_gather(parts, flat)
    return max(float((p - parts[0]).abs().nan_to_num(0.0).max()) for p in parts)


#: One training step's gradients: name -> (model class, weighting factory).
STEPS = {
    "equal": (MMoE, EqualWeight),
    "uncertainty": (MMoE, UncertaintyWeighting),
    "pcgrad": (MMoE, PCGrad),
    "mgda_ub": (SharedBottom, lambda: MGDA(upper_bound=True)),
    "dselect_equal": (DSelectK, EqualWeight),
}


def step_gradients(name: str, train, batch_index: int) -> dict[str, torch.Tensor]:
    """The gradients (model and weighting) of one step of ``fit`` on global batch
    ``batch_index``: in one process, or on this process's shard with DDP."""
    model_class, make_weighting = STEPS[name]
    model, _, _, _ = build(next(k for k, v in RUNS.items() if v[0] is model_class), train)
    weighting = make_weighting()
    weighting.setup(model.task_names, model)
    several = distributed.is_distributed()
    shard = (distributed.rank(), distributed.world_size()) if several else None
    batch = list(BatchLoader(train, BATCH_SIZE, shuffle=True, seed=0, shard=shard))[batch_index]
    forward, scope = model, contextlib.nullcontext()
    if several:
        if weighting.distributed == "ddp":
            forward = torch.nn.parallel.DistributedDataParallel(model)
        scope = distributed._training_scope()
    with scope:
        losses = model.task_losses(forward(batch), batch)
        extra = model.regularization()
        if several:
            losses, extra = distributed.global_losses(
                losses, batch, extra, model.regularization_reduction
            )
        weighting.backward(losses, model, extra)
    named = [
        *model.named_parameters(),
        *((f"weighting.{i}", p) for i, p in enumerate(weighting.parameters())),
    ]
    return {k: p.grad.detach().clone() for k, p in named if p.grad is not None}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    rank, world = distributed.init("gloo")
    train, valid = make_data()
    results: dict = {"world_size": world}
    # The last global batch has one row: the shard of rank 0 is empty.
    results["gradients"] = {
        (name, index): step_gradients(name, train, index) for name in STEPS for index in (0, -1)
    }
    for name in RUNS:
        item = summary(run_one(name, train, valid))
        item["spread"] = spread(item)
        results[name] = item

    # Random weights drawn without a seed: the processes still draw the same ones.
    model, _, _, _ = build("equal", train)
    unseeded = mb.fit(
        model, train, valid, epochs=1, weighting=RLW(seed=None), device="cpu", progress=False
    )
    results["rlw_unseeded_spread"] = spread(summary(unseeded))

    # Checkpoints: two epochs, then resumed for a third; only rank 0 writes.
    folder = out / "checkpoints"
    path = folder / "run.pt"
    run_one("equal", train, valid, epochs=2, checkpoint=path)
    results["files_after_first"] = sorted(p.name for p in folder.iterdir())
    resumed = summary(run_one("equal", train, valid, epochs=3, checkpoint=path, resume=True))
    resumed["spread"] = spread(resumed)
    results["resumed"] = resumed
    results["files_after_resume"] = sorted(p.name for p in folder.iterdir())
    saved = mb.training.checkpoint.load_checkpoint(path)
    results["checkpoint_rng_ranks"] = len(saved.get("rng_ranks", []))

    # A strategy that cannot train on several processes is refused before training.
    model, _, _, _ = build("equal", train)
    try:
        mb.fit(model, train, valid, epochs=1, weighting=Refused(), device="cpu", progress=False)
        results["refused"] = None
    except ValueError as err:
        results["refused"] = str(err)

    if rank == 0:
        torch.save(results, out / "results.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(f"usage: {os.path.basename(sys.argv[0])} OUTPUT_FOLDER")
    main(Path(sys.argv[1]))
