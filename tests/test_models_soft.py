"""The soft-sharing family: SoftSharing, CrossStitch and Sluice beyond the common contract."""

from __future__ import annotations

import itertools

import pytest
import torch

import mtlbook as mb
from mtlbook.models import CrossStitch, SingleTask, Sluice, SoftSharing
from mtlbook.models.cross_stitch import MixingMatrix, convex_mixing_init
from mtlbook.models.sluice import subspace_orthogonality
from mtlbook.models.soft_sharing import pairwise_squared_distance


def _batch(data, n: int = 512):
    return next(iter(data.loader(batch_size=n, shuffle=False)))


def _fit(model, data, epochs: int = 3, lr: float = 1e-2):
    train, valid = data.split((0.8, 0.2), seed=0)
    return mb.fit(
        model,
        train,
        valid,
        epochs=epochs,
        batch_size=64,
        lr=lr,
        device="cpu",
        progress=False,
        restore_best=False,
    )


def _assert_same_outputs(a, b, batch):
    out_a, out_b = a(batch), b(batch)
    assert list(out_a) == list(out_b)
    for name in out_a:
        torch.testing.assert_close(out_a[name], out_b[name], rtol=1e-5, atol=1e-6)


def _copy_mlp_layers(dst_layers, src_layers):
    """Copy (weight, bias) pairs of ParallelMLP layers, given as flat lists in order."""
    with torch.no_grad():
        for (dw, db), (sw, sb) in zip(dst_layers, src_layers, strict=True):
            dw.copy_(sw)
            db.copy_(sb)


def _layers(*mlps):
    return [pair for mlp in mlps for pair in zip(mlp.weights, mlp.biases, strict=True)]


# ---------------------------------------------------------------------------- SoftSharing
@pytest.mark.parametrize("n_tasks", [1, 2, 3, 5])
@pytest.mark.parametrize("shape", [(4,), (3, 2), (2, 3, 4)])
def test_pairwise_identity(n_tasks, shape):
    """Σ_{a<b} ‖W_a − W_b‖² = T Σ_t ‖W_t − W̄‖²."""
    w = torch.randn(n_tasks, *shape, generator=torch.Generator().manual_seed(n_tasks))
    naive = sum(((w[a] - w[b]) ** 2).sum() for a, b in itertools.combinations(range(n_tasks), 2))
    torch.testing.assert_close(pairwise_squared_distance(w), torch.as_tensor(naive).float())


@pytest.mark.parametrize("shared_embeddings", [False, True])
def test_soft_sharing_penalty_equals_naive_pairwise_sum(funnel_small, shared_embeddings):
    model = SoftSharing(funnel_small.schema, l2_lambda=0.3, shared_embeddings=shared_embeddings)
    n_tasks = len(funnel_small.task_names)
    rows = model.input.total_categories
    table = model.input.embedding.weight

    def task_params(t):
        params = [w[t] for w in model.bottoms.weights] + [b[t] for b in model.bottoms.biases]
        if not shared_embeddings:
            params.append(table[t * rows : (t + 1) * rows])
        return params

    naive = sum(
        ((pa - pb) ** 2).sum()
        for a, b in itertools.combinations(range(n_tasks), 2)
        for pa, pb in zip(task_params(a), task_params(b), strict=True)
    )
    torch.testing.assert_close(model.regularization(), 0.3 * naive)
    assert ("embedding" in model.tied_parameters()) is not shared_embeddings
    assert model.shared_parameters() == ([table] if shared_embeddings else [])


def test_soft_sharing_lambda_zero_is_independent_networks(funnel_small):
    """λ = 0: no penalty, and task a's loss reaches only task a's embeddings, bottom and tower."""
    model = SoftSharing(funnel_small.schema, l2_lambda=0.0)
    reg = model.regularization()
    assert reg.item() == 0.0 and not reg.requires_grad
    assert model.distance() > 0
    batch, names = _batch(funnel_small), funnel_small.task_names
    rows = model.input.total_categories
    for a, task in enumerate(names):
        model.zero_grad(set_to_none=False)
        (model.task_losses(model(batch), batch)[task] + model.regularization()).backward()
        stacked = [
            *model.bottoms.weights,
            *model.bottoms.biases,
            *model.towers.weights,
            *model.towers.biases,
        ]
        blocks = [[p.grad[b] for p in stacked] for b in range(len(names))]
        for b in range(len(names)):
            blocks[b].append(model.input.embedding.weight.grad[b * rows : (b + 1) * rows])
        for b, grads in enumerate(blocks):
            touched = [bool(g.abs().sum() > 0) for g in grads]
            assert all(touched) if b == a else not any(touched), (task, names[b])


def test_soft_sharing_lambda_couples_networks(funnel_small):
    """With λ > 0 one task's loss plus the penalty moves every task's network."""
    model = SoftSharing(funnel_small.schema, l2_lambda=1e-2)
    batch = _batch(funnel_small)
    (model.task_losses(model(batch), batch)["click"] + model.regularization()).backward()
    for b in range(len(funnel_small.task_names)):
        assert model.bottoms.weights[0].grad[b].abs().sum() > 0


def test_soft_sharing_lambda_zero_equals_single_task(funnel_small):
    soft = SoftSharing(funnel_small.schema, l2_lambda=0.0, seed=3)
    single = SingleTask(funnel_small.schema, hidden_units=(64, 32), seed=4)
    single.input.load_state_dict(soft.input.state_dict())
    _copy_mlp_layers(_layers(single.networks), _layers(soft.bottoms, soft.towers))
    _assert_same_outputs(soft, single, _batch(funnel_small, 64))


def test_large_lambda_pulls_networks_together(correlated_small):
    free = SoftSharing(correlated_small.schema, l2_lambda=0.0)
    tied = SoftSharing(correlated_small.schema, l2_lambda=10.0)
    start = free.distance().item()
    assert tied.distance().item() == pytest.approx(start)
    _fit(free, correlated_small)
    _fit(tied, correlated_small)
    assert free.distance().item() > 0.5 * start
    assert tied.distance().item() < 0.02 * start


def test_soft_sharing_rejects_negative_lambda(correlated_small):
    with pytest.raises(ValueError, match="l2_lambda"):
        SoftSharing(correlated_small.schema, l2_lambda=-1.0)


# ---------------------------------------------------------------------------- CrossStitch
def test_convex_mixing_init():
    init = convex_mixing_init(4, 0.7)
    torch.testing.assert_close(init.sum(dim=1), torch.ones(4))
    torch.testing.assert_close(init.diagonal(), torch.full((4,), 0.7))
    assert torch.equal(convex_mixing_init(1), torch.ones(1, 1))


def test_cross_stitch_starts_at_its_initialisation(funnel_small):
    model = CrossStitch(funnel_small.schema, hidden_units=(16, 8, 4))
    mixing = model.mixing_parameters()
    assert list(mixing) == ["alpha/0", "alpha/1", "alpha/2"]
    for alpha in mixing.values():
        assert alpha.shape == (3, 3) and not alpha.requires_grad
        torch.testing.assert_close(alpha.sum(dim=1), torch.ones(3))
        torch.testing.assert_close(alpha, convex_mixing_init(3, 0.9), rtol=0, atol=1e-6)
        torch.testing.assert_close(alpha.diagonal(), torch.full((3,), 0.9), rtol=0, atol=1e-6)
    mixing["alpha/0"].zero_()  # a copy: the model is untouched
    assert model.mixing_parameters()["alpha/0"].sum() > 0


def test_cross_stitch_alpha_changes_with_training(correlated_small):
    model = CrossStitch(correlated_small.schema)
    before = model.mixing_parameters()
    _fit(model, correlated_small, epochs=2)
    after = model.mixing_parameters()
    for name in before:
        assert (after[name] - before[name]).abs().max() > 1e-2, name


def test_cross_stitch_identity_alpha_equals_independent_columns(funnel_small):
    """α = I: the columns do not interact; the model is SingleTask with the same weights."""
    stitched = CrossStitch(funnel_small.schema, shared_embeddings=False)
    with torch.no_grad():
        for unit in stitched.stitches:
            unit.raw.copy_(torch.eye(3))
    single = SingleTask(funnel_small.schema, hidden_units=(64, 32), seed=1)
    single.input.load_state_dict(stitched.input.state_dict())
    _copy_mlp_layers(_layers(single.networks), _layers(*stitched.columns, stitched.towers))
    _assert_same_outputs(stitched, single, _batch(funnel_small, 64))


def test_cross_stitch_alpha_lr_scale(correlated_small):
    """Under Adam, α of a model with alpha_lr_scale=s moves s times as far per step."""
    batch = _batch(correlated_small, 128)
    steps = {}
    for scale in (1.0, 10.0):
        model = CrossStitch(correlated_small.schema, alpha_lr_scale=scale, seed=2)
        before = model.mixing_parameters()["alpha/0"]
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        sum(model.task_losses(model(batch), batch).values()).backward()
        optimizer.step()
        steps[scale] = (model.mixing_parameters()["alpha/0"] - before, before)
    torch.testing.assert_close(steps[1.0][1], steps[10.0][1])  # the same initial α
    torch.testing.assert_close(steps[10.0][0], 10 * steps[1.0][0], rtol=1e-2, atol=1e-6)


def test_cross_stitch_shared_parameters(funnel_small):
    model = CrossStitch(funnel_small.schema)
    shared = {id(p) for p in model.shared_parameters()}
    assert shared <= {id(p) for p in model.parameters()}
    assert {id(p) for p in model.stitches[:-1].parameters()} <= shared
    # The last unit's row k feeds task k's tower only: it is not shared, as the towers are not.
    assert not shared & {id(p) for p in model.stitches[-1].parameters()}
    assert {id(p) for p in model.columns.parameters()} <= shared
    assert not shared & {id(p) for p in model.towers.parameters()}


def test_cross_stitch_with_one_task_has_nothing_to_mix(correlated_small):
    data = correlated_small.select_tasks([correlated_small.task_names[0]])
    model = CrossStitch(data.schema)
    assert list(model.stitches.parameters()) == []
    assert all(torch.equal(a, torch.ones(1, 1)) for a in model.mixing_parameters().values())


def test_mixing_matrix_rejects_bad_arguments():
    with pytest.raises(ValueError, match="2-D"):
        MixingMatrix(torch.ones(3))
    with pytest.raises(ValueError, match="learning-rate"):
        MixingMatrix(torch.ones(2, 2), lr_scale=0.0)


def test_cross_stitch_rejects_alpha_self_outside_unit_interval(correlated_small):
    with pytest.raises(ValueError, match="alpha_self"):
        CrossStitch(correlated_small.schema, alpha_self=1.5)


# ---------------------------------------------------------------------------- Sluice
def _orthogonal_subspaces(n_tasks: int, n_in: int, n_out: int) -> torch.Tensor:
    """Weights [tasks, in, out] whose output columns are orthonormal (n_out ≤ n_in)."""
    q, _ = torch.linalg.qr(torch.randn(n_tasks, n_in, n_in))
    return q[..., :n_out].contiguous()


@pytest.mark.parametrize("n_subspaces", [2, 3])
def test_subspace_orthogonality(n_subspaces):
    torch.manual_seed(0)
    w = torch.randn(2, 7, 6)
    e = 6 // n_subspaces
    naive = sum(
        ((w[k, :, s * e : (s + 1) * e].T @ w[k, :, t * e : (t + 1) * e]) ** 2).sum()
        for k in range(2)
        for s, t in itertools.combinations(range(n_subspaces), 2)
    )
    torch.testing.assert_close(subspace_orthogonality(w, n_subspaces), naive)
    assert subspace_orthogonality(w, n_subspaces) > 0
    assert float(subspace_orthogonality(_orthogonal_subspaces(2, 7, 6), n_subspaces)) < 1e-10
    with pytest.raises(ValueError, match="subspaces"):
        subspace_orthogonality(w, 4)


def test_sluice_penalty_zero_for_orthogonal_subspaces(correlated_small):
    model = Sluice(correlated_small.schema, hidden_units=(4, 4), orthogonality_lambda=0.5)
    assert model.orthogonality() > 0
    torch.testing.assert_close(model.regularization(), 0.5 * model.orthogonality())
    with torch.no_grad():
        for column in model.columns:
            w = column.weights[0]
            w.copy_(_orthogonal_subspaces(*w.shape))
    assert model.regularization().item() < 1e-10
    off = Sluice(correlated_small.schema, orthogonality_lambda=0.0)
    assert off.regularization().item() == 0.0
    one = Sluice(correlated_small.schema, n_subspaces=1)
    assert one.regularization().item() == 0.0


def test_sluice_penalty_reaches_only_the_columns(correlated_small):
    model = Sluice(correlated_small.schema)
    model.regularization().backward()
    for name, p in model.named_parameters():
        touched = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert touched == (name.startswith("columns.") and name.endswith("weights.0")), name


def test_sluice_mixing_parameters(funnel_small):
    model = Sluice(funnel_small.schema, hidden_units=(8, 8, 8), n_subspaces=2)
    mixing = model.mixing_parameters()
    assert list(mixing) == ["alpha/0", "alpha/1", "alpha/2", "beta"]
    for i in range(3):
        alpha = mixing[f"alpha/{i}"]
        assert alpha.shape == (6, 6) and not alpha.requires_grad
        torch.testing.assert_close(alpha.sum(dim=1), torch.ones(6))
        torch.testing.assert_close(alpha, convex_mixing_init(6, 0.9), rtol=0, atol=1e-6)
    beta = mixing["beta"]
    assert beta.shape == (3, 3)
    torch.testing.assert_close(beta, torch.full((3, 3), 1 / 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(beta.sum(dim=1), torch.ones(3))


def test_sluice_mixing_changes_with_training(correlated_small):
    model = Sluice(correlated_small.schema)
    before = model.mixing_parameters()
    _fit(model, correlated_small, epochs=2)
    after = model.mixing_parameters()
    for name in before:
        assert (after[name] - before[name]).abs().max() > 1e-2, name


def test_sluice_with_one_subspace_and_last_layer_is_cross_stitch(funnel_small):
    sluice = Sluice(funnel_small.schema, hidden_units=(16, 16), n_subspaces=1)
    stitch = CrossStitch(funnel_small.schema, hidden_units=(16, 16), seed=5)
    stitch.input.load_state_dict(sluice.input.state_dict())
    _copy_mlp_layers(
        _layers(*stitch.columns, stitch.towers), _layers(*sluice.columns, sluice.towers)
    )
    with torch.no_grad():
        for mine, theirs in zip(stitch.stitches, sluice.alphas, strict=True):
            mine.raw.copy_(theirs())
        sluice.beta.raw.copy_(torch.tensor([0.0, 1.0]).expand(3, 2))
    _assert_same_outputs(sluice, stitch, _batch(funnel_small, 64))


def test_sluice_shared_parameters(funnel_small):
    model = Sluice(funnel_small.schema)
    shared = {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in model.alphas[:-1].parameters()} <= shared
    assert not shared & {id(p) for p in model.alphas[-1].parameters()}  # one row per task
    assert {id(p) for p in model.columns.parameters()} <= shared
    assert id(model.beta.raw) not in shared
    assert not shared & {id(p) for p in model.towers.parameters()}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden_units": (32, 16)}, "same width"),
        ({"hidden_units": (9, 9), "n_subspaces": 2}, "subspaces"),
        ({"n_subspaces": 0}, "n_subspaces"),
        ({"orthogonality_lambda": -1.0}, "orthogonality_lambda"),
    ],
)
def test_sluice_rejects_bad_arguments(correlated_small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sluice(correlated_small.schema, **kwargs)
