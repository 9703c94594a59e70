"""The common interface of every model in :mod:`mtlbook.models`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data import Batch, MultiTaskData, Schema
from ..losses import task_losses
from ..utils import count_parameters

__all__ = ["GateRecord", "MultiTaskModel"]


@dataclass(frozen=True)
class GateRecord:
    """The gate weights of one gate on the last forward pass.

    Attributes:
        level: extraction level (0 for single-level models such as MMoE).
        gate: the task the gate serves, or ``"shared"`` for a shared gate (PLE, OMoE).
        experts: names of the experts the gate mixes, in column order, e.g.
            ``("shared/0", "shared/1", "click/0")``; the part before ``/`` says whether the
            expert is shared or belongs to a task.
        weights: ``[batch, len(experts)]`` detached tensor; each row sums to 1 for softmax gates.
    """

    level: int
    gate: str
    experts: tuple[str, ...]
    weights: torch.Tensor


class MultiTaskModel(nn.Module):
    """Base class: ``forward(batch)`` returns ``{task name: [batch] tensor}``.

    Binary tasks output logits, regression tasks output predictions. Subclasses build their
    layers in ``__init__`` and end it with ``self.reset_parameters(seed)`` so that the same
    ``seed`` always gives the same initial weights, whatever the global random state.

    Hooks used by :func:`mtlbook.fit` and the loss-weighting strategies:

    * :meth:`task_losses` — per-task losses (masked tasks averaged over their subspace);
    * :meth:`shared_parameters` — the parameters all tasks share (for gradient-based weighting);
    * :meth:`shared_representation` — the shared representation of the last forward pass, if
      the model has one (for MGDA-UB);
    * :meth:`regularization` — an extra penalty added to the loss (``None`` if none).
    """

    def __init_subclass__(cls, **kwargs) -> None:
        # Every subclass's __init__ is wrapped (1) to construct under a forked RNG when a seed
        # is given, so that building a seeded model leaves the global random state exactly as
        # it was (layers initialise themselves on creation before ``reset_parameters(seed)``
        # sets the final weights), and (2) to record the arguments of the outermost call
        # (:attr:`init_arguments`), so that a saved run can build the model again.
        super().__init_subclass__(**kwargs)
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def wrapped(self, *args, **kw):
            if getattr(self, "_constructing", False):
                return init(self, *args, **kw)
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            outermost = not getattr(self, "_recording_arguments", False)
            if outermost:
                arguments = _constructor_arguments(signature, bound)
                object.__setattr__(self, "_recording_arguments", True)
            try:
                if bound.arguments.get("seed") is None:
                    init(self, *args, **kw)
                else:
                    object.__setattr__(self, "_constructing", True)
                    try:
                        with torch.random.fork_rng(devices=_cuda_devices()):
                            init(self, *args, **kw)
                    finally:
                        object.__delattr__(self, "_constructing")
            finally:
                if outermost:
                    object.__delattr__(self, "_recording_arguments")
            if outermost:
                object.__setattr__(self, "_init_arguments", arguments)

        cls.__init__ = wrapped  # type: ignore[method-assign]  # deliberate: see above

    #: Whether the model needs every task to be binary (funnel models such as ESMM and AITM).
    binary_tasks_only: bool = False
    #: The smallest number of tasks the model works with.
    min_tasks: int = 1
    #: The smallest number of binary tasks the model works with (ESMM and AITM need a funnel).
    min_binary_tasks: int = 0
    #: How :meth:`regularization` depends on the batch: ``"mean"`` (a mean over its samples,
    #: or independent of them) or ``"sum"`` (a sum over its samples, as DSelect-k's penalty).
    #: Training on several processes combines the shards' regularisers accordingly.
    regularization_reduction: str = "mean"
    # Set on first use by ``_record_gate`` and ``_clear_gates`` (gated models only).
    _gate_records: list[GateRecord]

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        if not isinstance(schema, Schema):
            raise TypeError(f"expected a Schema (data.schema), got {type(schema).__name__}")
        name = type(self).__name__
        if len(schema.tasks) < self.min_tasks:
            raise ValueError(
                f"{name} needs at least {self.min_tasks} tasks, the schema has "
                f"{len(schema.tasks)}: {list(schema.task_names)}"
            )
        n_binary = sum(t.kind == "binary" for t in schema.tasks)
        if n_binary < self.min_binary_tasks:
            raise ValueError(
                f"{name} needs at least {self.min_binary_tasks} binary tasks, the "
                f"schema has {n_binary}: {[t.kind for t in schema.tasks]}"
            )
        if self.binary_tasks_only:
            other = [t.name for t in schema.tasks if t.kind != "binary"]
            if other:
                raise ValueError(
                    f"{name} models binary funnel steps only; task(s) {other} are "
                    "not binary (use data.select_tasks([...]) to drop them)"
                )
        self.schema = schema

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.schema.task_names

    @property
    def init_arguments(self) -> dict[str, Any]:
        """The arguments the model was built with, defaults applied, without ``schema``:
        ``type(model)(model.schema, **model.init_arguments)`` builds the same model again
        (:func:`mtlbook.save` stores them). Arguments a subclass passes on to its parent's
        ``__init__`` are not recorded, only the outermost call's.

        Example:
            >>> import mtlbook as mb
            >>> from mtlbook.models import SharedBottom
            >>> data = mb.simulate_funnel(100, seed=0)
            >>> model = SharedBottom(data.schema, bottom_units=(16,))
            >>> model.init_arguments
            {'bottom_units': (16,), 'tower_units': (32,), 'embedding_dim': 8, 'dropout': 0.0,
             'seed': 0}
        """
        return dict(getattr(self, "_init_arguments", {}))

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ hooks
    def task_losses(
        self, outputs: dict[str, torch.Tensor], batch: Batch
    ) -> dict[str, torch.Tensor]:
        """Per-task mean losses (log-loss or MSE) for one batch."""
        return task_losses(outputs, batch, self.schema)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Exactly the parameters that every task's loss depends on; empty for models that
        share nothing.

        The gradient-based weightings (:mod:`mtlbook.weighting`) combine the tasks' gradients
        on these parameters and give every other one the plain sum, so a parameter missing
        here escapes them and one listed wrongly is treated as a conflict that is not there.
        Listed from the input towards the towers (a gate before the experts it mixes): the
        last weight tensor is the last shared layer, GradNorm's default. The tests check every
        model's list against :func:`mtlbook.models.reach.shared_by_reach`, which finds the
        shared parameters with autograd.
        """
        return []

    def check_training_masks(self, masked: Collection[str]) -> None:
        """Raise a ``ValueError`` if the model must not be trained with the tasks ``masked``
        defined on a subspace only (:func:`mtlbook.fit` calls it with the training data's
        masked tasks). Every task may be masked by default; the funnel models refuse a masked
        funnel step (:class:`~mtlbook.models.ESMM`, :class:`~mtlbook.models.AITM`)."""

    def shared_representation(self) -> torch.Tensor | None:
        """The shared representation of the last forward pass, ``[batch, units]``: the one
        tensor every task's tower reads; ``None`` for models without a single one.

        A model that has one stores it in ``self._last_representation`` during ``forward``
        (:class:`~mtlbook.models.SharedBottom` does). MGDA-UB
        (:class:`~mtlbook.weighting.MGDA` with ``upper_bound=True``) differentiates the task
        losses with respect to it. It carries the forward pass's graph, so a copy or pickle of
        the model starts without it.
        """
        return getattr(self, "_last_representation", None)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if "_last_representation" in state:
            state["_last_representation"] = None
        return state

    def regularization(self) -> torch.Tensor | None:
        """An extra term added to the training loss (``None``: no term).

        :func:`mtlbook.fit` calls it right after ``forward`` in every step, so a model may use
        quantities recorded during that forward pass (AITM's calibrator does).
        """
        return None

    # ------------------------------------------------------------------ introspection
    def gate_records(self) -> list[GateRecord]:
        """Gate weights of every gate on the last forward pass (empty for ungated models).

        Gated models append :class:`GateRecord` objects to ``self._gate_records`` in
        ``forward`` (after clearing it); diagnostics read them from here.
        """
        return list(getattr(self, "_gate_records", []))

    def _record_gate(
        self, level: int, gate: str, experts: Iterable[str], weights: torch.Tensor
    ) -> None:
        if not hasattr(self, "_gate_records"):
            object.__setattr__(self, "_gate_records", [])
        self._gate_records.append(GateRecord(level, gate, tuple(experts), weights.detach()))

    def _clear_gates(self) -> None:
        object.__setattr__(self, "_gate_records", [])

    def mixing_parameters(self) -> dict[str, torch.Tensor]:
        """Learned mixing parameters by name (cross-stitch α, sluice α/β), detached copies;
        empty for models without any."""
        return {}

    def transform(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Turn raw outputs into predictions: probabilities for binary tasks."""
        return {
            t.name: torch.sigmoid(outputs[t.name]) if t.kind == "binary" else outputs[t.name]
            for t in self.schema.tasks
        }

    # ------------------------------------------------------------------ utilities
    def reset_parameters(self, seed: int | None = None) -> None:
        """Re-initialise every layer; with ``seed`` the result is reproducible and the global
        random state is left untouched."""
        if seed is None:
            _reset_children(self)
            return
        with torch.random.fork_rng(devices=_cuda_devices()):
            torch.manual_seed(int(seed))
            _reset_children(self)

    def n_parameters(self, trainable_only: bool = True) -> int:
        """Number of (trainable) scalar parameters (:func:`mtlbook.utils.count_parameters`)."""
        return count_parameters(self, trainable_only=trainable_only)

    def predict_batch(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Predictions for one batch: the transformed task outputs, plus any extra quantity a
        model reports (ESMM adds ``pctr``, ``pcvr`` and ``pctcvr``)."""
        return self.transform(self(batch))

    @torch.no_grad()
    def predict(self, data: MultiTaskData, batch_size: int = 8192) -> pd.DataFrame:
        """Predictions for every sample: one column per task (probabilities for binary tasks),
        followed by any extra columns of :meth:`predict_batch`."""
        self._check_data(data)
        was_training = self.training
        self.eval()
        device = next(iter(self.parameters()), torch.empty(0)).device
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in self.task_names}
        try:
            for batch in data.loader(batch_size, shuffle=False):
                for name, value in self.predict_batch(batch.to(device)).items():
                    chunks.setdefault(name, []).append(value.float().cpu().numpy())
        finally:
            self.train(was_training)
        return pd.DataFrame(
            {
                name: np.concatenate(parts) if parts else np.empty(0)
                for name, parts in chunks.items()
            }
        )

    def _check_data(self, data: MultiTaskData) -> None:
        if not isinstance(data, MultiTaskData):
            raise TypeError(f"expected a MultiTaskData, got {type(data).__name__}")
        if data.schema != self.schema:
            raise ValueError(
                "the data's schema differs from the one the model was built with: "
                + _schema_differences(self.schema, data.schema)
            )


def _constructor_arguments(
    signature: inspect.Signature, bound: inspect.BoundArguments
) -> dict[str, Any]:
    """The bound arguments of a model's ``__init__`` without ``self`` and the schema (its
    first two parameters); ``**kwargs`` are spread out, ``*args`` kept under their name."""
    skipped = list(signature.parameters)[:2]
    out: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name in skipped:
            continue
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


def _schema_differences(model: Schema, data: Schema) -> str:
    """What differs between two schemas, in a few words (a column list, not two dumps)."""
    parts = []
    for name in ("dense", "categorical", "tasks"):
        a, b = getattr(model, name), getattr(data, name)
        if a != b:
            a_names = [t.name if hasattr(t, "name") else t for t in a]
            b_names = [t.name if hasattr(t, "name") else t for t in b]
            only_model = [n for n in a_names if n not in b_names][:5]
            only_data = [n for n in b_names if n not in a_names][:5]
            detail = (
                f"model has {only_model}, data has {only_data}"
                if only_model or only_data
                else ("same names in another order or of other kinds")
            )
            label = "tasks" if name == "tasks" else f"{name} columns"
            parts.append(f"{label} differ ({detail})")
    if model.categorical == data.categorical and model.cardinalities != data.cardinalities:
        changed = [
            f"{col} {a} vs {b}"
            for col, a, b in zip(
                model.categorical, model.cardinalities, data.cardinalities, strict=True
            )
            if a != b
        ]
        shown = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        parts.append(
            f"the cardinalities of {len(changed)} categorical column(s) differ (model vs data: "
            f"{shown}); encode later frames with the training encoder: "
            "MultiTaskData.from_frame(df, like=train) or train.encode(df)"
        )
    return "; ".join(parts) or "they differ"


def _cuda_devices() -> list[int]:
    """The CUDA devices whose random state a seeded construction must leave untouched."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def _reset_children(module: nn.Module) -> None:
    """Reset each sub-module that knows how to; one that does owns its children's reset."""
    for child in module.children():
        if hasattr(child, "reset_parameters"):
            # torch types a module's unknown attributes as Tensor | Module, never a method.
            child.reset_parameters()  # type: ignore[operator]
        else:
            _reset_children(child)


def _check_units(name: str, units: Iterable[int]) -> tuple[int, ...]:
    units = tuple(units)
    if not units or not all(isinstance(u, int) and u >= 1 for u in units):
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, got {units!r}")
    return units
