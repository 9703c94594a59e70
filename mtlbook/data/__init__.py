"""Data containers and generators: :class:`MultiTaskData`, the MMoE-paper generator of
correlated tasks and the impression → click → purchase funnel simulator."""

from ._core import TASK_KINDS, Batch, Schema, TaskSpec
from ._loader import BatchLoader
from ._multitask import MultiTaskData
from .correlated import make_correlated_tasks
from .funnel import simulate_funnel

__all__ = [
    "TASK_KINDS",
    "Batch",
    "BatchLoader",
    "MultiTaskData",
    "Schema",
    "TaskSpec",
    "make_correlated_tasks",
    "simulate_funnel",
]
