"""Loss-weighting strategies, the second axis next to the architectures of
:mod:`mtlbook.models`."""

from .base import EqualWeight, Weighting
from .cagrad import CAGrad
from .catalogue import standard_strategies as standard_strategies
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

# ``__all__`` lists the base class and the strategies (the tests iterate over it);
# ``standard_strategies`` (name → factory of every strategy) is importable by name.
__all__ = ["EqualWeight", "Weighting"]
__all__ += [
    "DWA",
    "FAMO",
    "RLW",
    "FixedWeights",
    "ScheduledWeights",  # loss-based
    "UncertaintyWeighting",
]
__all__ += ["IMTL", "MGDA", "CAGrad", "GradNorm", "PCGrad"]  # gradient-based
