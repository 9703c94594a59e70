"""mtlbook: multi-task learning for recommender systems, the package behind the book.

The two axes of a multi-task model are independent: an architecture from
:mod:`mtlbook.models` and a loss weighting from :mod:`mtlbook.weighting`, combined by
:func:`fit`. Data come from :mod:`mtlbook.data` (simulators) and :mod:`mtlbook.datasets`
(public data sets); :func:`evaluate` scores a trained model; :func:`fit_population` trains
many seeds of one model at once; :func:`compare` runs models over seeds and tabulates them with
intervals; :func:`save` writes a trained model with its encoder as one run folder, and
:func:`load` reads it back to score raw DataFrames, CSV and Parquet files.

The package has two floors. The library, what a user imports for their own models:

* :mod:`mtlbook.data`, :mod:`mtlbook.datasets`: data sets, simulators, public data;
* :mod:`mtlbook.models`: the architectures; :mod:`mtlbook.weighting`: the loss weightings;
* :mod:`mtlbook.training`: :func:`fit` and its components (model selection, checkpoints,
  several processes, streaming from Parquet), :func:`fit_population`;
* :mod:`mtlbook.analysis`: the comparison harness, intervals and verdicts, seesaw and
  negative-transfer checks, gates, gradients, relatedness, scoring against a simulator's
  truth, export for serving;
* :mod:`mtlbook.metrics`, :mod:`mtlbook.losses`, :mod:`mtlbook.utils`.

And :mod:`mtlbook.book`, the chapters' own experiment drivers (one module per chapter), which
import the library and are never imported by it.
"""

from . import analysis, data, datasets, models, training, weighting
from .analysis.compare import compare
from .data import MultiTaskData, make_correlated_tasks, simulate_funnel
from .metrics import evaluate
from .training import Callback, fit, fit_population, load, save
from .utils import count_parameters, set_seed

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "MultiTaskData",
    "analysis",
    "compare",
    "count_parameters",
    "data",
    "datasets",
    "evaluate",
    "fit",
    "fit_population",
    "load",
    "make_correlated_tasks",
    "models",
    "save",
    "set_seed",
    "simulate_funnel",
    "training",
    "weighting",
]
