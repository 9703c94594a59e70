"""Loss-weighting strategies, the second axis next to the architectures of
:mod:`mtlbook.models`."""

from .base import EqualWeight, Weighting

__all__ = ["EqualWeight", "Weighting"]
