"""An e-commerce funnel simulator: impression → click → purchase, with known true rates.

This is the running example of the book. Every impression pairs a user with an item shown at a
position. Users belong to segments and items to categories; both carry latent taste vectors
(segment and category centroids plus individual noise), so the user–item *affinity* is partly
predictable from the ids and partly from the side features. For every impression ``j``:

* ``click_logit_j = b_click + 1.5·affinity + activity_u + 0.5·quality_i − 0.4·log(1 + position)
  + ε_j`` and ``pctr_j = σ(click_logit_j)``;
* ``cvr_logit_j = b_buy + 1.0·affinity + 0.8·quality_i − sensitivity_u·log_price_i + η_j``
  and ``pcvr_j = σ(cvr_logit_j)`` — the probability of a purchase *if* the impression were
  clicked, defined for every impression, clicked or not;
* ``click ~ Bernoulli(pctr)`` and ``purchase ~ Bernoulli(pcvr)`` only when clicked, so
  ``P(purchase) = pctr·pcvr = pctcvr``.

``ε_j`` and ``η_j`` are per-impression context noise the model cannot see, of standard deviation
``context_noise`` and correlation ``selection_bias``. The offsets
``b_click`` and ``b_buy`` are solved for so that the mean click rate and the mean purchase rate
per impression match the ``click_rate`` and ``purchase_rate`` knobs. Because clicks favour
impressions with high affinity, which also raise ``pcvr``, the clicked impressions are a biased
sample of the entire space: the sample-selection bias of chapter 12.5.

That bias has two parts. Selection on what the features show (affinity, quality) changes which
impressions a model trained on clicks sees, but not ``P(purchase | click, x)``; selection on what
they do not show changes that too. ``selection_bias`` sets the second part: with ``ρ > 0`` the
context that makes an impression more likely to be clicked also makes it more likely to convert
(``η = ρ·ε + √(1 − ρ²)·ε'``), so among clicked impressions purchases are more frequent than
``pcvr`` of the same features says for the entire space, by an amount that grows with
``ρ·context_noise²``. ``ρ = 0`` (the default) keeps the two independent.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._core import TaskSpec
from ._multitask import MultiTaskData

__all__ = ["simulate_funnel"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _solve_offset(target: float, mean_of_offset) -> float:
    """Find ``b`` with ``mean_of_offset(b) == target`` by bisection (the mean rises with b)."""
    lo, hi = -30.0, 30.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if mean_of_offset(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def simulate_funnel(
    n_impressions: int = 100_000,
    *,
    seed: int = 0,
    n_users: int = 2_000,
    n_items: int = 1_000,
    n_segments: int = 4,
    n_categories: int = 20,
    n_price_bands: int = 5,
    n_positions: int = 10,
    latent_dim: int = 8,
    click_rate: float = 0.04,
    purchase_rate: float = 0.01,
    context_noise: float = 0.3,
    selection_bias: float = 0.0,
    with_dwell_time: bool = False,
) -> MultiTaskData:
    """Simulate impressions, clicks and purchases with the true probabilities known.

    Args:
        n_impressions: number of impressions (rows).
        seed: random seed; the same seed gives the same data.
        n_users, n_items: number of distinct users and items.
        n_segments, n_categories, n_price_bands, n_positions: sizes of the side features.
        latent_dim: dimension of the user and item taste vectors.
        click_rate: mean true click probability per impression (default 4 %).
        purchase_rate: mean true purchase probability per impression (default 1 %, i.e.
            purchases are 100× rarer than impressions and the mean CVR among clicks is about
            25 %). Must be smaller than ``click_rate``.
        context_noise: standard deviation of the per-impression noise in both logits.
        selection_bias: correlation ``ρ`` in [-1, 1] of the click and the conversion noise:
            how strongly clicking selects, beyond the features, the impressions that convert
            (see the module's notes). 0 keeps them independent, the default data of the book.
        with_dwell_time: also simulate ``dwell_time`` in seconds, a regression task defined
            on clicked impressions only (masked), for loss-scale experiments.

    Returns:
        A :class:`MultiTaskData` with categorical features ``user_id, item_id, segment,
        category, price_band, position``, dense features ``log_price, user_activity,
        item_popularity`` (standardised), tasks ``click`` and ``purchase`` (binary, every
        impression; purchase = clicked and bought) and optionally ``dwell_time``; groups are the
        user ids; ``data.truth`` has columns ``pctr``, ``pcvr`` (purchase given click, for every
        impression) and ``pctcvr = pctr·pcvr`` (plus ``dwell_mean`` with dwell time).
    """
    n = _check_positive_int("n_impressions", n_impressions)
    n_users = _check_positive_int("n_users", n_users)
    n_items = _check_positive_int("n_items", n_items)
    n_segments = _check_positive_int("n_segments", n_segments)
    n_categories = _check_positive_int("n_categories", n_categories)
    n_price_bands = _check_positive_int("n_price_bands", n_price_bands)
    n_positions = _check_positive_int("n_positions", n_positions)
    k = _check_positive_int("latent_dim", latent_dim)
    if not 0.0 < click_rate < 1.0:
        raise ValueError(f"click_rate must lie in (0, 1), got {click_rate!r}")
    if not 0.0 < purchase_rate < click_rate:
        raise ValueError(
            f"purchase_rate must lie in (0, click_rate={click_rate}), got {purchase_rate!r}"
        )
    if context_noise < 0:
        raise ValueError(f"context_noise must be ≥ 0, got {context_noise!r}")
    if not -1.0 <= selection_bias <= 1.0:
        raise ValueError(f"selection_bias must lie in [-1, 1], got {selection_bias!r}")

    rng = np.random.default_rng(seed)

    # Users: segment, taste vector, click activity, price sensitivity.
    segment = rng.integers(n_segments, size=n_users)
    segment_taste = rng.standard_normal((n_segments, k))
    user_taste = segment_taste[segment] + 0.7 * rng.standard_normal((n_users, k))  # [users, k]
    activity = 0.5 * rng.standard_normal(n_users)
    segment_sensitivity = rng.uniform(0.2, 1.2, size=n_segments)
    sensitivity = segment_sensitivity[segment] + 0.2 * rng.standard_normal(n_users)

    # Items: category, taste vector, quality, price.
    category = rng.integers(n_categories, size=n_items)
    category_taste = rng.standard_normal((n_categories, k))
    item_taste = category_taste[category] + 0.7 * rng.standard_normal((n_items, k))  # [items, k]
    quality = 0.5 * rng.standard_normal(n_items)
    category_price = rng.normal(3.5, 1.0, size=n_categories)
    log_price_item = category_price[category] + 0.4 * rng.standard_normal(n_items)
    log_price_std = (log_price_item - log_price_item.mean()) / log_price_item.std()
    band_edges = np.quantile(log_price_item, np.linspace(0, 1, n_price_bands + 1)[1:-1])
    price_band = np.searchsorted(band_edges, log_price_item)

    # Impressions: heavy users see more; popular (high-quality) items are shown more.
    user_weight = rng.pareto(1.5, size=n_users) + 1.0
    user = rng.choice(n_users, size=n, p=user_weight / user_weight.sum())
    item_weight = np.exp(quality)
    item = rng.choice(n_items, size=n, p=item_weight / item_weight.sum())
    position = rng.integers(n_positions, size=n)

    affinity = np.einsum("nk,nk->n", user_taste[user], item_taste[item]) / (2.0 * np.sqrt(k))
    click_noise = rng.standard_normal(n)
    # ρ = 0 draws exactly what the simulator drew before the knob existed (same seed, same data)
    buy_noise = np.sqrt(1.0 - selection_bias**2) * rng.standard_normal(n)
    buy_noise += selection_bias * click_noise
    click_base = (
        1.5 * affinity
        + activity[user]
        + 0.5 * quality[item]
        - 0.4 * np.log1p(position)
        + context_noise * click_noise
    )
    buy_base = (
        1.0 * affinity
        + 0.8 * quality[item]
        - sensitivity[user] * log_price_std[item]
        + context_noise * buy_noise
    )

    b_click = _solve_offset(click_rate, lambda b: _sigmoid(click_base + b).mean())
    pctr = _sigmoid(click_base + b_click)
    b_buy = _solve_offset(purchase_rate, lambda b: (pctr * _sigmoid(buy_base + b)).mean())
    pcvr = _sigmoid(buy_base + b_buy)

    click = rng.random(n) < pctr
    purchase = click & (rng.random(n) < pcvr)

    # Observed side features: noisy, standardised proxies of hidden quantities.
    def standardise(v: np.ndarray) -> np.ndarray:
        return (v - v.mean()) / (v.std() + 1e-12)

    user_activity_obs = activity + 0.3 * rng.standard_normal(n_users)
    item_popularity_obs = quality + 0.3 * rng.standard_normal(n_items)
    dense = np.stack(
        [
            standardise(log_price_item[item]),
            standardise(user_activity_obs[user]),
            standardise(item_popularity_obs[item]),
        ],
        axis=1,
    )
    categorical = np.stack(
        [user, item, segment[user], category[item], price_band[item], position], axis=1
    )

    labels = {"click": click.astype(float), "purchase": purchase.astype(float)}
    tasks = [TaskSpec("click", "binary"), TaskSpec("purchase", "binary")]
    masks = {}
    truth = pd.DataFrame({"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr})
    if with_dwell_time:
        dwell_log_mean = 3.0 + 0.5 * affinity + 0.3 * quality[item]
        dwell = np.exp(dwell_log_mean + 0.4 * rng.standard_normal(n))
        labels["dwell_time"] = np.where(click, dwell, 0.0)
        masks["dwell_time"] = click
        tasks.append(TaskSpec("dwell_time", "regression"))
        truth["dwell_mean"] = np.exp(dwell_log_mean + 0.5 * 0.4**2)

    return MultiTaskData(
        dense=dense,
        categorical=categorical,
        labels=labels,
        tasks=tasks,
        masks=masks,
        dense_names=["log_price", "user_activity", "item_popularity"],
        categorical_names=["user_id", "item_id", "segment", "category", "price_band", "position"],
        cardinalities=[n_users, n_items, n_segments, n_categories, n_price_bands, n_positions],
        groups=user,
        truth=truth,
        meta={
            "generator": "simulate_funnel",
            "seed": seed,
            "click_rate": click_rate,
            "purchase_rate": purchase_rate,
            "b_click": b_click,
            "b_buy": b_buy,
            "context_noise": context_noise,
            "selection_bias": selection_bias,
        },
    )
