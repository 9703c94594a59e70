"""Checks and plotting constants shared by the modules of :mod:`mtlbook.analysis`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.base import MultiTaskModel

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure

#: The colour of shared experts, gates and reference lines in the diagnostics' figures.
SHARED_COLOR = "#333333"


def check_model_data(model: Any, data: Any) -> None:
    if not isinstance(model, MultiTaskModel):
        raise TypeError(f"expected a mtlbook model (MultiTaskModel), got {type(model).__name__}")
    model._check_data(data)
    if len(data) == 0:
        raise ValueError("the data set is empty")


def check_batch_size(batch_size: Any) -> int:
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def tidy_layout(fig: Figure | SubFigure) -> None:
    """``tight_layout`` for a figure a plot function drew on. Axes handed in from a SubFigure
    leave the layout to whoever made it (a SubFigure has no ``tight_layout``)."""
    from matplotlib.figure import Figure

    if isinstance(fig, Figure):
        fig.tight_layout()
