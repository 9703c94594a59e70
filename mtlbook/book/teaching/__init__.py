"""Teaching versions of the book's models and balancing algorithms: the code the chapters show.

Every module here writes one model (or one loss-balancing step) the plain way: one
``nn.Linear`` per expert, gate and tower, a Python loop over tasks, each line of the chapter's
equations a line of code. The library's versions (:mod:`mtlbook.models`,
:mod:`mtlbook.weighting`) compute the same thing faster (stacked experts, batched towers);
a chapter shows the teaching version with :func:`mtlbook.book.page.show_source`, copies the
library model's weights into it (``TeachingX.from_library(model)``) and checks that both give
the same outputs on a batch to 1e-6 (:func:`max_difference`); from then on it uses the library.
``tests/test_teaching_*.py`` keep those equalities true when the library changes.

A teaching model's ``forward`` takes the input layer's output ``x = model.input(batch)``
(embeddings and dense features concatenated, ``[batch, input_dim]``): the input layer is the
same in every model and is taught once, in 12.3.1. It returns one logit per task, as the
library models do.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["max_difference"]


def max_difference(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """The largest absolute difference between two models' outputs, over every task.

    Raises:
        ValueError: when the two outputs do not name the same tasks or shapes differ.
    """
    if set(a) != set(b):
        raise ValueError(f"the outputs name different tasks: {sorted(a)} vs {sorted(b)}")
    worst = 0.0
    for task in a:
        if a[task].shape != b[task].shape:
            raise ValueError(
                f"task {task!r}: shapes differ, {tuple(a[task].shape)} vs {tuple(b[task].shape)}"
            )
        worst = max(worst, float((a[task].detach() - b[task].detach()).abs().max()))
    return worst
