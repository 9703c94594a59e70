"""mtlbook: multi-task learning for recommender systems, the package behind the book.

The two axes of a multi-task model are independent: an architecture from
:mod:`mtlbook.models` and a loss weighting from :mod:`mtlbook.weighting`, combined by
:func:`fit`. Data come from :mod:`mtlbook.data`; :func:`evaluate` scores a trained model.
"""

from . import data, diagnostics, models, weighting
from .compare import CompareResult, compare
from .data import MultiTaskData, make_correlated_tasks, simulate_funnel
from .metrics import evaluate, gauc, score_predictions
from .training import Callback, FitResult, fit
from .utils import count_parameters, match_width, resolve_device, set_seed

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CompareResult",
    "FitResult",
    "MultiTaskData",
    "compare",
    "count_parameters",
    "data",
    "diagnostics",
    "evaluate",
    "fit",
    "gauc",
    "make_correlated_tasks",
    "match_width",
    "models",
    "resolve_device",
    "score_predictions",
    "set_seed",
    "simulate_funnel",
    "weighting",
]
