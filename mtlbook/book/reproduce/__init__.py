"""The book's *full tier*: paper-scale studies run by one command, stored with their provenance.

A chapter's live runs must finish in about 90 seconds on two cores, too little to follow a
paper's protocol. The studies here follow it as far as an hour on two CPU cores allows (each
says what it reduces and why); their tidy results are committed in the package, under
``mtlbook/book/results/`` (so that a chapter opened in Colab finds them too), and the chapters
show them beside the live runs, labelled as such.

    python -m mtlbook.book.reproduce mmoe        # one study, ≈ its stated time
    python -m mtlbook.book.reproduce all         # every study
    python -m mtlbook.book.reproduce mmoe --check   # re-run reduced, compare with the stored

Each study writes ``results/<name>/<version>/results.csv`` (tidy rows) and ``provenance.json``
(the command, the commit, package versions, machine, threads, wall time, date and the study's
settings), both atomically. The version names the protocol: a change of protocol gets a new
folder, never an overwrite of another protocol's results. :func:`check` re-runs a study in
reduced form (fewer restarts, the same steps and data size) and compares the stored summary
with the reduced run's intervals; the tests call it, so a stored result cannot go stale
silently.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import torch

__all__ = [
    "STUDIES",
    "Study",
    "check",
    "interval_check",
    "load",
    "median_interval",
    "provenance_table",
    "results_dir",
    "run",
]


@dataclass(frozen=True)
class Study:
    """One full-tier study.

    Attributes:
        name: the command-line name (``mmoe``).
        version: the protocol's version; results live under ``results/<name>/<version>/``.
        title: one line on what it reproduces.
        run: ``settings -> tidy DataFrame`` (the study itself).
        full: the settings of the full run.
        reduced: ``stored results or None -> settings`` of the reduced re-run (fewer
            restarts; the same steps and data size; it may use the stored results, e.g. to
            train only the learning rate the full run selected).
        verify: ``(stored, reduced) -> DataFrame`` with a boolean column ``inside``: whether
            each stored summary value lies in the reduced run's interval.
        reductions: how the full run departs from the paper's protocol, and why.
    """

    name: str
    version: str
    title: str
    run: Callable[[dict[str, Any]], pd.DataFrame]
    full: dict[str, Any]
    reduced: Callable[[pd.DataFrame | None], dict[str, Any]]
    verify: Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]
    reductions: tuple[str, ...] = field(default_factory=tuple)


def median_interval(values: Any, confidence: float = 0.99) -> tuple[float, float]:
    """A distribution-free interval for the median: the order statistics ``x(k), x(n+1-k)``
    with the largest ``k`` whose coverage ``1 - 2·P(Binom(n, ½) < k)`` is at least
    ``confidence`` (``k = 1`` when none is: the sample's range)."""
    from scipy import stats

    x = sorted(float(v) for v in values)
    n = len(x)
    k = 1
    while k + 1 <= n // 2 and 1 - 2 * stats.binom.cdf(k, n, 0.5) >= confidence:
        k += 1
    return x[k - 1], x[n - k]


def interval_check(
    stored: pd.DataFrame,
    reduced: pd.DataFrame,
    keys: list[str],
    *,
    statistic: str = "mean",
    confidence: float = 0.99,
) -> pd.DataFrame:
    """The usual ``verify`` of a study: per group ``keys``, the stored ``statistic`` of
    ``value`` over the full run, the reduced run's and its interval at ``confidence``, and
    whether the stored one lies inside (column ``inside``).

    ``statistic="mean"`` uses Student's t interval; ``"median"`` the distribution-free
    interval of :func:`median_interval`, for metrics whose spread over seeds has a heavy tail
    (a few seeds far from the rest), where a handful of seeds says little about the mean.

    Raises:
        ValueError: for another statistic, when a group of the reduced run has fewer than 2
            values, or when the stored results lack one of its groups.
    """
    from scipy import stats

    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    full = stored.groupby(keys)["value"].agg(statistic)
    rows = []
    for group, values in reduced.groupby(keys)["value"]:
        key = group if isinstance(group, tuple) else (group,)
        lookup = key[0] if len(keys) == 1 else key
        x = values.to_numpy(dtype=float)
        if len(x) < 2:
            raise ValueError(f"the reduced run has {len(x)} value(s) in {key}; it needs 2 or more")
        if lookup not in full.index:
            raise ValueError(f"the stored results have no {dict(zip(keys, key, strict=True))}")
        if statistic == "mean":
            centre = float(x.mean())
            half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / len(x) ** 0.5
            lo, hi = centre - half, centre + half
        else:
            centre = float(pd.Series(x).median())
            lo, hi = median_interval(x, confidence)
        value = float(full.loc[lookup])
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                f"stored_{statistic}": value,
                f"reduced_{statistic}": centre,
                "lo": lo,
                "hi": hi,
                "inside": bool(lo <= value <= hi),
            }
        )
    return pd.DataFrame(rows)


def _registry() -> dict[str, Study]:
    from .esmm import STUDY as ESMM
    from .experts import STUDY as EXPERTS
    from .leaderboard import STUDY as LEADERBOARD
    from .mmoe import STUDY as MMOE
    from .sweep import STUDY as SWEEP
    from .weighting import STUDY as WEIGHTING

    return {study.name: study for study in (SWEEP, MMOE, EXPERTS, ESMM, WEIGHTING, LEADERBOARD)}


STUDIES: dict[str, Study] = _registry()


def results_dir(root: str | os.PathLike | None = None) -> Path:
    """The results folder: ``root``, or the package's ``mtlbook/book/results/``."""
    if root is not None:
        return Path(root)
    return Path(__file__).resolve().parents[1] / "results"


def _study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; the studies are {sorted(STUDIES)}")
    return STUDIES[name]


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file in its folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the permissions of a plainly created file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            # the package's own files: a chapter being edited does not change a study
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "mtlbook"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _json_key(key: Any) -> str:
    """A dictionary key as JSON text: a tuple key ``(model, p)`` becomes ``"model p"``."""
    return " ".join(map(str, key)) if isinstance(key, tuple) else str(key)


def _jsonable(value: Any) -> Any:
    """``value`` with dictionary keys that JSON cannot hold (tuples) written as text."""
    if isinstance(value, dict):
        return {_json_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _processor() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "processor unknown"


def _provenance(
    study: Study, settings: dict[str, Any], seconds: float, commit: str
) -> dict[str, Any]:
    import numpy
    import scipy

    from ... import __version__

    return {
        "study": study.name,
        "version": study.version,
        "title": study.title,
        "command": shlex.join(
            [Path(sys.executable).name, "-m", "mtlbook.book.reproduce", study.name]
        ),
        "commit": commit,
        "mtlbook": __version__,
        "packages": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "pandas": pd.__version__,
            "scipy": scipy.__version__,
        },
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{_processor()}",
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "wall_seconds": round(seconds, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": _jsonable(settings),
        "reductions": list(study.reductions),
    }


def run(name: str, root: str | os.PathLike | None = None, *, reduced: bool = False) -> Path:
    """Run study ``name`` and store its results and provenance; returns the folder.

    With ``reduced=True`` the reduced settings run and nothing is stored over the full
    results: they go to ``<root>/<name>/<version>-reduced/``.
    """
    study = _study(name)
    if reduced:
        try:
            stored: pd.DataFrame | None = load(name, root)[0]
        except FileNotFoundError:
            stored = None
        settings = study.reduced(stored)
    else:
        settings = dict(study.full)
    commit = _commit()  # the code that runs: taken before the study, which may take an hour
    start = time.perf_counter()
    frame = study.run(settings)
    seconds = time.perf_counter() - start
    folder = results_dir(root) / name / (study.version + ("-reduced" if reduced else ""))
    _atomic_write(folder / "results.csv", lambda p: frame.to_csv(p, index=False))
    meta = _provenance(study, settings, seconds, commit)
    _atomic_write(
        folder / "provenance.json",
        lambda p: p.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", "utf-8"),
    )
    return folder


def load(name: str, root: str | os.PathLike | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The stored full results of study ``name`` and their provenance.

    Raises:
        FileNotFoundError: when the study has not been run (says the command that runs it).
    """
    study = _study(name)
    folder = results_dir(root) / name / study.version
    csv, meta = folder / "results.csv", folder / "provenance.json"
    if not csv.exists() or not meta.exists():
        raise FileNotFoundError(
            f"no stored results of the study {name!r} (version {study.version}) in {folder}; "
            f"run: python -m mtlbook.book.reproduce {name}"
        )
    return pd.read_csv(csv), json.loads(meta.read_text("utf-8"))


#: The studies' departures from their papers' protocols (stored in English in each
#: provenance.json), in the book's language for :func:`provenance_table`.
REDUCTIONS_ZH: dict[str, str] = {
    (
        "simulated worlds instead of the paper's real logs (which have no true pCVR): "
        "the direction of the paper's claim is tested, none of its numbers"
    ): (
        "用模拟的世界代替论文的真实日志（真实日志没有真实 "
        "pCVR）：检验的是论文结论的方向，不是它的数字"
    ),
    (
        "30 seeds per cell; small models (embeddings 8, towers 32-16) trained to "
        "convergence with early stopping (at most 30 epochs, patience 3), one learning "
        "rate (3e-3)"
    ): (
        "每格 30 个种子；小模型（嵌入 8 维，任务塔 "
        "32-16）用早停训练到收敛（最多 30 轮，耐心 3 "
        "轮），一个学习率（3e-3）"
    ),
    (
        "30 restarts per cell, one learning rate (1e-2, the MMoE study's selection for "
        "both mixtures at 8 experts) instead of a grid per expert count"
    ): (
        "每格 30 次重启，一个学习率（1e-2，即 MMoE 完整实验在 8 "
        "个专家时为两种混合选出的学习率），而不是每个专家数各搜一遍"
    ),
    ("the reduced re-check covers 1 and 8 experts at correlations 0.5 and 1"): (
        "缩小的复查只覆盖 1 个和 8 个专家、相关度 0.5 和 1"
    ),
    (
        "the chapter's small data sets (2,000 synthetic samples, 20,000 impressions); "
        "the models are small (CGC with 16-unit experts sets the budget)"
    ): (
        "沿用本章的小数据集（2,000 个合成样本、20,000 "
        "次曝光）；模型都小（以 16 单元专家的 CGC 定参数预算）"
    ),
    (
        "dense parameters matched (the single-task baseline holds one set of embedding "
        "tables per task on the funnel, so its total count is larger there)"
    ): ("对齐的是稠密参数（漏斗上单任务基线每个任务各有一套嵌入表，所以它的总参数量更大）"),
    (
        "100 restarts per model and correlation instead of the paper's 200, to fit about "
        "an hour on two CPU cores"
    ): ("每个模型、每个相关度 100 次重启，论文是 200 次，为了在两个 CPU 核上约一小时跑完"),
    (
        "10,000 samples per data set (60/20/20), batch 128, at most 100 epochs (4,700 "
        "steps) with early stopping after 8 without improvement: the paper gives none of "
        "these"
    ): (
        "每个数据集 10,000 个样本（60/20/20 划分），批大小 "
        "128，最多 100 轮（4,700 步），连续 8 "
        "轮没有改进就早停：这些设置论文都没有给出"
    ),
    (
        "the generator's constants c, m, alpha_i, beta_i are ours "
        "(mtlbook.data.make_correlated_tasks); the paper does not publish them"
    ): (
        "数据生成器的常数 c、m、α_i、β_i "
        "是我们定的（mtlbook.data.make_correlated_tasks"
        "）；论文没有公布"
    ),
    (
        "the chapter's data and budget (3,000 samples, task2 with 10 % of its training "
        "labels, at most 100 epochs with patience 8, lr 5e-3); 30 seeds per cell"
    ): (
        "沿用本章的数据和训练量（3,000 个样本，任务 2 只保留 10% "
        "的训练标签，最多 100 轮、耐心 8 轮，学习率 5e-3）；每格 30 "
        "个种子"
    ),
    ("the reduced re-check covers the chapter's width (16) at correlations 0 and 1 only"): (
        "缩小的复查只覆盖本章的宽度（16）、相关度 0 和 1"
    ),
    (
        "the chapter's data and model (20,000 impressions per seed, Shared-Bottom "
        "32-16); the weighting papers' own benchmarks are not re-run"
    ): (
        "沿用本章的数据和模型（每个种子 20,000 "
        "次曝光，Shared-Bottom 32-16）；没有重跑各加权论文自己的基准"
    ),
    (
        "at most 60 epochs with a patience of 15 on the validation click AUC (the live "
        "run: 10 and 3); 10 seeds (the live run: 3)"
    ): (
        "最多 60 轮，按验证集点击 AUC 早停、耐心 15 "
        "轮（页面上的实时运行：10 轮和 3 轮）；10 个种子（实时运行：3 个）"
    ),
}


def provenance_table(meta: dict[str, Any]) -> pd.DataFrame:
    """A stored study's provenance (:func:`load`'s second value) as the table a chapter shows
    beside its results: command, commit, date, machine, threads, wall time, torch, and each of
    the study's departures from the paper's protocol (Chinese labels, as in the book)."""
    rows = {
        "命令": meta["command"],
        "代码版本（提交）": meta["commit"],
        "日期": meta["date"],
        "机器": meta["machine"],
        "线程数": meta["threads"],
        "用时（分钟）": round(meta["wall_seconds"] / 60, 1),
        "torch": meta["packages"]["torch"],
    }
    for i, reduction in enumerate(meta.get("reductions", []), start=1):
        rows[f"与原协议的差别 {i}"] = REDUCTIONS_ZH.get(reduction, reduction)
    return pd.Series(rows, name=f"完整实验 {meta['study']}（{meta['version']}）的来历").to_frame()


def check(name: str, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Re-run study ``name`` in reduced form and compare it with the stored full results.

    Returns:
        The study's comparison table, with a boolean column ``inside`` per stored value.
    """
    study = _study(name)
    stored, _ = load(name, root)
    reduced = study.run(study.reduced(stored))
    return study.verify(stored, reduced)
