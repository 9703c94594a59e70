"""Data containers and generators: :class:`MultiTaskData` and its :class:`FrameEncoder`, the
MMoE-paper generator of correlated tasks, the impression → click → purchase funnel simulator,
and :func:`read_table` for a user's CSV and Parquet files."""

from ._core import TASK_KINDS, Batch, Schema, TaskSpec
from ._io import read_table
from ._loader import BatchLoader
from ._multitask import MultiTaskData
from .correlated import make_correlated_tasks
from .encoding import FrameEncoder
from .funnel import simulate_funnel

__all__ = [
    "TASK_KINDS",
    "Batch",
    "BatchLoader",
    "FrameEncoder",
    "MultiTaskData",
    "Schema",
    "TaskSpec",
    "make_correlated_tasks",
    "read_table",
    "simulate_funnel",
]
