"""Training: :func:`fit` and its components, and :func:`fit_population`.

* :mod:`~mtlbook.training.loop`: :func:`fit`, the training loop of one model with any loss
  weighting, :class:`FitResult` and :class:`Callback`;
* :mod:`~mtlbook.training.selection`: model selection on the validation split, early stopping
  and the history, shared by :func:`fit` and :func:`fit_population`;
* :mod:`~mtlbook.training.checkpoint`: atomic checkpoints and resuming;
* :mod:`~mtlbook.training.artefact`: a trained run saved as one folder (:func:`save`,
  :func:`load`, :class:`SavedRun`) that scores raw DataFrames, CSV and Parquet files;
* :mod:`~mtlbook.training.processes`: what ``fit`` does differently on several processes;
* :mod:`~mtlbook.training.distributed`: training on several processes (``torchrun``);
* :mod:`~mtlbook.training.streaming`: training data streamed from Parquet shards;
* :mod:`~mtlbook.training.population`: many seeds of one model as one vectorised run.
"""

from .artefact import SavedRun, load, save
from .loop import Callback, FitResult, fit
from .population import PopulationResult, fit_population

__all__ = [
    "Callback",
    "FitResult",
    "PopulationResult",
    "SavedRun",
    "fit",
    "fit_population",
    "load",
    "save",
]
