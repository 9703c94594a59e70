"""The impression → click → purchase simulator."""

from __future__ import annotations

import numpy as np
import pytest

import mtlbook as mb

TRUTH = ("pctr", "pcvr", "pctcvr")


def _rates(data):
    return data.labels["click"].mean(), data.labels["purchase"].mean()


def test_default_rates_match_knobs(funnel_large):
    click, purchase = _rates(funnel_large)
    assert click == pytest.approx(0.04, rel=0.10)
    assert purchase == pytest.approx(0.01, rel=0.10)


@pytest.mark.parametrize(("click_rate", "purchase_rate"), [(0.1, 0.02), (0.02, 0.004)])
def test_other_rates_match_knobs(click_rate, purchase_rate):
    data = mb.simulate_funnel(
        200_000,
        seed=3,
        n_users=500,
        n_items=300,
        click_rate=click_rate,
        purchase_rate=purchase_rate,
    )
    click, purchase = _rates(data)
    assert click == pytest.approx(click_rate, rel=0.10)
    assert purchase == pytest.approx(purchase_rate, rel=0.10)
    assert data.truth["pctr"].mean() == pytest.approx(click_rate, rel=0.01)
    assert data.truth["pctcvr"].mean() == pytest.approx(purchase_rate, rel=0.01)


def test_mean_true_pctr_near_click_rate(funnel_large):
    assert funnel_large.truth["pctr"].mean() == pytest.approx(0.04, rel=0.01)
    assert funnel_large.truth["pctcvr"].mean() == pytest.approx(0.01, rel=0.01)


def test_no_purchase_without_click(funnel_large):
    click, purchase = funnel_large.labels["click"], funnel_large.labels["purchase"]
    assert purchase.sum() > 0
    assert not ((purchase == 1) & (click == 0)).any()


def test_truth_columns(funnel_large):
    truth = funnel_large.truth
    assert len(truth) == len(funnel_large)
    for col in TRUTH:
        assert col in truth.columns
        values = truth[col].to_numpy()
        assert np.isfinite(values).all()
        assert ((values >= 0) & (values <= 1)).all()
    np.testing.assert_allclose(truth["pctcvr"], truth["pctr"] * truth["pcvr"], rtol=1e-12)


def test_truth_is_not_a_feature_nor_a_label(funnel_small):
    schema = funnel_small.schema
    features = set(schema.dense) | set(schema.categorical)
    for col in funnel_small.truth.columns:
        assert col not in features
        assert col not in funnel_small.labels
        assert col not in schema.task_names
    assert "dwell_mean" in funnel_small.truth.columns


def test_schema_of_funnel(funnel_large):
    schema = funnel_large.schema
    assert schema.categorical == (
        "user_id",
        "item_id",
        "segment",
        "category",
        "price_band",
        "position",
    )
    assert schema.dense == ("log_price", "user_activity", "item_popularity")
    assert schema.cardinalities == (2_000, 1_000, 4, 20, 5, 10)
    assert schema.task_names == ("click", "purchase")
    assert all(t.kind == "binary" for t in schema.tasks)
    assert funnel_large.masks == {}
    card = np.array(schema.cardinalities)
    assert (funnel_large.categorical >= 0).all()
    assert (funnel_large.categorical.max(axis=0) < card).all()


def test_dwell_time_is_masked_regression_on_clicks(funnel_small):
    data = funnel_small
    assert data.task_names == ("click", "purchase", "dwell_time")
    spec = data.schema.task("dwell_time")
    assert spec.kind == "regression"
    mask = data.masks["dwell_time"]
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, data.labels["click"] == 1)
    assert (data.labels["dwell_time"][mask] > 0).all()
    assert set(data.masks) == {"dwell_time"}


def test_groups_are_user_ids(funnel_small):
    user_col = funnel_small.schema.categorical.index("user_id")
    np.testing.assert_array_equal(funnel_small.groups, funnel_small.categorical[:, user_col])


def test_selection_bias_exists(funnel_large):
    pcvr = funnel_large.truth["pcvr"].to_numpy()
    clicked = funnel_large.labels["click"] == 1
    assert pcvr[clicked].mean() > pcvr.mean() * 1.05


def test_selection_bias_sets_how_strongly_clicks_select_converting_impressions():
    def lift(rho):  # mean true pCVR among clicked impressions / over all impressions
        data = mb.simulate_funnel(40_000, seed=2, context_noise=1.0, selection_bias=rho)
        pcvr, clicked = data.truth["pcvr"].to_numpy(), data.labels["click"] == 1
        assert data.meta["selection_bias"] == rho
        return pcvr[clicked].mean() / pcvr.mean()

    against, independent, along = lift(-0.9), lift(0.0), lift(0.9)
    assert against < independent - 0.05 < along - 0.1


def test_selection_bias_zero_is_the_default_data():
    a = mb.simulate_funnel(2_000, seed=4)
    b = mb.simulate_funnel(2_000, seed=4, selection_bias=0.0)
    np.testing.assert_array_equal(a.truth.to_numpy(), b.truth.to_numpy())
    c = mb.simulate_funnel(2_000, seed=4, selection_bias=0.5)
    np.testing.assert_array_equal(a.truth["pctr"].to_numpy(), c.truth["pctr"].to_numpy())
    assert not np.array_equal(a.truth["pcvr"].to_numpy(), c.truth["pcvr"].to_numpy())


def test_determinism():
    kwargs = {"n_users": 50, "n_items": 40, "with_dwell_time": True}
    a = mb.simulate_funnel(2_000, seed=4, **kwargs)
    b = mb.simulate_funnel(2_000, seed=4, **kwargs)
    c = mb.simulate_funnel(2_000, seed=5, **kwargs)
    np.testing.assert_array_equal(a.dense, b.dense)
    np.testing.assert_array_equal(a.categorical, b.categorical)
    for name in a.task_names:
        np.testing.assert_array_equal(a.labels[name], b.labels[name])
    np.testing.assert_array_equal(a.truth.to_numpy(), b.truth.to_numpy())
    assert not np.array_equal(a.categorical, c.categorical)
    assert not np.array_equal(a.truth["pctr"].to_numpy(), c.truth["pctr"].to_numpy())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"click_rate": 0.04, "purchase_rate": 0.04}, "purchase_rate"),
        ({"click_rate": 0.04, "purchase_rate": 0.05}, "purchase_rate"),
        ({"purchase_rate": 0.0}, "purchase_rate"),
        ({"purchase_rate": -0.01}, "purchase_rate"),
        ({"click_rate": 0.0}, "click_rate"),
        ({"click_rate": 1.0}, "click_rate"),
        ({"click_rate": 1.5}, "click_rate"),
        ({"context_noise": -1.0}, "context_noise"),
        ({"selection_bias": 1.5}, "selection_bias"),
        ({"selection_bias": -1.01}, "selection_bias"),
        ({"n_impressions": 0}, "n_impressions"),
        ({"n_users": 0}, "n_users"),
        ({"latent_dim": 0}, "latent_dim"),
    ],
)
def test_bad_knobs_raise(kwargs, match):
    args = {"n_impressions": 100, **kwargs}
    with pytest.raises(ValueError, match=match):
        mb.simulate_funnel(**args)
