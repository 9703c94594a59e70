"""Benchmark: training-step throughput of mtlbook's MMoE and PLE against torch-rechub's.

torch-rechub (https://github.com/datawhalechina/torch-rechub) is a widely used PyTorch library of
recommender models; its ``MMOE`` and ``PLE`` build every expert, gate and tower as its own
``nn.Module`` and loop over them. mtlbook's models stack the experts into one weight tensor per
layer, compute all gates of a level with one linear layer and all towers as one batched op.

One training step is: zero the gradients, forward, the sum of the per-task losses, backward,
one Adam step (``foreach=True`` for both). Both libraries build models of the same sizes from the
same features and run on the same batch, in one process, interleaved: each repeat times a block
of steps of one model, then of the other. The script prints the median time per step, the
throughput, and the ratio of throughputs (mtlbook / torch-rechub) with the interquartile range of
the per-repeat ratio.

What differs besides the code structure (we measure each library as it ships):

* torch-rechub's ``MLP`` puts ``BatchNorm1d`` (and a dropout layer, here with p = 0) after every
  linear layer, in experts, gates and towers; the papers and mtlbook have none. ``--no-peer-bn``
  also times the peer with those BatchNorm layers replaced by identities, to show how much of the
  difference the batched ops alone make.
* the peer's model outputs probabilities and trains with ``BCELoss``, as its trainer does;
  mtlbook outputs logits and uses the log-loss on logits.

Apart from the peer's BatchNorm parameters the two models have exactly the same parameters;
the script checks that the counts agree before timing. The peer reads the 100 dense inputs as
one vector-valued ``DenseFeature`` (one tensor, rather than 100 columns to concatenate).

The last column counts minor page faults per training step (mtlbook/peer). With glibc's default
malloc settings, a step that frees large tensors hands the memory back to the system, and the
next step faults it in again, 4 KB at a time; batched experts make few large activations and
pay for this, a loop over experts makes many small ones that glibc keeps. ``--keep-freed-memory``
runs the comparison with glibc told to keep freed memory (what jemalloc or tcmalloc do anyway).

Configurations (2 tasks each):

* ``paper``: the MMoE paper's synthetic-data size (Ma et al., KDD 2018): 100 dense inputs, 8
  experts of 16 units, towers of 8, batch 256, regression tasks;
* ``recsys``: a recommender size: 8 categorical fields of 1,000 values embedded in 16
  dimensions, 8 experts of [256, 128], towers of [64], batch 2,048, binary tasks;
* ``large``: ``recsys`` with 125,000 values per field, 10⁶ embedding rows in all (16 M of the
  model's 16.5 M parameters), the largest size whose comparison fits this machine's time.

For ``large`` the script also times mtlbook's model with sparse embedding gradients against the
same model with dense ones (both mtlbook, same batch, interleaved): the embedding table becomes
``nn.Embedding(sparse=True)`` and is updated by ``torch.optim.SparseAdam`` (Adam's moments kept
for the rows a batch touches only, the "lazy" Adam of large-scale recommenders), the other
parameters by Adam as before. A dense gradient writes and Adam updates all 10⁶ rows every step;
the sparse one touches the ≤ 16,384 rows of the batch.

PLE gets the same sizes with 2 extraction levels of 4 shared experts and 2 experts per task
(8 experts per level, as many as MMoE has in total).

    pip install -e ".[bench]"                        # the peer: torch-rechub==0.9.0
    python benchmarks/bench_models.py                # 40 interleaved repeats
    python benchmarks/bench_models.py --quick        # 10
    python benchmarks/bench_models.py --no-peer-bn --keep-freed-memory
    python benchmarks/bench_models.py --device cuda   # on a GPU; the faults column is the CPU's
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from mtlbook.data import MultiTaskData
from mtlbook.models import PLE, MMoE
from mtlbook.utils import resolve_device

try:
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models.multi_task import MMOE as RechubMMOE
    from torch_rechub.models.multi_task import PLE as RechubPLE
except ImportError as error:  # pragma: no cover - the peer is an optional extra
    raise SystemExit(
        "this benchmark needs torch-rechub: pip install torch-rechub==0.9.0 "
        "(or pip install -e '.[bench]')"
    ) from error


@dataclass(frozen=True)
class Config:
    name: str
    n_dense: int
    n_fields: int
    cardinality: int
    embedding_dim: int
    n_experts: int
    expert_units: tuple[int, ...]
    tower_units: tuple[int, ...]
    batch: int
    task_kind: str  # "regression" or "binary"
    steps_per_block: int


CONFIGS = [
    Config(
        "paper",
        n_dense=100,
        n_fields=0,
        cardinality=0,
        embedding_dim=16,
        n_experts=8,
        expert_units=(16,),
        tower_units=(8,),
        batch=256,
        task_kind="regression",
        steps_per_block=10,
    ),
    Config(
        "recsys",
        n_dense=0,
        n_fields=8,
        cardinality=1000,
        embedding_dim=16,
        n_experts=8,
        expert_units=(256, 128),
        tower_units=(64,),
        batch=2048,
        task_kind="binary",
        steps_per_block=1,
    ),
]
# ``recsys`` with 10⁶ embedding rows in all
CONFIGS.append(replace(CONFIGS[1], name="large", cardinality=125_000))
TASKS = ("task1", "task2")
PLE_LEVELS, PLE_SHARED, PLE_PER_TASK = 2, 4, 2  # 4 + 2 × 2 = 8 experts per level


def make_data(cfg: Config, seed: int = 0) -> MultiTaskData:
    """One batch worth of random features and labels."""
    rng = np.random.default_rng(seed)
    n = cfg.batch
    labels = {
        t: (rng.random(n) < 0.3).astype(float)
        if cfg.task_kind == "binary"
        else rng.standard_normal(n)
        for t in TASKS
    }
    return MultiTaskData(
        dense=rng.standard_normal((n, cfg.n_dense)) if cfg.n_dense else None,
        categorical=rng.integers(0, cfg.cardinality, (n, cfg.n_fields)) if cfg.n_fields else None,
        labels=labels,
        tasks=dict.fromkeys(TASKS, cfg.task_kind),
        dense_names=[f"x{i}" for i in range(cfg.n_dense)],
        categorical_names=[f"f{i}" for i in range(cfg.n_fields)],
        cardinalities=[cfg.cardinality] * cfg.n_fields if cfg.n_fields else None,
    )


# ---------------------------------------------------------------------------- mtlbook
def mtlbook_step(model, batch) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        losses = model.task_losses(model(batch), batch)
        torch.stack(list(losses.values())).sum().backward()
        optimizer.step()

    return step


def mtlbook_sparse_step(model, batch) -> Callable[[], None]:
    """:func:`mtlbook_step` for a copy of ``model`` whose embedding table has sparse gradients,
    updated by ``SparseAdam``; the other parameters by Adam as before."""
    model = copy.deepcopy(model)
    dense_table = model.input.embedding
    table = nn.Embedding(dense_table.num_embeddings, dense_table.embedding_dim, sparse=True)
    table.weight = dense_table.weight
    model.input.embedding = table
    rest = [p for name, p in model.named_parameters() if name != "input.embedding.weight"]
    optimizers = [
        torch.optim.SparseAdam([table.weight], lr=1e-3),
        torch.optim.Adam(rest, lr=1e-3, foreach=True),
    ]

    def step() -> None:
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        losses = model.task_losses(model(batch), batch)
        torch.stack(list(losses.values())).sum().backward()
        for optimizer in optimizers:
            optimizer.step()

    return step


def mtlbook_models(cfg: Config, data: MultiTaskData) -> dict[str, nn.Module]:
    common = dict(
        expert_units=cfg.expert_units, tower_units=cfg.tower_units, embedding_dim=cfg.embedding_dim
    )
    return {
        "MMoE": MMoE(data.schema, n_experts=cfg.n_experts, **common),
        "PLE": PLE(
            data.schema,
            n_levels=PLE_LEVELS,
            n_shared_experts=PLE_SHARED,
            n_task_experts=PLE_PER_TASK,
            **common,
        ),
    }


# ---------------------------------------------------------------------------- torch-rechub
def rechub_features(cfg: Config) -> list:
    if cfg.n_dense:  # one vector-valued dense feature: one tensor, not 100 columns to concat
        return [DenseFeature("dense", embed_dim=cfg.n_dense)]
    return [
        SparseFeature(f"f{i}", vocab_size=cfg.cardinality, embed_dim=cfg.embedding_dim)
        for i in range(cfg.n_fields)
    ]


def rechub_models(cfg: Config, batch_norm: bool = True) -> dict[str, nn.Module]:
    task_types = ["classification" if cfg.task_kind == "binary" else "regression"] * len(TASKS)
    expert = {"dims": list(cfg.expert_units)}
    towers = [{"dims": list(cfg.tower_units)} for _ in TASKS]
    models = {
        "MMoE": RechubMMOE(rechub_features(cfg), task_types, cfg.n_experts, expert, towers),
        "PLE": RechubPLE(
            rechub_features(cfg), task_types, PLE_LEVELS, PLE_PER_TASK, PLE_SHARED, expert, towers
        ),
    }
    if not batch_norm:
        for model in models.values():
            _drop_batch_norm(model)
    return models


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _drop_batch_norm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d):
            setattr(module, name, nn.Identity())
        else:
            _drop_batch_norm(child)


def rechub_step(model, cfg: Config, data: MultiTaskData, device: str) -> Callable[[], None]:
    batch = next(iter(data.loader(cfg.batch, shuffle=False))).to(device)
    model.to(device)
    if cfg.n_dense:
        x = {"dense": batch.dense}
    else:
        x = {f"f{i}": batch.categorical[:, i] for i in range(cfg.n_fields)}
    y = torch.stack([batch.labels[t] for t in TASKS], dim=1)
    loss_fn = nn.BCELoss() if cfg.task_kind == "binary" else nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        pred = model(x)  # [batch, tasks]
        sum(loss_fn(pred[:, k], y[:, k]) for k in range(len(TASKS))).backward()
        optimizer.step()

    return step


# ---------------------------------------------------------------------------- allocator
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory instead of returning it to the system.

    By default glibc serves large blocks with ``mmap`` and trims the top of the heap as soon as
    more than a few tens of MB are free, so a training step that allocates and frees large
    activations pays a page fault for every 4 KB of them again at the next step. Batched
    experts make few, large activations (``[experts, batch, units]``); a per-expert loop makes
    many small ones that stay in the heap. jemalloc or tcmalloc (``LD_PRELOAD``) or the
    environment variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` do the
    same. Returns whether the settings were applied (glibc only).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(
            libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30)
        )
    except (OSError, AttributeError):
        return False


def minor_page_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not count them)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# ---------------------------------------------------------------------------- timing
def time_pair(
    ours: Callable[[], None], peer: Callable[[], None], repeats: int, steps: int
) -> tuple[float, float, float, float]:
    """Median seconds per step of ``ours`` and ``peer`` (blocks of ``steps`` steps, interleaved,
    the order alternating between repeats), the median per-repeat throughput ratio ours/peer and
    its interquartile range. On a GPU each block ends by waiting for the device."""
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    for _ in range(3):  # warm-up
        ours()
        peer()
    a, b = [], []
    for r in range(repeats):
        pair = ((ours, a), (peer, b)) if r % 2 == 0 else ((peer, b), (ours, a))
        for fn, out in pair:
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            sync()
            out.append((time.perf_counter() - start) / steps)
    ratios = sorted(q / p for p, q in zip(a, b, strict=True))  # throughput ours / peer
    iqr = ratios[3 * len(ratios) // 4] - ratios[len(ratios) // 4]
    return statistics.median(a), statistics.median(b), statistics.median(ratios), iqr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 40; 10 quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--no-peer-bn",
        action="store_true",
        help="also time the peer with its BatchNorm layers removed",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc: keep freed memory in the heap (see keep_freed_memory)",
    )
    parser.add_argument("--only", choices=[c.name for c in CONFIGS], help="one configuration")
    parser.add_argument(
        "--device", default="cpu", help='"cpu" (default), "cuda" or "auto": where both train'
    )
    args = parser.parse_args()
    device = str(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (10 if args.quick else 40)
    allocator = "glibc default"
    if args.keep_freed_memory:
        allocator = "glibc, freed memory kept" if keep_freed_memory() else "unchanged (no glibc)"
    import torch_rechub

    print(
        f"torch {torch.__version__}, torch-rechub {torch_rechub.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}, allocator: {allocator}, "
        f"median of {repeats} interleaved repeats"
    )
    print(
        f"{'config':<7} {'model':<5} {'peer':<11} {'batch':>5} {'mtlbook ms':>10} "
        f"{'peer ms':>8} {'mtlbook/s':>9} {'peer/s':>8} {'speed-up':>8} {'IQR':>5} "
        f"{'faults/step':>12}"
    )
    sparse_rows: list[str] = []
    variants = [("as shipped", True)] + ([("without BN", False)] if args.no_peer_bn else [])
    for cfg in CONFIGS:
        if args.only and cfg.name != args.only:
            continue
        data = make_data(cfg)
        batch = next(iter(data.loader(cfg.batch, shuffle=False))).to(device)
        ours = {name: model.to(device) for name, model in mtlbook_models(cfg, data).items()}
        for label, batch_norm in variants:
            torch.manual_seed(0)
            peers = rechub_models(cfg, batch_norm)
            for name, model in ours.items():
                without_bn = rechub_models(cfg, batch_norm=False)[name]
                if count(model) != count(without_bn):
                    raise RuntimeError(
                        f"{cfg.name} {name}: {count(model)} parameters in mtlbook, "
                        f"{count(without_bn)} in the peer without BatchNorm"
                    )
                step, peer = mtlbook_step(model, batch), rechub_step(peers[name], cfg, data, device)
                t_ours, t_peer, ratio, iqr = time_pair(step, peer, repeats, cfg.steps_per_block)
                faults = [minor_page_faults()]
                for fn in (step, peer):
                    for _ in range(3):
                        fn()
                    faults.append(minor_page_faults())
                print(
                    f"{cfg.name:<7} {name:<5} {label:<11} {cfg.batch:>5} "
                    f"{1e3 * t_ours:>10.2f} {1e3 * t_peer:>8.2f} {cfg.batch / t_ours:>9.0f} "
                    f"{cfg.batch / t_peer:>8.0f} {ratio:>7.2f}x {iqr:>5.2f} "
                    f"{(faults[1] - faults[0]) / 3:>5.0f}/{(faults[2] - faults[1]) / 3:<6.0f}",
                    flush=True,
                )
        if cfg.name == "large":
            torch.manual_seed(0)
            shipped = rechub_models(cfg)
            for name, model in ours.items():
                sparse, dense = mtlbook_sparse_step(model, batch), mtlbook_step(model, batch)
                peer = rechub_step(shipped[name], cfg, data, device)
                t_sparse, t_dense, vs_dense, iqr_dense = time_pair(sparse, dense, repeats, 1)
                _, t_peer, vs_peer, iqr_peer = time_pair(sparse, peer, repeats, 1)
                sparse_rows.append(
                    f"{cfg.name:<7} {name:<5} {1e3 * t_sparse:>10.2f} {1e3 * t_dense:>9.2f} "
                    f"{vs_dense:>7.2f}x {iqr_dense:>5.2f} {1e3 * t_peer:>8.2f} "
                    f"{vs_peer:>7.2f}x {iqr_peer:>5.2f}"
                )
    if sparse_rows:
        print(
            "\nmtlbook with sparse embedding gradients + SparseAdam, against mtlbook dense + Adam "
            "and against the peer as shipped (each pair interleaved)"
        )
        print(
            f"{'config':<7} {'model':<5} {'sparse ms':>10} {'dense ms':>9} "
            f"{'vs dense':>8} {'IQR':>5} {'peer ms':>8} {'vs peer':>8} {'IQR':>5}"
        )
        print("\n".join(sparse_rows))


if __name__ == "__main__":
    main()
