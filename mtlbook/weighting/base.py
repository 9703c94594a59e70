"""The loss-weighting axis: how per-task losses become one training step.

A :class:`Weighting` is composed with any model by :func:`mtlbook.fit`
(``fit(model, ..., weighting=...)``). Each step ``fit`` computes the per-task losses and hands
them to :meth:`Weighting.backward`, which must leave gradients in ``.grad`` of the model's
parameters (``fit`` then calls the optimiser). Simple strategies combine the losses into one
scalar; gradient-based ones may use ``model.shared_parameters()`` to look at per-task gradients.
``fit`` logs :attr:`Weighting.weights` into the history every epoch.

Checkpoints: :meth:`Weighting.state_dict` and :meth:`Weighting.load_state_dict` save and restore
everything a strategy changes while it trains (its learnable parameters, the attributes named
in :attr:`Weighting.state_attributes`: loss histories, random generators, private optimisers),
so that :func:`mtlbook.fit` resumes a run exactly where it stopped. :meth:`Weighting.config`
gives the constructor arguments, which a checkpoint records to refuse resuming with another
strategy.
"""

from __future__ import annotations

import copy
import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = ["EqualWeight", "Weighting"]


class Weighting(ABC):
    """Base class of loss-weighting strategies.

    Lifecycle, driven by :func:`mtlbook.fit`: :meth:`setup` once before training (a strategy may
    create its own learnable parameters there), :meth:`backward` every step, :meth:`after_step`
    after each optimiser step, and :meth:`epoch_end` after every epoch with the mean training
    loss of each task. :attr:`weights` are the weights the latest step applied.

    A strategy that keeps state between steps beyond its :meth:`parameters` (a loss history, a
    random generator, an optimiser of its own, a step counter) names those attributes in the
    class attribute :attr:`state_attributes`, so that :meth:`state_dict` saves them and
    checkpoints resume exactly. Supported values: tensors, ``torch.Generator``, optimisers,
    numbers, strings, ``None``, and lists, tuples and dicts of these.
    """

    #: Attributes (set by :meth:`setup`) that change while training: saved by
    #: :meth:`state_dict`, restored by :meth:`load_state_dict`.
    state_attributes: ClassVar[tuple[str, ...]] = ()

    #: How the strategy trains when :func:`mtlbook.fit` runs on several processes
    #: (:mod:`mtlbook.training.distributed`). ``"ddp"``: :meth:`backward` back-propagates one scalar
    #: built from the losses it is given (their values are those of the global batch on every
    #: process) and DistributedDataParallel averages the gradients. ``"manual"``: the strategy
    #: differentiates the task losses one by one and averages the gradients over the processes
    #: itself (through :mod:`mtlbook.weighting._grads`); ``fit`` then bypasses
    #: DistributedDataParallel's gradient hooks. ``None``: the strategy cannot train on
    #: several processes, and ``fit`` refuses it before training.
    distributed: ClassVar[str | None] = "ddp"

    #: Whether :func:`mtlbook.fit` may train a model whose embedding tables have sparse
    #: gradients (:func:`mtlbook.models.sparse_embeddings`) with this strategy. The strategies
    #: that flatten the tasks' gradients of the shared parameters into vectors cannot.
    sparse_gradients: bool = True

    def __init_subclass__(cls, **kwargs) -> None:
        # Record the constructor arguments of every strategy (see ``config``): a checkpoint
        # compares them to refuse resuming with a strategy configured differently.
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__init__
        signature = inspect.signature(init)
        first = next(iter(signature.parameters))

        @functools.wraps(init)
        def wrapped(self, *args, **kw):
            if "_init_arguments" not in self.__dict__:  # the outermost constructor records
                try:
                    bound = signature.bind(self, *args, **kw)
                except TypeError:
                    return init(self, *args, **kw)  # let the constructor report the error
                bound.apply_defaults()
                self._init_arguments = {k: v for k, v in bound.arguments.items() if k != first}
            return init(self, *args, **kw)

        cls.__init__ = wrapped  # type: ignore[method-assign]  # deliberate: records arguments

    def config(self) -> dict[str, Any]:
        """The strategy's class and the arguments it was constructed with.

        Example:
            >>> from mtlbook.weighting import DWA
            >>> DWA(temperature=3.0).config()
            {'class': 'mtlbook.weighting.dwa.DWA', 'temperature': 3.0}
        """
        cls = type(self)
        return {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            **self.__dict__.get("_init_arguments", {}),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything the strategy changes while training, as plain tensors, numbers and
        containers (``torch.save``-able and loadable with ``weights_only=True``).

        The values of :meth:`parameters` and of every attribute named in
        :attr:`state_attributes` (copies: later steps do not change the returned state).
        Only valid after :meth:`setup`.

        Example:
            >>> from mtlbook.models import SharedBottom
            >>> from mtlbook.data import make_correlated_tasks
            >>> from mtlbook.weighting import RLW
            >>> model = SharedBottom(make_correlated_tasks(10, 0.5, seed=0).schema, seed=0)
            >>> a, b = RLW(seed=1), RLW(seed=2)
            >>> a.setup(model.task_names, model); b.setup(model.task_names, model)
            >>> b.load_state_dict(a.state_dict())
            >>> bool((a.sample() == b.sample()).all())
            True
        """
        self._require_setup("state_dict")
        cls = type(self)
        return {
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "parameters": [p.detach().clone() for p in self.parameters()],
            "attributes": {
                name: _export(getattr(self, name), f"{cls.__name__}.{name}")
                for name in self.state_attributes
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of the same strategy, set up for the same tasks and
        model (call :meth:`setup` first; :func:`mtlbook.fit` does).

        Learnable tensors are updated in place, so optimisers that hold them keep working.

        Raises:
            ValueError: for a state of another strategy, or with other parameter shapes or
                attributes.
            RuntimeError: before :meth:`setup`.
        """
        self._require_setup("load_state_dict")
        cls = type(self)
        name = f"{cls.__module__}.{cls.__qualname__}"
        if not isinstance(state, Mapping) or not {"class", "parameters", "attributes"} <= set(
            state
        ):
            raise ValueError(
                f"{cls.__name__}.load_state_dict expects a dict from "
                "state_dict() with keys 'class', 'parameters' and 'attributes', "
                f"got {state!r:.200}"
            )
        if state["class"] != name:
            raise ValueError(f"the state is of {state['class']}, not of {name}")
        params, saved = self.parameters(), list(state["parameters"])
        shapes = [tuple(p.shape) for p in params]
        saved_shapes = [tuple(t.shape) for t in saved]
        if shapes != saved_shapes:
            raise ValueError(
                f"{cls.__name__}: the state has parameters of shapes "
                f"{saved_shapes}, the strategy {shapes} (set up for other tasks?)"
            )
        missing = [a for a in self.state_attributes if a not in state["attributes"]]
        if missing:
            raise ValueError(f"{cls.__name__}: the state lacks attribute(s) {missing}")
        with torch.no_grad():
            for p, value in zip(params, saved, strict=True):
                p.copy_(value)
        for attribute in self.state_attributes:
            setattr(
                self,
                attribute,
                _restore(
                    getattr(self, attribute, None),
                    state["attributes"][attribute],
                    f"{cls.__name__}.{attribute}",
                ),
            )

    def _require_setup(self, method: str) -> None:
        if not hasattr(self, "task_names"):
            raise RuntimeError(
                f"{type(self).__name__}.{method} needs the strategy set up: call "
                "setup(task_names, model) first (mtlbook.fit does)"
            )

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        """Called once before training with the task names and the model."""
        self.task_names = tuple(task_names)

    @abstractmethod
    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Back-propagate the combined loss; ``extra`` (a regulariser) is added unweighted.

        Returns the combined scalar loss (detached use only: for logging).
        """

    def after_step(self, model: nn.Module, batch) -> None:  # noqa: B027
        """Called right after each optimiser step with the step's batch (FAMO measures the
        decrease of the losses on it); does nothing by default."""

    def epoch_end(self, epoch: int, train_losses: Mapping[str, float]) -> None:  # noqa: B027
        """Called after every epoch with the mean training loss of each task."""

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters of the strategy itself (optimised by ``fit``)."""
        return []

    @property
    @abstractmethod
    def weights(self) -> dict[str, float]:
        """The current weight of each task."""


_PLAIN = (bool, int, float, str, type(None))


def _export(value: Any, where: str) -> Any:
    """A copy of ``value`` made of tensors, numbers, strings and containers only."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, torch.optim.Optimizer):
        return copy.deepcopy(value.state_dict())
    if isinstance(value, list | tuple):
        return type(value)(_export(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        return {k: _export(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, _PLAIN):
        return value
    raise TypeError(
        f"{where} is a {type(value).__name__}, which a weighting state cannot "
        "hold (tensors, generators, optimisers, numbers, strings, None and "
        "lists, tuples or dicts of these)"
    )


def _restore(current: Any, saved: Any, where: str) -> Any:
    """The value to set for an attribute that is ``current`` now and was ``saved``."""
    if isinstance(current, torch.Generator):
        if not isinstance(saved, torch.Tensor):
            raise ValueError(
                f"{where}: expected a generator state (a tensor), got {type(saved).__name__}"
            )
        current.set_state(saved.cpu())
        return current
    if isinstance(current, torch.optim.Optimizer):
        current.load_state_dict(saved)
        return current
    if isinstance(saved, torch.Tensor):
        if isinstance(current, torch.Tensor) and current.requires_grad:
            # A learnable tensor that an optimiser holds: keep the object, copy the values.
            if current.shape != saved.shape:
                raise ValueError(
                    f"{where}: the state has shape {tuple(saved.shape)}, the "
                    f"strategy {tuple(current.shape)}"
                )
            with torch.no_grad():
                current.copy_(saved)
            return current
        device = current.device if isinstance(current, torch.Tensor) else saved.device
        return saved.detach().to(device, copy=True)
    if isinstance(saved, list | tuple):
        items = (
            current
            if isinstance(current, list | tuple) and len(current) == len(saved)
            else [None] * len(saved)
        )
        return type(saved)(
            _restore(c, s, f"{where}[{i}]")
            for i, (c, s) in enumerate(zip(items, saved, strict=True))
        )
    if isinstance(saved, dict):
        held = current if isinstance(current, dict) else {}
        return {k: _restore(held.get(k), v, f"{where}[{k!r}]") for k, v in saved.items()}
    return saved


class EqualWeight(Weighting):
    """Every task's loss counts once: ``L = Σ_k L_k`` (the default of :func:`mtlbook.fit`)."""

    def backward(self, losses, model, extra=None):
        total = torch.stack(list(losses.values())).sum()
        if extra is not None:
            total = total + extra
        total.backward()
        return total

    @property
    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.task_names, 1.0)
