"""ESMM written out (chapter 12.5): two towers on the shared embedding, pCTCVR = pCTR × pCVR.

The library's :class:`mtlbook.models.ESMM` keeps its towers in batched ``ParallelMLP`` blocks
and computes the CTCVR logit in log space, so that it stays finite for logits of any size; this
version multiplies the two probabilities and takes the logit of the product directly, which
agrees with the library to float32 rounding for ordinary logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...models import ESMM
from .shared_bottom import copy_parallel_mlp

__all__ = ["TeachingESMM"]


def _tower(input_dim: int, tower_units: Sequence[int]) -> nn.Sequential:
    """An MLP ``input_dim → tower_units… → 1`` with ReLU between the layers (a logit out)."""
    sizes = [input_dim, *tower_units, 1]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TeachingESMM(nn.Module):
    """ESMM: a CTR tower and a CVR tower on the shared embedding ``x``; both losses run over
    every impression, and the CVR tower learns only through ``pCTCVR = pCTR · pCVR``."""

    def __init__(
        self,
        input_dim: int,
        tower_units: Sequence[int],
        tasks: Sequence[str] = ("click", "purchase"),
    ) -> None:
        super().__init__()
        self.ctr_task, self.ctcvr_task = tasks  # click; clicked and bought
        self.ctr_tower = _tower(input_dim, tower_units)  # x -> a, the CTR logit
        self.cvr_tower = _tower(input_dim, tower_units)  # x -> b, the CVR logit

    def probabilities(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pctr = torch.sigmoid(self.ctr_tower(x).squeeze(-1))  # P(c = 1 | x), [batch]
        pcvr = torch.sigmoid(self.cvr_tower(x).squeeze(-1))  # P(b = 1 | c = 1, x), [batch]
        return {"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr}  # the chain rule

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        a = self.ctr_tower(x).squeeze(-1)  # the CTR logit, [batch]
        p = self.probabilities(x)
        # The two supervised outputs as logits: click on pCTR, "clicked and bought" on pCTCVR.
        return {self.ctr_task: a, self.ctcvr_task: torch.logit(p["pctcvr"])}

    def loss(self, x: torch.Tensor, click: torch.Tensor, bought: torch.Tensor) -> torch.Tensor:
        p = self.probabilities(x)  # every impression, clicked or not; pCVR has no loss of its own
        return F.binary_cross_entropy(p["pctr"], click) + F.binary_cross_entropy(
            p["pctcvr"], click * bought
        )

    @classmethod
    def from_library(cls, model: ESMM) -> TeachingESMM:
        """The teaching model with ``model``'s sizes and a copy of its tower weights.

        Only the paper's form (``backbone="mlp"``) on the two funnel tasks; the embedding
        tables are not copied: the forward pass takes ``x = model.input(batch)``.
        """
        if model.backbone is not None or len(model.task_names) != 2:
            raise ValueError(
                "TeachingESMM covers ESMM with MLP towers on the two funnel tasks only; the "
                f"model has the tasks {list(model.task_names)} and backbone {model.backbone!r}"
            )
        hidden = model.ctr_tower.units[:-1]  # the last layer is the logit
        teaching = cls(model.input.output_dim, hidden, (model.ctr_task, model.ctcvr_task))
        for tower, stacked in (
            (teaching.ctr_tower, model.ctr_tower),
            (teaching.cvr_tower, model.towers),
        ):
            copy_parallel_mlp(stacked, 0, [m for m in tower if isinstance(m, nn.Linear)])
        return teaching
