"""The mixture-of-experts family: OMoE, MMoE, CGC, PLE and DSelect-k.

Beyond the common contract (tests/test_models.py): the gates are what the papers say they are
(checked against a loop-by-loop reference built from the same parameters), they are recorded,
and experts and gates are batched ops whose number does not grow with the number of experts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mtlbook.models import CGC, PLE, DSelectK, MMoE, OMoE, SharedBottom
from mtlbook.models.dselect_k import DSelectKGates, smooth_step
from mtlbook.models.experts import SoftmaxGates, StackedExperts, mix

MOE = [OMoE, MMoE, CGC, PLE, DSelectK]


def _batch(data, n: int = 256):
    return next(iter(data.loader(batch_size=n, shuffle=False)))


def _relu_mlp(h, layers, i, final_relu=True):
    """Network ``i`` of stacked ``(weight [P, in, out], bias [P, 1, out])`` layers, one by one."""
    for j, (w, b) in enumerate(layers):
        h = h @ w[i] + b[i, 0]
        if final_relu or j < len(layers) - 1:
            h = torch.relu(h)
    return h


def _towers(model, fused):
    layers = list(zip(model.towers.weights, model.towers.biases, strict=True))
    return {
        t: _relu_mlp(fused[k], layers, k, final_relu=False).squeeze(-1)
        for k, t in enumerate(model.task_names)
    }


def _softmax_gate(gates: SoftmaxGates, g: int, x):
    """Gate ``g``'s weights over the experts it may use, from its own stored columns."""
    start = sum(gates.counts[:g])
    cols = slice(start, start + gates.counts[g])
    return torch.softmax(x @ gates.weight[:, cols] + gates.bias[cols], dim=-1)


def _reference_ple(model: PLE, batch):
    """PLE written as in the paper: a loop over levels, experts and gates."""
    x = model.input(batch)
    inputs = None  # level 0: every expert and gate reads x
    records = []
    for index, level in enumerate(model.levels):
        layers = level.experts.stacked()
        sources = level.experts.sources.tolist()
        outs = [
            _relu_mlp(x if inputs is None else inputs[sources[i]], layers, i)
            for i in range(level.experts.n_experts)
        ]
        fused = []
        gates = [(level.gates, g) for g in range(level.gates.n_gates)]
        gates += [(level.shared_gate, 0)] if level.shared_gate is not None else []
        for g, (module, row) in enumerate(gates):
            weights = _softmax_gate(module, row, x if inputs is None else inputs[g])
            chosen = module.experts_of(row)
            fused.append(sum(weights[:, j : j + 1] * outs[i] for j, i in enumerate(chosen)))
            records.append(
                (index, level.gate_names[g], tuple(level.experts.names[i] for i in chosen), weights)
            )
        inputs = fused
    return _towers(model, inputs), records


# ---------------------------------------------------------------------------- gate records
@pytest.mark.parametrize("model_cls", MOE)
@pytest.mark.parametrize("data_name", ["funnel_small", "correlated_small"])
def test_gate_records_are_distributions(request, model_cls, data_name):
    data = request.getfixturevalue(data_name)
    model = model_cls(data.schema)
    model(_batch(data, 64))
    records = model.gate_records()
    assert records
    for r in records:
        assert r.weights.shape == (64, len(r.experts))
        assert not r.weights.requires_grad
        assert (r.weights >= 0).all()
        torch.testing.assert_close(r.weights.sum(1), torch.ones(64))
        for name in r.experts:
            owner, number = name.split("/")
            assert owner in ("shared", *data.task_names) and number.isdigit()
    model(_batch(data, 8))  # a new forward pass replaces the records
    assert all(r.weights.shape[0] == 8 for r in model.gate_records())
    assert len(model.gate_records()) == len(records)


@pytest.mark.parametrize("model_cls", [MMoE, DSelectK])
def test_per_task_gates_over_all_experts(model_cls, funnel_small):
    model = model_cls(funnel_small.schema, n_experts=4)
    model(_batch(funnel_small, 32))
    records = model.gate_records()
    assert [r.gate for r in records] == list(funnel_small.task_names)
    assert {r.level for r in records} == {0}
    assert all(r.experts == ("shared/0", "shared/1", "shared/2", "shared/3") for r in records)


def test_omoe_has_one_gate_shared_by_all_tasks(funnel_small):
    model = OMoE(funnel_small.schema, n_experts=3)
    seen = {}
    model.towers.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    model(_batch(funnel_small, 32))
    [record] = model.gate_records()
    assert (record.level, record.gate) == (0, "shared")
    assert record.experts == ("shared/0", "shared/1", "shared/2")
    tower_input = seen["x"]  # [tasks, batch, units]: every task reads the same mixture
    assert tower_input.shape[0] == 3
    for k in range(1, 3):
        assert torch.equal(tower_input[k], tower_input[0])


# ---------------------------------------------------------------------------- MMoE
def test_mmoe_equals_a_loop_over_experts_and_gates(funnel_small):
    model = MMoE(funnel_small.schema, n_experts=3, expert_units=(12, 6), tower_units=(5,))
    batch = _batch(funnel_small, 64)
    out = model(batch)
    x = model.input(batch)
    layers = model.experts.stacked()
    experts = [_relu_mlp(x, layers, i) for i in range(3)]
    fused = []
    for k, record in enumerate(model.gate_records()):
        weights = _softmax_gate(model.gates, k, x)
        torch.testing.assert_close(record.weights, weights.detach())
        fused.append(sum(weights[:, i : i + 1] * experts[i] for i in range(3)))
    for task, value in _towers(model, fused).items():
        torch.testing.assert_close(out[task], value)


def test_mmoe_with_one_expert_is_shared_bottom(funnel_small):
    schema = funnel_small.schema
    bottom = SharedBottom(schema, bottom_units=(16,), tower_units=(8,), seed=0)
    mmoe = MMoE(schema, n_experts=1, expert_units=(16,), tower_units=(8,), seed=1)
    n_gate = (mmoe.input.output_dim + 1) * len(schema.tasks)  # one gate per task
    assert mmoe.n_parameters() == bottom.n_parameters() + n_gate
    with torch.no_grad():
        mmoe.input.embedding.weight.copy_(bottom.input.embedding.weight)
        for mine, theirs in ((mmoe.experts.groups[0], bottom.bottom), (mmoe.towers, bottom.towers)):
            for p, q in zip(mine.parameters(), theirs.parameters(), strict=True):
                p.copy_(q)
    batch = _batch(funnel_small)
    seen = {}
    mmoe.towers.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    out = mmoe(batch)
    for record in mmoe.gate_records():  # a softmax over one expert is exactly 1
        assert torch.equal(record.weights, torch.ones(len(batch), 1))
    h = bottom.representation(batch)
    for k in range(len(schema.tasks)):  # so each task's mixture is the bottom, bit for bit
        assert torch.equal(seen["x"][k], h)
    expected = bottom(batch)
    for task in schema.task_names:
        torch.testing.assert_close(out[task], expected[task], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------- CGC and PLE
@pytest.mark.parametrize(
    ("n_levels", "n_shared", "n_task"), [(1, 2, 1), (2, 2, 1), (3, 1, 2), (2, 3, 0)]
)
def test_ple_equals_the_papers_loops(funnel_small, n_levels, n_shared, n_task):
    model = PLE(
        funnel_small.schema,
        n_levels=n_levels,
        n_shared_experts=n_shared,
        n_task_experts=n_task,
        expert_units=(10, 6),
        tower_units=(4,),
        seed=3,
    )
    batch = _batch(funnel_small, 64)
    out = model(batch)
    expected, records = _reference_ple(model, batch)
    for task in funnel_small.task_names:
        torch.testing.assert_close(out[task], expected[task])
    got = model.gate_records()
    assert [(r.level, r.gate, r.experts) for r in got] == [r[:3] for r in records]
    for mine, ref in zip(got, records, strict=True):
        torch.testing.assert_close(mine.weights, ref[3].detach())


def test_ple_levels_and_gates(funnel_small):
    tasks = funnel_small.task_names  # click, purchase, dwell_time
    model = PLE(funnel_small.schema, n_levels=3, n_shared_experts=2, n_task_experts=1)
    assert model.n_levels == 3
    model(_batch(funnel_small, 16))
    records = model.gate_records()
    assert sorted({r.level for r in records}) == [0, 1, 2]
    every_expert = (*(f"{t}/0" for t in tasks), "shared/0", "shared/1")
    for level in range(3):
        gates = {r.gate: r.experts for r in records if r.level == level}
        for task in tasks:  # a task's gate: its own experts and the shared ones
            assert gates[task] == (f"{task}/0", "shared/0", "shared/1")
        if level < 2:  # the shared gate spans every expert of the level
            assert gates["shared"] == every_expert
        else:  # the top level has no shared gate
            assert "shared" not in gates
    assert [len(level.experts.names) for level in model.levels] == [5, 5, 5]


def test_cgc_is_one_level_ple(funnel_small):
    kwargs = dict(n_shared_experts=2, n_task_experts=2, expert_units=(8,), tower_units=(4,))
    cgc = CGC(funnel_small.schema, seed=4, **kwargs)
    ple = PLE(funnel_small.schema, n_levels=1, seed=4, **kwargs)
    assert isinstance(cgc, PLE) and cgc.n_levels == 1
    assert [(n, p.shape) for n, p in cgc.named_parameters()] == [
        (n, p.shape) for n, p in ple.named_parameters()
    ]
    batch = _batch(funnel_small, 32)
    a, b = cgc(batch), ple(batch)
    assert all(torch.equal(a[t], b[t]) for t in funnel_small.task_names)
    assert [(r.level, r.gate, r.experts) for r in cgc.gate_records()] == [
        (r.level, r.gate, r.experts) for r in ple.gate_records()
    ]
    assert "shared" not in {r.gate for r in cgc.gate_records()}


def _task_expert_weights(level, task_index: int, n_task: int):
    """The first-layer weights of one task's experts (a view into the task-expert group)."""
    return level.experts.groups[0].weights[0][task_index * n_task : (task_index + 1) * n_task]


def test_higher_levels_read_the_fused_outputs(correlated_small):
    """Task 2's experts reach task 1 only through the shared gate and the next level."""
    batch = _batch(correlated_small, 64)
    for n_levels in (1, 2):
        model = PLE(
            correlated_small.schema, n_levels=n_levels, n_shared_experts=2, n_task_experts=1, seed=0
        )
        before = model(batch)["task1"].detach().clone()
        records = {(r.level, r.gate): r.weights for r in model.gate_records()}
        with torch.no_grad():
            _task_expert_weights(model.levels[0], 1, 1).mul_(3.0)  # task2's level-0 expert
        after = model(batch)["task1"]
        changed = {
            (r.level, r.gate)
            for r in model.gate_records()
            if not torch.equal(r.weights, records[(r.level, r.gate)])
        }
        if n_levels == 1:  # CGC: task1 never sees task2's experts
            assert changed == set()
            assert torch.equal(after, before)
        else:
            # Only task2's level-1 gate moves (it reads task2's fused output); task1's gates
            # read x and task1's fused output, which task2's experts do not enter. Yet task1's
            # prediction changes: the level-0 shared gate mixes task2's expert into the shared
            # output, which level 1's shared experts read and task1's level-1 gate mixes.
            assert changed == {(1, "task2")}
            assert not torch.allclose(after, before)


def test_level_one_task_gate_reads_its_tasks_fused_output(funnel_small):
    model = PLE(funnel_small.schema, n_levels=2, n_shared_experts=1, n_task_experts=1)
    seen = {}
    model.levels[1].register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    model.levels[0].register_forward_hook(lambda m, args, out: seen.update(fused=out[0]))
    model(_batch(funnel_small, 16))
    fused = seen["fused"]  # [tasks + 1, batch, units]: click, purchase, dwell_time, shared
    assert fused.shape[0] == len(funnel_small.task_names) + 1
    assert torch.equal(seen["x"], fused)
    level = model.levels[1]
    for g, record in enumerate(r for r in model.gate_records() if r.level == 1):
        expected = _softmax_gate(level.gates, g, fused[g])
        torch.testing.assert_close(record.weights, expected.detach())


def test_shared_parameters(funnel_small):
    batch = _batch(funnel_small, 256)
    model = CGC(funnel_small.schema, n_shared_experts=2, n_task_experts=1, seed=0)
    shared = {id(p) for p in model.shared_parameters()}
    level = model.levels[0]
    assert {id(p) for p in level.experts.groups[1].parameters()} <= shared  # shared experts
    assert not {id(p) for p in level.experts.groups[0].parameters()} & shared  # task experts
    assert not {id(p) for p in level.gates.parameters()} & shared  # per-task gates
    losses = model.task_losses(model(batch), batch)
    for loss in losses.values():  # every task's loss depends on every shared parameter
        grads = torch.autograd.grad(
            loss, model.shared_parameters(), retain_graph=True, allow_unused=True
        )
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    for model in (
        PLE(funnel_small.schema, n_levels=3),
        MMoE(funnel_small.schema),
        OMoE(funnel_small.schema),
        DSelectK(funnel_small.schema),
    ):
        losses = model.task_losses(model(batch), batch)
        for loss in losses.values():
            grads = torch.autograd.grad(
                loss, model.shared_parameters(), retain_graph=True, allow_unused=True
            )
            assert all(g is not None and g.abs().sum() > 0 for g in grads), type(model)
    mmoe = MMoE(funnel_small.schema)
    assert {id(p) for p in mmoe.shared_parameters()} == {
        id(p) for p in (*mmoe.input.parameters(), *mmoe.experts.parameters())
    }


# ---------------------------------------------------------------------------- vectorisation
class _CountMatmuls(TorchDispatchMode):
    OPS = frozenset({"mm", "addmm", "bmm", "baddbmm"})

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def _matmuls(model, batch) -> int:
    with torch.no_grad(), _CountMatmuls() as counter:
        model(batch)
    return counter.count


def test_one_matmul_per_expert_layer_whatever_the_number_of_experts(funnel_small):
    batch = _batch(funnel_small, 32)
    schema = funnel_small.schema
    units, towers = (8, 6), (4,)
    # experts: one per layer; gates: one (PLE below its top level: one more, the shared gate);
    # mixture: one; towers: one per layer
    per_level = len(units) + 2
    for n in (2, 8):
        for model in (
            MMoE(schema, n_experts=n, expert_units=units, tower_units=towers),
            OMoE(schema, n_experts=n, expert_units=units, tower_units=towers),
            DSelectK(schema, n_experts=n, expert_units=units, tower_units=towers),
        ):
            assert _matmuls(model, batch) == per_level + len(towers) + 1, type(model)
            for w in model.experts.groups[0].weights:  # one stacked tensor per layer
                assert w.shape[0] == n
        for levels in (1, 3):
            model = PLE(
                schema,
                n_levels=levels,
                n_shared_experts=n,
                n_task_experts=n // 2,
                expert_units=units,
                tower_units=towers,
            )
            shared_gates = levels - 1
            assert _matmuls(model, batch) == levels * per_level + shared_gates + len(towers) + 1
            for level in model.levels:
                for w, b in level.experts.stacked():
                    assert w.shape[0] == b.shape[0] == n + 3 * (n // 2)


def test_stacked_experts_equal_separate_experts():
    torch.manual_seed(0)
    experts = StackedExperts(
        5, (4, 3), [f"e/{i}" for i in range(5)], sources=[0, 0, 1, 1, 2], groups=(2, 3)
    )
    x2, x3 = torch.randn(7, 5), torch.randn(3, 7, 5)
    layers = experts.stacked()
    out2, out3 = experts(x2), experts(x3)
    assert out2.shape == out3.shape == (5, 7, 3)
    for i, source in enumerate([0, 0, 1, 1, 2]):
        torch.testing.assert_close(out2[i], _relu_mlp(x2, layers, i))
        torch.testing.assert_close(out3[i], _relu_mlp(x3[source], layers, i))
    with pytest.raises(ValueError, match="groups"):
        StackedExperts(5, (4,), ["a/0", "a/1"], groups=(1, 2))


def test_masked_gates_count_only_allowed_parameters():
    allowed = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    gates = SoftmaxGates(4, allowed)
    assert sum(p.numel() for p in gates.parameters()) == (4 + 1) * 7
    w = gates(torch.randn(6, 4))  # [batch, gates, experts]
    assert w.shape == (6, 3, 3)
    assert (w[:, ~allowed] == 0).all() and (w[:, allowed] > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(6, 3))
    split = gates.per_gate(w)
    assert [s.shape for s in split] == [(6, 2), (6, 2), (6, 3)]
    with pytest.raises(ValueError, match="at least one expert"):
        SoftmaxGates(4, torch.tensor([[1, 0], [0, 0]], dtype=torch.bool))


def test_mix_matches_einsum_and_its_gradient():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(9, 3, 4, dtype=torch.double), -1).requires_grad_()
    h = torch.randn(4, 9, 5, dtype=torch.double, requires_grad=True)
    torch.testing.assert_close(mix(w, h), torch.einsum("bge,ebu->gbu", w, h))
    assert torch.autograd.gradcheck(mix, (w, h))


def test_gate_softmax_equals_torch_softmax_with_blocked_experts_and_under_vmap():
    from mtlbook.models.experts import _FewSoftmax

    torch.manual_seed(0)
    x = torch.randn(7, 3, 8, dtype=torch.double)
    x[:, 1, 5:] = float("-inf")  # a gate that may not use three experts
    x.requires_grad_()
    ours, ref = _FewSoftmax.apply(x), torch.softmax(x, -1)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-15)
    assert (ours[:, 1, 5:] == 0).all()
    g = torch.randn_like(ours)
    (ga,) = torch.autograd.grad(ours, x, g)
    (gb,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(ga, gb, rtol=0, atol=1e-15)
    finite = torch.randn(4, 2, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(_FewSoftmax.apply, (finite,))
    # GradNorm differentiates gradients: the backward must be differentiable too
    assert torch.autograd.gradgradcheck(_FewSoftmax.apply, (finite,))
    members = torch.randn(5, 6, 2, 4)
    torch.testing.assert_close(torch.vmap(_FewSoftmax.apply)(members), torch.softmax(members, -1))


# ---------------------------------------------------------------------------- DSelect-k
def test_smooth_step():
    gamma = 2.0
    t = torch.linspace(-3, 3, 601, dtype=torch.double, requires_grad=True)
    s = smooth_step(t, gamma)
    assert (s[t <= -1] == 0).all() and (s[t >= 1] == 1).all()
    assert ((s >= 0) & (s <= 1)).all() and (s.diff() >= 0).all()
    torch.testing.assert_close(s + smooth_step(-t, gamma), torch.ones_like(s))  # symmetric
    (grad,) = torch.autograd.grad(s.sum(), t)
    inside = t.abs() < 1
    torch.testing.assert_close(grad[inside].max(), torch.tensor(1.5 / gamma, dtype=grad.dtype))
    assert (grad[~inside] == 0).all()


@pytest.mark.parametrize("n_experts", [2, 4, 5, 8])
def test_dselect_k_selectors_are_binary_encodings(n_experts):
    gates = DSelectKGates(3, 2, n_experts, 2, gamma=1.0)
    bits = gates.n_bits
    z = torch.rand(5, bits) - 0.5
    s = smooth_step(z, 1.0)
    r = gates.select(z)
    for expert in range(n_experts):
        code = [c == "1" for c in np.binary_repr(expert, width=bits)]
        expected = torch.prod(
            torch.stack([s[:, j] if c else 1 - s[:, j] for j, c in enumerate(code)]), dim=0
        )
        torch.testing.assert_close(r[:, expert], expected)


@pytest.mark.parametrize("per_example", [True, False])
def test_dselect_k_weights(funnel_small, per_example):
    batch = _batch(funnel_small, 128)
    model = DSelectK(funnel_small.schema, n_experts=8, k=2, per_example=per_example)
    model(batch)
    for r in model.gate_records():
        torch.testing.assert_close(r.weights.sum(1), torch.ones(128))
        assert (r.weights > 0).all()  # at initialisation every selector is undecided
    odd = DSelectK(funnel_small.schema, n_experts=5, k=2, per_example=per_example)
    odd(batch)
    for r in odd.gate_records():  # codes 5..7 name no expert: the weights sum to at most 1
        assert (r.weights.sum(1) <= 1 + 1e-6).all() and (r.weights.sum(1) > 0.5).all()
    assert odd.regularization() > 0  # the reachability term


@pytest.mark.parametrize("n_experts", [4, 6])
def test_dselect_k_selects_at_most_k_once_saturated(funnel_small, n_experts):
    """Push every selector logit past ±γ/2: each selector is then one expert."""
    batch = _batch(funnel_small, 256)
    k, gamma = 2, 0.5
    model = DSelectK(funnel_small.schema, n_experts=n_experts, k=k, gamma=gamma)
    gates = model.gates
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        n_z = gates.n_z
        gates.weight[:, :n_z].zero_()
        signs = torch.randint(0, 2, (n_z,), generator=generator) * 2 - 1
        if not gates.power_of_two:  # keep the leading bit on real experts (codes < n)
            signs.view(-1, gates.n_bits)[:, 0] = -1
        gates.bias[:n_z] = signs * 3 * gamma
        gates.weight[:, n_z:].normal_(generator=generator)  # α still depends on the input
    model(batch)
    for r in model.gate_records():
        assert ((r.weights > 0).sum(1) <= k).all()
        torch.testing.assert_close(r.weights.sum(1), torch.ones(256))
    selectors = gates.selectors
    assert set(selectors.unique().tolist()) == {0.0, 1.0}  # one-hot selectors
    model.entropy_reg = 1.0
    penalty = float(model.regularization().detach())  # summed over the 256 samples
    assert abs(penalty) / 256 < 1e-4  # no entropy left, all the mass on real experts


def test_dselect_k_converges_to_k_experts_with_entropy_regularisation(correlated_small):
    """Static gates trained with the entropy penalty end up on at most k experts."""
    model = DSelectK(
        correlated_small.schema,
        n_experts=8,
        k=2,
        expert_units=(8,),
        tower_units=(4,),
        per_example=False,
        entropy_reg=0.1,
        seed=0,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    batch = _batch(correlated_small, 512)
    for _ in range(150):
        optimizer.zero_grad()
        losses = model.task_losses(model(batch), batch)
        (sum(losses.values()) + model.regularization()).backward()
        optimizer.step()
    model(batch)
    for r in model.gate_records():
        assert ((r.weights[0] > 0).sum()) <= 2
        torch.testing.assert_close(r.weights.sum(1), torch.ones(512))
    assert float(model.regularization().detach()) < 1e-3


@pytest.mark.parametrize("per_example", [True, False])
def test_dselect_k_penalty_is_the_authors_sum(per_example):
    """The penalty, written out loop by loop as the authors' code computes it: the entropy and
    the reachability term (3 experts: code 3 names none) summed over samples, gates and
    selectors (static gates have no samples)."""
    torch.manual_seed(0)
    gates = DSelectKGates(4, n_gates=2, n_experts=3, k=2, gamma=1.0, per_example=per_example)
    with torch.no_grad():  # selectors away from 0 and 1, so that both terms are sizeable
        for p in gates.parameters():
            p.uniform_(-0.1, 0.1)
    gates(torch.randn(5, 4))
    r = gates.selectors  # [5, gates, k, experts] or [gates, k, experts]
    rows = r.reshape(-1, 3).tolist()  # one selector's weights per row
    entropy = sum(-sum(v * math.log(v + 1e-6) for v in row) for row in rows)
    reach = sum(1 / sum(row) - 1 for row in rows)
    assert float(gates.penalty(0.3).detach()) == pytest.approx(0.3 * entropy + reach, rel=1e-5)
    assert float(gates.penalty(0.0).detach()) == pytest.approx(reach, rel=1e-5)
    assert len(rows) == (5 * 2 * 2 if per_example else 2 * 2)


def test_dselect_k_regularisation_switches(correlated_small):
    one = correlated_small.select_tasks(["task1"])
    schema, batch = one.schema, _batch(one, 16)
    model = DSelectK(schema, n_experts=4)
    assert model.regularization() is None  # before any forward pass
    model(batch)
    assert model.regularization() is None  # entropy_reg = 0 and 4 = 2²
    k1 = DSelectK(schema, n_experts=4, k=1, entropy_reg=0.5)
    assert k1.gates.n_alpha == 0  # one selector needs no selector weights
    k1(batch)
    penalty = k1.regularization()
    assert penalty.requires_grad and float(penalty.detach()) > 0


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (MMoE, {"n_experts": 0}, "n_experts"),
        (OMoE, {"expert_units": ()}, "expert_units"),
        (PLE, {"n_levels": 0}, "n_levels"),
        (PLE, {"n_levels": 2, "n_shared_experts": 0}, "n_shared_experts"),
        (CGC, {"n_shared_experts": 0, "n_task_experts": 0}, "needs experts"),
        (DSelectK, {"n_experts": 1}, "n_experts"),
        (DSelectK, {"n_experts": 4, "k": 5}, "k must"),
        (DSelectK, {"gamma": 0.0}, "gamma"),
        (DSelectK, {"entropy_reg": -1.0}, "entropy_reg"),
    ],
)
def test_bad_arguments(correlated_small, cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(correlated_small.schema, **kwargs)


def test_cgc_without_shared_experts_is_per_task(correlated_small):
    model = CGC(correlated_small.schema, n_shared_experts=0, n_task_experts=2)
    model(_batch(correlated_small, 8))
    assert [r.experts for r in model.gate_records()] == [
        ("task1/0", "task1/1"),
        ("task2/0", "task2/1"),
    ]
    assert model.shared_parameters() == list(model.input.parameters())
