"""Multi-task architectures, one file per model, all behind :class:`MultiTaskModel`.

Every model is constructible as ``Model(data.schema)`` with sensible defaults. ``__all__`` lists
the models only (the tests iterate over it); the base class and the building blocks are
importable by name.
"""

from .base import MultiTaskModel as MultiTaskModel
from .layers import InputLayer as InputLayer
from .layers import ParallelMLP as ParallelMLP
from .shared_bottom import SharedBottom
from .single_task import SingleTask

__all__ = ["SharedBottom", "SingleTask"]
