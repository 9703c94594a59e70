"""Building blocks of the mixture-of-experts family: stacked experts, gates, and the mixture.

The models of chapters 12.3.3 and 12.3.4 of the book (:class:`~mtlbook.models.OMoE`,
:class:`~mtlbook.models.MMoE`, :class:`~mtlbook.models.CGC`, :class:`~mtlbook.models.PLE` and
:class:`~mtlbook.models.DSelectK`) all compute, for every gate ``g`` and sample ``x``,

    f_g(x) = Σ_i w_g(x)_i · E_i(x),

a gated mixture of the outputs of ``n`` experts ``E_i`` (Jacobs et al., *Neural Computation*
1991; Ma et al., KDD 2018). They differ in which experts a gate may choose from and in how the
weights ``w_g`` are made. The pieces here keep that computation free of Python loops:

* :class:`StackedExperts` — the experts as one stacked weight tensor per layer, evaluated by
  one batched matrix multiply per layer;
* :class:`SoftmaxGates` — any number of softmax gates as one linear layer, each gate restricted
  to its own subset of the experts by a mask applied before the softmax;
* :func:`mix` — the weighted sums of all gates at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn

from .layers import ParallelMLP

__all__ = ["SoftmaxGates", "StackedExperts", "mix"]


class StackedExperts(nn.Module):
    """``len(names)`` expert MLPs of identical shape: one stacked ``[experts, in, out]`` weight
    tensor and one batched matrix multiply (``baddbmm``) per layer.

    Every layer, the last one included, is followed by ReLU (and dropout), as the experts of
    the MMoE and PLE papers are. The input is ``[batch, in_dim]`` (every expert reads it, as a
    stride-0 view: no copy) or ``[n_sources, batch, in_dim]``, several representations of
    which expert ``i`` reads number ``sources[i]`` (PLE above its first level: a task's
    experts read that task's output of the level below, the shared experts the shared
    output). The output is ``[n_experts, batch, units[-1]]``.

    The parameters may be split into consecutive groups of experts (``groups``), each a
    :class:`~mtlbook.models.ParallelMLP` holding ``[group size, in, out]`` weights per layer, so
    that a model can name, for example, its shared experts' parameters apart from its task
    experts' (:meth:`~mtlbook.models.MultiTaskModel.shared_parameters`). The forward pass
    concatenates the groups' weights into one ``[n_experts, in, out]`` tensor per layer, a copy
    of the weights that is small next to the activations, and multiplies once.

    Args:
        in_dim: input size.
        units: layer sizes of each expert, e.g. ``(256, 128)``.
        names: one name per expert, ``"shared/0"`` or ``"click/1"``: the part before ``/`` is
            ``"shared"`` or the task the expert belongs to.
        sources: for a 3-D input, the index of the representation each expert reads.
        groups: sizes of the consecutive parameter groups (default: one group of all experts).
        dropout: dropout probability after each activation.

    Attributes:
        single_gemm: multiply a 2-D input by the first layer of every expert as one ``[batch,
            in] @ [in, experts × out]`` GEMM instead of expanding it to every expert. Off by
            default; :func:`~mtlbook.training.population.fit_population` turns it on, because under
            ``torch.vmap`` the expanded input would be copied once per expert and member.
    """

    single_gemm: bool = False
    sources: torch.Tensor | None  # buffer

    def __init__(
        self,
        in_dim: int,
        units: Sequence[int],
        names: Sequence[str],
        sources: Sequence[int] | None = None,
        groups: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.names = tuple(names)
        n_experts = len(self.names)
        groups = (n_experts,) if groups is None else tuple(int(g) for g in groups if g)
        if n_experts < 1 or sum(groups) != n_experts:
            raise ValueError(
                f"the expert groups {groups} do not add up to the {n_experts} experts named"
            )
        if sources is not None and len(sources) != n_experts:
            raise ValueError(
                f"need one source per expert, got {len(sources)} sources for {n_experts} experts"
            )
        self.groups = nn.ModuleList(
            ParallelMLP(size, in_dim, units, dropout=dropout, final_activation=True)
            for size in groups
        )
        self.in_dim, self.units = in_dim, cast(ParallelMLP, self.groups[0]).units
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        source = None if sources is None else torch.tensor(list(sources), dtype=torch.long)
        self.register_buffer("sources", source, persistent=False)

    @property
    def n_experts(self) -> int:
        return len(self.names)

    @property
    def out_dim(self) -> int:
        return self.units[-1]

    def stacked(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the ``[experts, in, out]`` weight and ``[experts, 1, out]`` bias."""
        groups = cast("Iterable[ParallelMLP]", self.groups)
        layers = zip(*(zip(g.weights, g.biases, strict=True) for g in groups), strict=True)
        if len(self.groups) == 1:
            return [pairs[0] for pairs in layers]
        return [
            (torch.cat([w for w, _ in pairs]), torch.cat([b for _, b in pairs])) for pairs in layers
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self.stacked()
        if x.dim() == 3:
            if self.sources is None:
                raise ValueError(
                    "a 3-D input needs the experts' sources (StackedExperts(..., sources=[...]))"
                )
            x = x.index_select(0, self.sources)  # [experts, batch, in]
        elif self.single_gemm:
            w, b = layers.pop(0)
            n, d_in, d_out = w.shape
            flat = torch.addmm(
                b.reshape(1, n * d_out), x, w.permute(1, 0, 2).reshape(d_in, n * d_out)
            )  # [batch, n * out]
            x = self.dropout(flat.relu_()).view(-1, n, d_out).transpose(0, 1)  # [n, batch, out]
        else:
            # Every expert reads the same input: a stride-0 view, no copy. Keeping every layer
            # in the [experts, batch, units] layout keeps the activations and their gradients
            # contiguous (one [batch, in] @ [in, experts * out] GEMM, as ParallelMLP does for a
            # 2-D input, leaves the first layer's output transposed, which measurably slows the
            # ReLU and every op of the backward pass below it).
            x = x.expand(self.n_experts, -1, -1)  # [experts, batch, in]
        for w, b in layers:
            x = self.dropout(torch.relu_(torch.baddbmm(b, x, w)))  # [experts, batch, out]
        return x  # [experts, batch, units]

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, in_dim={self.in_dim}, units={self.units}"


class SoftmaxGates(nn.Module):
    """Several softmax gates as one linear layer; gate ``g`` chooses among ``allowed[g]`` only.

    Gate ``g`` computes ``w_g(x) = softmax(W_g x + b_g)`` over the experts it may choose from,
    with zero weight on every other expert. All gates' logits come from one matrix multiply:
    the parameters are stored compactly (one column per allowed gate-expert pair, so
    :meth:`~mtlbook.models.MultiTaskModel.n_parameters` counts only parameters that are used),
    scattered into a ``[in_dim, gates × experts]`` matrix, and the logits of the experts a gate
    may not use are set to ``-inf`` before the softmax. When every gate may use every expert
    (MMoE), the scatter and the mask are skipped.

    Input ``[batch, in_dim]`` (every gate reads it: one GEMM) or ``[gates, batch, in_dim]``
    (gate ``g`` reads row ``g``: one batched GEMM); output ``[batch, gates, experts]`` with
    rows summing to 1.

    Args:
        in_dim: input size.
        allowed: ``[gates, experts]`` boolean mask; every gate needs at least one expert.
    """

    # Buffers (see __init__).
    allowed: torch.Tensor
    columns: torch.Tensor
    blocked: torch.Tensor

    def __init__(self, in_dim: int, allowed: torch.Tensor) -> None:
        super().__init__()
        allowed = torch.as_tensor(allowed, dtype=torch.bool)
        if allowed.dim() != 2 or in_dim < 1 or not allowed.any(dim=1).all():
            raise ValueError(
                f"invalid SoftmaxGates: in_dim={in_dim}, allowed of shape "
                f"{tuple(allowed.shape)} (every gate needs at least one expert)"
            )
        self.in_dim = in_dim
        self.n_gates, self.n_experts = allowed.shape
        n_pairs = int(allowed.sum())
        self.weight = nn.Parameter(torch.empty(in_dim, n_pairs))
        self.bias = nn.Parameter(torch.empty(n_pairs))
        self.register_buffer("allowed", allowed.clone(), persistent=False)
        self.dense = bool(allowed.all())
        # Position of each stored column in the flattened [gates * experts] logits.
        self.register_buffer("columns", allowed.flatten().nonzero().squeeze(1), persistent=False)
        self.register_buffer("blocked", ~allowed.unsqueeze(0), persistent=False)  # [1, g, e]
        self.counts = tuple(int(c) for c in allowed.sum(dim=1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's scheme: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = 1.0 / math.sqrt(self.in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[batch, gates, experts]`` logits; ``-inf`` where a gate may not use an expert."""
        n_out = self.n_gates * self.n_experts
        weight: torch.Tensor = self.weight
        bias: torch.Tensor = self.bias
        if not self.dense:  # scatter the stored columns into the full matrix (zeros elsewhere)
            weight = weight.new_zeros(self.in_dim, n_out).index_copy(1, self.columns, weight)
            bias = bias.new_zeros(n_out).index_copy(0, self.columns, bias)
        if x.dim() == 2:
            out = torch.addmm(bias, x, weight).view(-1, self.n_gates, self.n_experts)
        else:  # gate g reads x[g]: [gates, batch, in] @ [gates, in, experts]
            w = weight.view(self.in_dim, self.n_gates, self.n_experts).transpose(0, 1)
            b = bias.view(self.n_gates, 1, self.n_experts)
            out = torch.baddbmm(b, x, w).transpose(0, 1)  # [batch, gates, experts]
        if not self.dense:
            out = out.masked_fill(self.blocked, float("-inf"))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FewSoftmax.apply(self.logits(x))  # [batch, gates, experts]

    def experts_of(self, gate: int) -> list[int]:
        """Indices of the experts gate ``gate`` may choose from."""
        return self.allowed[gate].nonzero().squeeze(1).tolist()

    def per_gate(self, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each gate's detached ``[batch, n_g]`` weights over the ``n_g`` experts it may use
        (in the order of :meth:`experts_of`), from the ``[batch, gates, experts]`` output."""
        weights = weights.detach()
        if self.dense:
            return weights.unbind(1)
        return weights.flatten(1).index_select(1, self.columns).split(self.counts, dim=1)

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, gates={self.n_gates}, experts={self.n_experts}, "
            f"pairs={self.weight.shape[1]}"
        )


class _FewSoftmax(torch.autograd.Function):
    """``softmax`` over a last dimension of a few entries (a gate's experts): the same values
    as :func:`torch.softmax`, in a few whole-tensor passes. On the CPU, torch's softmax kernel
    walks such short rows one by one and takes several times as long (about 5× for rows of 8);
    a vectorised population of models has many of them. Under ``torch.vmap`` (a population)
    :meth:`vmap` applies it once to all members: the rule torch would generate costs more
    Python per call than the arithmetic it wraps."""

    @staticmethod
    def forward(logits: torch.Tensor) -> torch.Tensor:
        e = (logits - logits.amax(-1, keepdim=True)).exp_()
        return e.div_(e.sum(-1, keepdim=True))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return y * (grad - (grad * y).sum(-1, keepdim=True))  # the softmax's Jacobian-vector

    @staticmethod
    def vmap(info, in_dims, logits: torch.Tensor):
        # Rows along the last dimension are independent: the members are more leading rows.
        (dim,) = in_dims
        if logits.dim() > 0 and dim in (-1, logits.dim() - 1):  # members along the softmax axis
            logits, dim = logits.movedim(dim, 0), 0
        return _FewSoftmax.apply(logits), dim


class _BatchedMix(torch.autograd.Function):
    """``out[:, b] = w[b] @ h[:, b]`` for ``w [batch, gates, experts]`` and ``h [experts, batch,
    units]``, returning ``[gates, batch, units]``; the core of :func:`mix`.

    A batched matrix product over the samples, with a hand-written backward so that every
    operand ``bmm`` sees is a batch of row-major matrices and every tensor handed back to
    autograd (the output, the gradient of ``h``) is contiguous in the ``[·, batch, units]``
    layout the experts and towers use. Autograd's own backward of ``bmm`` would pass
    column-major views, which the CPU kernel, for thousands of tiny matrices, multiplies one at
    a time, and a transposed gradient slows every elementwise op below it. Only ``[batch,
    gates, ·]`` tensors and the gradient of ``h`` are copied into a new layout.

    Under ``torch.vmap`` (a population of models, :mod:`mtlbook.training.population`) :meth:`vmap`
    runs
    :class:`_MembersMix` once for all members.
    """

    @staticmethod
    def forward(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # h.transpose(0, 1) is a valid strided batch of row-major [experts, units] matrices
        # (leading dimension batch * units): bmm reads it in place, no copy.
        out = torch.bmm(w.contiguous(), h.transpose(0, 1))  # [batch, gates, units]
        return out.transpose(0, 1).contiguous()  # [gates, batch, units]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        w, h = inputs
        ctx.save_for_backward(w.contiguous(), h)  # w: [batch, gates, experts]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, h = ctx.saved_tensors
        grad = grad.transpose(0, 1).contiguous()  # [batch, gates, units]
        grad_w = grad_h = None
        if ctx.needs_input_grad[0]:  # (h @ gradᵀ)ᵀ: transposes the small grad, not h
            grad_w = torch.bmm(h.transpose(0, 1), grad.transpose(1, 2).contiguous())  # [b, e, g]
            grad_w = grad_w.transpose(1, 2)  # [batch, gates, experts]
        if ctx.needs_input_grad[1]:
            grad_h = torch.bmm(w.transpose(1, 2).contiguous(), grad)  # [batch, experts, units]
            grad_h = grad_h.transpose(0, 1).contiguous()  # [experts, batch, units]
        return grad_w, grad_h

    @staticmethod
    def vmap(info, in_dims, w: torch.Tensor, h: torch.Tensor):
        n = info.batch_size  # members of the population
        w = w.movedim(in_dims[0], 0) if in_dims[0] is not None else w.expand(n, *w.shape)
        h = h.movedim(in_dims[1], 0) if in_dims[1] is not None else h.expand(n, *h.shape)
        return _MembersMix.apply(w, h), 0  # [members, gates, batch, units]


class _MembersMix(torch.autograd.Function):
    """:class:`_BatchedMix` for a population of models: ``out[m, g, b] = Σ_i w[m, b, g, i] ·
    h[m, i, b]`` for ``w [members, batch, gates, experts]`` and ``h [members, experts, batch,
    units]``, returning ``[members, gates, batch, units]``.

    It works in the sample-major layout ``[members, batch, ·, units]`` in which one GEMM leaves
    the experts (:attr:`StackedExperts.single_gemm`), so ``h`` is read in place and its
    gradient returns in the same layout. With members × batch tiny matrices, ``bmm`` spends its
    time per matrix; only the gradient of ``w`` is faster as one, the mixture and the gradient
    of ``h`` are elementwise products summed over the experts or gates (a loop over gates).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h = h.transpose(1, 2)  # [members, batch, experts, units]
        w = w.permute(2, 0, 1, 3).unsqueeze(-1).contiguous()  # [gates, members, batch, e, 1]
        out = torch.stack([(w_g * h).sum(2) for w_g in w])  # [gates, members, batch, units]
        return out.transpose(0, 1)  # [members, gates, batch, units]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        w, h = ctx.saved_tensors
        n_members, n_batch, n_gates, n_experts = w.shape
        h, grad = h.transpose(1, 2), grad.transpose(1, 2)  # [members, batch, ·, units]
        grad_w = grad_h = None
        if ctx.needs_input_grad[0]:  # grad @ hᵀ per sample: [gates, units] @ [units, experts]
            samples = n_members * n_batch
            grad_w = torch.bmm(
                grad.reshape(samples, n_gates, -1),
                h.reshape(samples, n_experts, -1).transpose(1, 2),
            )
            grad_w = grad_w.view(n_members, n_batch, n_gates, n_experts)
        if ctx.needs_input_grad[1]:  # Σ over gates of w · grad
            w = w.permute(2, 0, 1, 3).unsqueeze(-1).contiguous()  # [gates, members, batch, e, 1]
            grad_h = w[0] * grad[:, :, 0, None]  # [members, batch, experts, units]
            for g in range(1, n_gates):
                grad_h.addcmul_(w[g], grad[:, :, g, None])
            grad_h = grad_h.transpose(1, 2)  # [members, experts, batch, units]
        return grad_w, grad_h


def mix(weights: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Every gate's mixture ``f_g = Σ_i w_{g,i} · E_i`` at once.

    Args:
        weights: ``[batch, gates, experts]`` gate weights.
        experts: ``[experts, batch, units]`` expert outputs (as :class:`StackedExperts` returns).

    Returns:
        ``[gates, batch, units]``, contiguous.
    """
    return _BatchedMix.apply(weights, experts)  # [gates, batch, units]
