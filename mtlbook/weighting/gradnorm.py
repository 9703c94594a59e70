"""GradNorm: balance the tasks by the size of their gradients (Chen, Badrinarayanan, Lee &
Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask
Networks", ICML 2018).

The network is trained on ``Σ_i w_i L_i`` with learnable task weights ``w_i`` (initially 1).
The weights are learned so that every task's weighted gradient on the last shared layer ``W``
has a size that matches how far the task still has to go:

    G_i(t) = ‖∇_W w_i(t) L_i(t)‖₂,          Ḡ(t) = mean_i G_i(t)
    L̃_i(t) = L_i(t) / L_i(0),               r_i(t) = L̃_i(t) / mean_j L̃_j(t)
    L_grad(t) = Σ_i | G_i(t) − Ḡ(t) · r_i(t)^α |

The target ``Ḡ · r_i^α`` is held constant, and ``L_grad`` is differentiated with respect to the
weights only (``∇_W w_i L_i = w_i ∇_W L_i``, so ``∂L_grad/∂w_i = sign(G_i − target_i)·‖∇_W L_i‖``).
The weights take one step of their own optimiser and are then renormalised so that
``Σ_i w_i = T``. A task whose gradient is large for its progress is down-weighted; a task that
trains slowly (large ``r_i``) is up-weighted, more strongly for larger ``α``.

Chapter 12.4.1 of the book (loss balancing) explains it and compares it with the other strategies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ._grads import global_task_gradients, shared_and_specific
from .base import Weighting

__all__ = ["GradNorm"]


class GradNorm(Weighting):
    """GradNorm task weights, learned by their own optimiser and renormalised to sum to ``T``.

    **The last shared layer.** ``layer=None`` picks the last weight tensor (at least 2-D and not
    a bias) of ``model.shared_parameters()``, which lists exactly the parameters every task
    reaches, from the input towards the towers (the tests check both for every model with an
    autograd probe, :mod:`mtlbook.models.reach`). That is SharedBottom's last bottom layer, the
    experts' last layer for MMoE, OMoE and DSelectK, the top level's shared experts for CGC/PLE,
    the last column layer for CrossStitch and Sluice, the output layer of pCTR's tower for ESMM
    and of the first step's tower for AITM when the funnel's steps are the model's only tasks,
    and the embedding table when it is all a model shares. ``layer`` may instead name
    parameters (``"bottom.weights.0"``, as in ``model.named_parameters()``), give them
    directly, or be ``"all"`` for every shared parameter (the gradient norm over the whole shared
    part, as LibMTL does; slower). Every chosen tensor must be a shared parameter.

    **Updates.** The model gets the ordinary gradient of ``Σ_i w_i L_i + extra`` (``extra`` the
    model's regulariser, unweighted). The weights are not in :func:`mtlbook.fit`'s optimiser
    (:meth:`parameters` is empty): :meth:`backward` steps them with their own Adam (learning
    rate ``lr``) and renormalises them. The paper leaves their positivity implicit; a step that
    would push a weight below ``min_weight`` is clipped there before the renormalisation.
    ``L_i(0)`` is the loss of the first step after :meth:`setup`.

    **Tasks without a gradient.** In a step where some task's gradient on the layer is exactly
    zero (a masked task with no labelled row in the batch), the model trains with the current
    weights and the weights are not updated: ``G_i = 0`` says nothing about the task's
    balance. ``L_i(0)`` are the losses of the first step in which every task takes part.

    :attr:`weights` are the ``w_i`` the latest step applied to the losses (all 1 before the
    first step); they are positive and sum to ``T``. The updated weights, the ones the next step
    applies, are in :attr:`next_weights`.

    Args:
        alpha: the asymmetry ``α`` (the paper's default 1.5; 0 asks for equal gradient norms).
        lr: learning rate of the weights' Adam (0.025, as in common implementations).
        layer: the last shared layer: ``None`` (automatic, see above), ``"all"``, a parameter
            name, or a sequence of names or parameters.
        min_weight: the smallest weight allowed before the renormalisation.

    Raises:
        ValueError: in :meth:`setup`, for a model without shared parameters or a ``layer``
            that is not among them.
    """

    #: The weights, their optimiser, the initial losses L_i(0) and the applied weights.
    state_attributes = ("_w", "_optimizer", "_initial", "_applied")

    def __init__(
        self,
        alpha: float = 1.5,
        lr: float = 0.025,
        layer: str | Sequence[str | nn.Parameter] | None = None,
        min_weight: float = 1e-3,
    ) -> None:
        if not alpha >= 0:
            raise ValueError(f"GradNorm: alpha must be ≥ 0, got {alpha!r}")
        if not lr > 0:
            raise ValueError(f"GradNorm: lr must be positive, got {lr!r}")
        if not 0 < min_weight < 1:
            raise ValueError(f"GradNorm: min_weight must be in (0, 1), got {min_weight!r}")
        self.alpha = float(alpha)
        self.lr = float(lr)
        self.layer = layer
        self.min_weight = float(min_weight)

    def setup(self, task_names: Sequence[str], model: nn.Module) -> None:
        super().setup(task_names, model)
        shared, _ = shared_and_specific(model, "GradNorm")
        self.layer_names, self._layer = _resolve_layer(self.layer, model, shared)
        device = shared[0].device
        self._w = nn.Parameter(torch.ones(len(self.task_names), device=device))  # [T]
        self._optimizer = torch.optim.Adam([self._w], lr=self.lr)
        self._initial: torch.Tensor | None = None  # L_i(0), [T]
        self._applied = self._w.detach().clone()

    def backward(
        self,
        losses: Mapping[str, torch.Tensor],
        model: nn.Module,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        values = torch.stack(list(losses.values()))  # [T]
        # ‖∇_W L_i‖ of the global batch (averaged over the processes of a distributed fit).
        norms = global_task_gradients(list(values), self._layer).norm(dim=1)  # [T]
        w = self._w.detach().clone()
        self._applied = w
        total = (w * values).sum()
        if extra is not None:
            total = total + extra
        total.backward()

        if not bool((norms > 0).all()):
            return total.detach()  # a task sat the step out: no update of the weights
        loss = values.detach()
        if self._initial is None:
            self._initial = loss.clamp_min(torch.finfo(loss.dtype).tiny)
        ratio = loss / self._initial  # L̃_i, [T]
        rate = ratio / ratio.mean()  # r_i, [T]
        grad_norms = self._w * norms  # G_i, [T], differentiable in w only
        target = (grad_norms.mean() * rate.pow(self.alpha)).detach()  # [T], held constant
        grad_loss = (grad_norms - target).abs().sum()
        self._optimizer.zero_grad(set_to_none=True)
        self._w.grad = torch.autograd.grad(grad_loss, self._w)[0]
        self._optimizer.step()
        with torch.no_grad():
            self._w.clamp_(min=self.min_weight)
            self._w.mul_(len(self._w) / self._w.sum())
        return total.detach()

    @property
    def weights(self) -> dict[str, float]:
        return dict(zip(self.task_names, self._applied.cpu().tolist(), strict=True))

    @property
    def next_weights(self) -> dict[str, float]:
        """The weights after the latest update (the ones the next step applies)."""
        return dict(zip(self.task_names, self._w.detach().cpu().tolist(), strict=True))


def _is_bias(name: str) -> bool:
    return any(part.startswith("bias") for part in name.split("."))


def _resolve_layer(
    layer, model: nn.Module, shared: list[nn.Parameter]
) -> tuple[list[str], list[nn.Parameter]]:
    """Names and tensors of the layer GradNorm measures the gradients on."""
    names = {id(p): n for n, p in model.named_parameters()}
    shared_ids = {id(p) for p in shared}
    if layer is None:
        weights = [p for p in shared if p.dim() >= 2 and not _is_bias(names.get(id(p), ""))]
        chosen = [(weights or shared)[-1]]
    elif isinstance(layer, str) and layer == "all":
        chosen = list(shared)
    else:
        items = [layer] if isinstance(layer, str | nn.Parameter) else list(layer)
        by_name = dict(model.named_parameters())
        chosen = []
        for item in items:
            if isinstance(item, str):
                if item not in by_name:
                    raise ValueError(
                        f"GradNorm: {type(model).__name__} has no parameter "
                        f"{item!r}; its shared parameters are "
                        f"{[names.get(id(p), '?') for p in shared]}"
                    )
                item = by_name[item]
            if id(item) not in shared_ids:
                raise ValueError(
                    f"GradNorm: layer {names.get(id(item), 'given')!r} is not a shared "
                    f"parameter of {type(model).__name__}; GradNorm compares the tasks' "
                    f"gradients on a shared layer: one of "
                    f"{[names.get(id(p), '?') for p in shared]}"
                )
            chosen.append(item)
        if not chosen:
            raise ValueError("GradNorm: layer names no parameter")
    return [names.get(id(p), "?") for p in chosen], chosen
