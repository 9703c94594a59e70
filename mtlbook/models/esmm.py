"""ESMM: the Entire Space Multi-task Model (Ma, Zhao, Huang, Wang, Hu, Zhu & Gai, SIGIR 2018,
"Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click Conversion
Rate").

A conversion can only be observed after a click, so a CVR model trained on clicked impressions
learns from a biased sample (sample-selection bias) and from few labels (data sparsity), and is
then used on every impression. ESMM never fits the CVR on the clicked subspace. It models two
rates over the *entire space* of impressions with towers on shared embeddings,

    a = tower_ctr(embed(x)),    b = tower_cvr(embed(x)),
    pCTR = σ(a),    pCVR = σ(b),    pCTCVR = P(click ∧ buy | x) = pCTR · pCVR,

and trains only the CTR and CTCVR losses, both over all impressions:

    L = Σ_j BCE(y_click_j, pCTR_j) + Σ_j BCE(y_click_j · y_buy_j, pCTR_j · pCVR_j).

There is no CVR loss; the CVR tower learns only through the product. Its output ``pCVR`` is the
post-click conversion rate, defined on every impression.

Here ``forward`` returns the CTR logit ``a`` for the click task and the *logit* of ``pCTCVR``
for the CTCVR task, so the base class's log-loss on logits is exactly the ESMM loss and
``transform`` gives probabilities. The logit is computed in log space without cancellation,
using ``1 − σ(a)σ(b) = σ(−a) + σ(a)σ(−b)``:

    log pCTCVR       = logσ(a) + logσ(b)
    log(1 − pCTCVR)  = logaddexp(logσ(−a), logσ(a) + logσ(−b))
    logit(pCTCVR)    = log pCTCVR − log(1 − pCTCVR),

which stays finite (with finite gradients) for logits of any size. Chapter 12.5 of the book
explains the model and measures the selection bias on the funnel simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Batch, Schema
from .base import GateRecord, MultiTaskModel, _check_units
from .layers import InputLayer, ParallelMLP
from .reach import shared_by_reach

__all__ = ["ESMM", "ctcvr_logit"]

#: Columns that :meth:`ESMM.predict` adds after the task columns.
FUNNEL_COLUMNS = ("pctr", "pcvr", "pctcvr")


def ctcvr_logit(ctr_logit: torch.Tensor, cvr_logit: torch.Tensor) -> torch.Tensor:
    """``logit(σ(a)·σ(b))`` computed stably in log space (finite for any finite ``a``, ``b``)."""
    log_p = F.logsigmoid(ctr_logit) + F.logsigmoid(cvr_logit)
    # 1 − σ(a)σ(b) = σ(−a) + σ(a)σ(−b): a sum of positive terms, no cancellation.
    log_not_p = torch.logaddexp(
        F.logsigmoid(-ctr_logit), F.logsigmoid(ctr_logit) + F.logsigmoid(-cvr_logit)
    )
    return log_p - log_not_p


def _funnel_tasks(schema: Schema, ctr_task: str | None, ctcvr_task: str | None) -> tuple[str, str]:
    """Resolve (and check) the names of the CTR and CTCVR tasks."""
    binary = [t.name for t in schema.tasks if t.kind == "binary"]
    if len(binary) < 2:
        raise ValueError(
            f"ESMM needs at least 2 binary tasks (click, and click-and-buy over all "
            f"impressions); the schema's tasks are "
            f"{[(t.name, t.kind) for t in schema.tasks]}"
        )
    for role, name in (("ctr_task", ctr_task), ("ctcvr_task", ctcvr_task)):
        if name is None:
            continue
        if name not in schema.task_names:
            raise ValueError(
                f"ESMM: {role}={name!r} is not a task of the schema; tasks are "
                f"{list(schema.task_names)}"
            )
        if name not in binary:
            raise ValueError(
                f"ESMM: {role}={name!r} must be a binary task, it is {schema.task(name).kind}"
            )
    if ctr_task is None and ctcvr_task is None and {"click", "purchase"} <= set(binary):
        return "click", "purchase"
    if ctr_task is None:
        ctr_task = (
            "click"
            if "click" in binary and ctcvr_task != "click"
            else next(b for b in binary if b != ctcvr_task)
        )
    if ctcvr_task is None:
        ctcvr_task = (
            "purchase"
            if "purchase" in binary and ctr_task != "purchase"
            else next(b for b in binary if b != ctr_task)
        )
    if ctr_task == ctcvr_task:
        raise ValueError(f"ESMM: ctr_task and ctcvr_task must differ, both are {ctr_task!r}")
    return ctr_task, ctcvr_task


class ESMM(MultiTaskModel):
    """Entire Space Multi-task Model: pCTCVR = pCTR × pCVR, trained on all impressions.

    Outputs (``forward``): the CTR logit for ``ctr_task``, the logit of pCTCVR for
    ``ctcvr_task`` and, for any further task of the schema (e.g. ``dwell_time``), the output of
    an ordinary tower on the shared embedding. :meth:`funnel` gives the three logits including
    pCVR's; :meth:`predict` adds the columns ``pctr``, ``pcvr`` and ``pctcvr``.

    Train it on data in which the CTCVR label is "clicked and bought" on *every* impression
    (the funnel's ``purchase``), not a conversion label masked to the clicks.

    Args:
        schema: the data schema (``data.schema``); at least two binary tasks.
        ctr_task: the click task; default ``"click"`` if present, else the first binary task.
        ctcvr_task: the click-and-convert task; default ``"purchase"`` if present, else the
            next binary task.
        tower_units: hidden layer sizes of each tower (the output layer is added).
        embedding_dim: size of each categorical field's embedding (shared by all towers).
        dropout: dropout after each hidden layer.
        backbone: ``"mlp"`` (the paper's: one MLP tower per task on the shared embedding) or
            any callable ``schema -> MultiTaskModel`` such as ``SharedBottom`` or a
            mixture-of-experts class; the backbone's output for ``ctcvr_task`` is then used as
            the CVR logit and its output for ``ctr_task`` as the CTR logit (``tower_units``,
            ``embedding_dim`` and ``dropout`` apply to ``"mlp"`` only).
        seed: seed of the initial weights (``None``: use the global random state).
    """

    min_tasks = 2
    #: ESMM needs this many binary tasks (the tests read it; extra tasks may be of any kind).
    min_binary_tasks = 2

    def __init__(
        self,
        schema: Schema,
        ctr_task: str | None = None,
        ctcvr_task: str | None = None,
        tower_units: Sequence[int] = (64, 32),
        embedding_dim: int = 8,
        dropout: float = 0.0,
        backbone: str | Callable[[Schema], MultiTaskModel] = "mlp",
        seed: int | None = 0,
    ) -> None:
        super().__init__(schema)
        self.ctr_task, self.ctcvr_task = _funnel_tasks(schema, ctr_task, ctcvr_task)
        clash = sorted(set(FUNNEL_COLUMNS) & set(schema.task_names))
        if clash:
            raise ValueError(
                f"ESMM: task name(s) {clash} clash with the prediction columns "
                f"{FUNNEL_COLUMNS}; rename the task(s)"
            )
        names = schema.task_names
        self._ctr_index, self._cvr_index = names.index(self.ctr_task), names.index(self.ctcvr_task)
        if isinstance(backbone, str):
            if backbone != "mlp":
                raise ValueError(
                    f"ESMM: backbone must be 'mlp' or a callable schema -> "
                    f"MultiTaskModel, got {backbone!r}"
                )
            tower_units = _check_units("tower_units", tower_units)
            self.input = InputLayer(schema, embedding_dim)
            # pCTR's tower apart: both losses reach it (the CTCVR loss through pCTR · pCVR).
            self.ctr_tower = ParallelMLP(
                1, self.input.output_dim, (*tower_units, 1), dropout=dropout
            )
            # One tower for every other task, in schema order; the one of ctcvr_task is the CVR
            # tower (it predicts pCVR, the CTCVR label is only ever fitted through the product).
            self.towers = ParallelMLP(
                len(names) - 1, self.input.output_dim, (*tower_units, 1), dropout=dropout
            )
            self.backbone = None
        elif callable(backbone):
            inner = backbone(schema)
            if not isinstance(inner, MultiTaskModel):
                raise TypeError(
                    f"ESMM: backbone(schema) must return a MultiTaskModel, got "
                    f"{type(inner).__name__}"
                )
            if inner.task_names != names:
                raise ValueError(
                    f"ESMM: the backbone's tasks {list(inner.task_names)} differ "
                    f"from the schema's {list(names)}"
                )
            self.backbone = inner
            self._shared_names: list[str] | None = None  # shared_parameters() fills it
        else:
            raise TypeError(
                f"ESMM: backbone must be 'mlp' or a callable schema -> "
                f"MultiTaskModel, got {type(backbone).__name__}"
            )
        self.reset_parameters(seed)

    # ------------------------------------------------------------------ forward
    def _heads(self, batch: Batch) -> list[torch.Tensor]:
        """Raw tower outputs in schema order; at ``ctcvr_task``'s position: the CVR logit."""
        if self.backbone is not None:
            out = self.backbone(batch)
            return [out[name] for name in self.task_names]
        x = self.input(batch)  # [batch, input_dim]
        heads = list(self.towers(x).squeeze(-1))  # (tasks − 1) × [batch]
        heads.insert(self._ctr_index, self.ctr_tower(x)[0, :, 0])  # the CTR logit, [batch]
        return heads  # tasks × [batch]

    def funnel(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The logits ``{"ctr": a, "cvr": b, "ctcvr": logit(σ(a)σ(b))}``, ``[batch]`` each."""
        heads = self._heads(batch)
        a, b = heads[self._ctr_index], heads[self._cvr_index]
        return {"ctr": a, "cvr": b, "ctcvr": ctcvr_logit(a, b)}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        heads = self._heads(batch)
        a, b = heads[self._ctr_index], heads[self._cvr_index]
        heads[self._cvr_index] = ctcvr_logit(a, b)  # [batch]: logit of pCTR · pCVR
        return dict(zip(self.task_names, heads, strict=True))

    # ------------------------------------------------------------------ hooks
    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters both funnel losses and every other task depend on.

        Without a backbone: the embedding tables and, when the schema's only tasks are the
        CTR and CTCVR tasks, pCTR's tower, which the CTCVR loss reaches through
        ``pCTR · pCVR``. With a backbone: the backbone's parameters that every task's output
        reaches (found once with :func:`~mtlbook.models.reach.shared_by_reach`). A backbone
        whose towers are one tensor stacked over the tasks (every model of
        :mod:`mtlbook.models`) then contributes that whole tensor, pCVR's slice included,
        although only pCTR's slice is shared: a superset, which the tests check is the only
        difference.
        """
        if self.backbone is None:
            params = list(self.input.parameters())
            if len(self.task_names) == 2:  # nothing but the funnel: pCTR's tower is shared
                params += list(self.ctr_tower.parameters())
            return params
        if self._shared_names is None:
            self._shared_names = shared_by_reach(self)
        named = dict(self.named_parameters())
        return [named[name] for name in self._shared_names]

    def check_training_masks(self, masked: Collection[str]) -> None:
        """Refuse training data in which the CTR or the CTCVR task is masked.

        Both ESMM losses run over every impression. A CTCVR loss on the clicked impressions
        only (a ``{"kind": "binary", "mask": "click"}`` task) would fit pCTR · pCVR where the
        click is known to have happened: the sample-selection bias ESMM exists to remove.
        """
        for role, task in (("ctr_task", self.ctr_task), ("ctcvr_task", self.ctcvr_task)):
            if task in masked:
                raise ValueError(
                    f"ESMM: {role} {task!r} is masked in the training data, but ESMM trains its "
                    "CTR and CTCVR losses over every impression; a loss on a subspace (such as "
                    "the clicked impressions) brings back the sample-selection bias ESMM "
                    f"removes. Label {task!r} on every impression (for CTCVR: clicked and "
                    "bought, 0 where there was no click) and declare it without a mask"
                )

    def regularization(self) -> torch.Tensor | None:
        return None if self.backbone is None else self.backbone.regularization()

    @property
    def regularization_reduction(self) -> str:  # type: ignore[override]
        return "mean" if self.backbone is None else self.backbone.regularization_reduction

    def gate_records(self) -> list[GateRecord]:
        return [] if self.backbone is None else self.backbone.gate_records()

    def mixing_parameters(self) -> dict[str, torch.Tensor]:
        return {} if self.backbone is None else self.backbone.mixing_parameters()

    # ------------------------------------------------------------------ prediction
    def predict_batch(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Task probabilities plus ``pctr``, ``pcvr`` and ``pctcvr`` (= ``pctr · pcvr``) for
        every impression, clicked or not."""
        heads = self._heads(batch)
        a, b = heads[self._ctr_index], heads[self._cvr_index]
        heads[self._cvr_index] = ctcvr_logit(a, b)
        out = self.transform(dict(zip(self.task_names, heads, strict=True)))
        pctr, pcvr = torch.sigmoid(a), torch.sigmoid(b)
        out.update(pctr=pctr, pcvr=pcvr, pctcvr=pctr * pcvr)
        return out
