"""Multi-task architectures, one file per model, all behind :class:`MultiTaskModel`.

Every model is constructible as ``Model(data.schema)`` with sensible defaults. ``__all__`` lists
the models only (the tests iterate over it); the base class and the building blocks are
importable by name.
"""

from .base import GateRecord as GateRecord
from .base import MultiTaskModel as MultiTaskModel
from .layers import InputLayer as InputLayer
from .layers import ParallelMLP as ParallelMLP
from .layers import sparse_embeddings as sparse_embeddings
from .shared_bottom import SharedBottom
from .single_task import SingleTask

# isort: split
from .cgc import CGC
from .dselect_k import DSelectK
from .mmoe import MMoE
from .omoe import OMoE
from .ple import PLE

# isort: split
from .cross_stitch import CrossStitch
from .sluice import Sluice
from .soft_sharing import SoftSharing

# isort: split
from .aitm import AITM
from .esmm import ESMM

__all__ = ["SharedBottom", "SingleTask"]
__all__ += ["CGC", "PLE", "DSelectK", "MMoE", "OMoE"]  # mixture-of-experts family
__all__ += ["CrossStitch", "Sluice", "SoftSharing"]  # soft-sharing family
__all__ += ["AITM", "ESMM"]  # funnel family
