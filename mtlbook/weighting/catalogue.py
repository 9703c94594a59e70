"""Every strategy of :mod:`mtlbook.weighting` by name, for comparisons (chapter 12.4.1).

:func:`standard_strategies` returns name → factory (a fresh object per call, since strategies
keep state across steps), ready for :func:`mtlbook.analysis.runs.repeat_fits` (``weightings=``)
and for ``benchmarks/bench_weighting.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .base import EqualWeight, Weighting
from .cagrad import CAGrad
from .dwa import DWA
from .famo import FAMO
from .fixed import FixedWeights
from .gradnorm import GradNorm
from .imtl import IMTL
from .mgda import MGDA
from .pcgrad import PCGrad
from .rlw import RLW
from .scheduled import ScheduledWeights
from .uncertainty import UncertaintyWeighting

__all__ = ["standard_strategies"]


def standard_strategies(
    fixed_weights: Mapping[str, float] | None = None,
    schedule: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Callable[[], Weighting]]:
    """Name → factory for every strategy with its published defaults.

    Args:
        fixed_weights: ``{task: weight}`` for the manual strategy ``"fixed"`` (left out when
            ``None``: manual weights only make sense for a given task set).
        schedule: keyword arguments of :class:`ScheduledWeights` for ``"scheduled"`` (left out
            when ``None``).
        seed: seed of the strategies that draw random numbers (RLW, PCGrad).
    """
    strategies: dict[str, Callable[[], Weighting]] = {"equal": EqualWeight}
    if fixed_weights is not None:
        weights = dict(fixed_weights)
        strategies["fixed"] = lambda: FixedWeights(weights=weights)
    if schedule is not None:
        options = dict(schedule)
        strategies["scheduled"] = lambda: ScheduledWeights(**options)
    strategies.update(
        {
            "uncertainty": UncertaintyWeighting,
            "dwa": DWA,
            "rlw": lambda: RLW(seed=seed),
            "famo": FAMO,
            "gradnorm": GradNorm,
            "pcgrad": lambda: PCGrad(seed=seed),
            "mgda": MGDA,
            "cagrad": CAGrad,
            "imtl": IMTL,
        }
    )
    return strategies
