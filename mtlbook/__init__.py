"""mtlbook: multi-task learning for recommender systems, the package behind the book.

The two axes of a multi-task model are independent: an architecture from
:mod:`mtlbook.models` and a loss weighting from :mod:`mtlbook.weighting`, combined by
:func:`fit`. Data come from :mod:`mtlbook.data`; :func:`evaluate` scores a trained model;
:func:`fit_population` trains many seeds of one model at once.
"""

from . import checkpoint, data, datasets, diagnostics, models, weighting
from .compare import CompareResult, compare
from .data import MultiTaskData, make_correlated_tasks, simulate_funnel
from .metrics import evaluate, gauc, score_predictions
from .population import PopulationResult, fit_population
from .training import Callback, FitResult, fit
from .utils import count_parameters, match_width, resolve_device, set_seed

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "CompareResult",
    "FitResult",
    "MultiTaskData",
    "PopulationResult",
    "checkpoint",
    "compare",
    "count_parameters",
    "data",
    "datasets",
    "diagnostics",
    "evaluate",
    "fit",
    "fit_population",
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
