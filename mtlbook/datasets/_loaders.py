"""Turning the raw files of a dataset into a :class:`~mtlbook.data.MultiTaskData`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import MultiTaskData, TaskSpec

# ----------------------------------------------------------------------------- adult
ADULT_COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
#: Columns that are labels, or reveal a label, and so are never features.
ADULT_FORBIDDEN = frozenset({"income", "marital-status", "relationship", "never_married", "fnlwgt"})
# Fixed vocabularies (adult.names); '?' (missing) becomes 'unknown'.
ADULT_VOCAB: dict[str, tuple[str, ...]] = {
    "workclass": (
        "Federal-gov",
        "Local-gov",
        "Never-worked",
        "Private",
        "Self-emp-inc",
        "Self-emp-not-inc",
        "State-gov",
        "Without-pay",
    ),
    "education": (
        "10th",
        "11th",
        "12th",
        "1st-4th",
        "5th-6th",
        "7th-8th",
        "9th",
        "Assoc-acdm",
        "Assoc-voc",
        "Bachelors",
        "Doctorate",
        "HS-grad",
        "Masters",
        "Preschool",
        "Prof-school",
        "Some-college",
    ),
    "occupation": (
        "Adm-clerical",
        "Armed-Forces",
        "Craft-repair",
        "Exec-managerial",
        "Farming-fishing",
        "Handlers-cleaners",
        "Machine-op-inspct",
        "Other-service",
        "Priv-house-serv",
        "Prof-specialty",
        "Protective-serv",
        "Sales",
        "Tech-support",
        "Transport-moving",
    ),
    "race": ("Amer-Indian-Eskimo", "Asian-Pac-Islander", "Black", "Other", "White"),
    "sex": ("Female", "Male"),
    "native-country": (
        "Cambodia",
        "Canada",
        "China",
        "Columbia",
        "Cuba",
        "Dominican-Republic",
        "Ecuador",
        "El-Salvador",
        "England",
        "France",
        "Germany",
        "Greece",
        "Guatemala",
        "Haiti",
        "Holand-Netherlands",
        "Honduras",
        "Hong",
        "Hungary",
        "India",
        "Iran",
        "Ireland",
        "Italy",
        "Jamaica",
        "Japan",
        "Laos",
        "Mexico",
        "Nicaragua",
        "Outlying-US(Guam-USVI-etc)",
        "Peru",
        "Philippines",
        "Poland",
        "Portugal",
        "Puerto-Rico",
        "Scotland",
        "South",
        "Taiwan",
        "Thailand",
        "Trinadad&Tobago",
        "United-States",
        "Vietnam",
        "Yugoslavia",
    ),
}
# Fixed dense transforms, chosen without looking at the data: (x - centre) / scale, with
# log1p first for the two heavy-tailed capital columns (log1p(99999) is about 11.5).
ADULT_DENSE: dict[str, tuple[bool, float, float]] = {
    "age": (False, 40.0, 15.0),
    "education-num": (False, 10.0, 3.0),
    "capital-gain": (True, 0.0, 11.5),
    "capital-loss": (True, 0.0, 11.5),
    "hours-per-week": (False, 40.0, 12.0),
}


def check_no_leak(features: Sequence[str], forbidden: frozenset[str], dataset: str) -> None:
    """Raise if a label or post-outcome column is among the features (a guard, not a filter)."""
    leaked = sorted(set(features) & forbidden)
    if leaked:
        raise ValueError(
            f"{dataset}: column(s) {leaked} are labels or reveal a label and must never be features"
        )


def _encode(values: pd.Series, vocab: Sequence[str], column: str) -> np.ndarray:
    index = {v: i for i, v in enumerate(vocab)}
    codes = values.map(index)
    if codes.isna().any():
        unknown = sorted(set(values[codes.isna()].astype(str)))[:5]
        raise ValueError(f"column {column!r} has values outside its fixed vocabulary: {unknown}")
    return codes.to_numpy(dtype=np.int64)


def read_adult(path: Path, *, test_file: bool) -> pd.DataFrame:
    """Read ``adult.data`` or ``adult.test`` with the published column names."""
    df = pd.read_csv(
        path,
        names=list(ADULT_COLUMNS),
        skipinitialspace=True,
        skiprows=1 if test_file else 0,
        na_values=[],
        keep_default_na=False,
    )
    df = df[df["income"].astype(str).str.len() > 0]  # trailing blank lines
    df["income"] = df["income"].astype(str).str.rstrip(".")
    bad = sorted(set(df["income"]) - {"<=50K", ">50K"})
    if bad:
        raise ValueError(f"{path}: unexpected income values {bad[:5]}")
    return df.reset_index(drop=True)


def load_adult(paths: Mapping[str, Path], *, part: str = "all") -> MultiTaskData:
    """Build the census multi-task data from ``adult.data`` / ``adult.test``.

    ``part`` is ``"train"`` (adult.data), ``"test"`` (adult.test) or ``"all"`` (both, train
    first). Encodings are fixed, so the parts are compatible; ``truth["part"]`` records the
    official part of each row.
    """
    parts = {"train": ["adult.data"], "test": ["adult.test"], "all": ["adult.data", "adult.test"]}
    if part not in parts:
        raise ValueError(f"part must be one of {sorted(parts)}, got {part!r}")
    frames = []
    for fname in parts[part]:
        df = read_adult(paths[fname], test_file=fname == "adult.test")
        df["part"] = "train" if fname == "adult.data" else "test"
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)

    cat_names = list(ADULT_VOCAB)
    dense_names = list(ADULT_DENSE)
    check_no_leak(cat_names + dense_names, ADULT_FORBIDDEN, "adult")
    cats, vocabs = [], {}
    for col in cat_names:
        vocab = ("unknown", *ADULT_VOCAB[col])
        cats.append(_encode(df[col].replace("?", "unknown"), vocab, col))
        vocabs[col] = pd.Index(vocab)
    dense = []
    for col in dense_names:
        log, centre, scale = ADULT_DENSE[col]
        x = df[col].to_numpy(dtype=np.float64)
        dense.append(((np.log1p(x) if log else x) - centre) / scale)
    return MultiTaskData(
        dense=np.stack(dense, axis=1),
        categorical=np.stack(cats, axis=1),
        labels={
            "income": (df["income"] == ">50K").to_numpy(dtype=np.float64),
            "never_married": (df["marital-status"] == "Never-married").to_numpy(dtype=np.float64),
        },
        tasks=[TaskSpec("income", "binary"), TaskSpec("never_married", "binary")],
        dense_names=dense_names,
        categorical_names=cat_names,
        cardinalities=[len(vocabs[c]) for c in cat_names],
        truth=df[["part"]].copy(),
        meta={"dataset": "adult", "categories": vocabs, "dense_transforms": dict(ADULT_DENSE)},
    )


# -------------------------------------------------------------------- movielens-100k
ML_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
#: MovieLens-1M style age buckets: lower bounds and names.
ML_AGE_BINS = (
    (0, "<18"),
    (18, "18-24"),
    (25, "25-34"),
    (35, "35-44"),
    (45, "45-49"),
    (50, "50-55"),
    (56, "56+"),
)
#: Columns that are labels or exist only because a rating happened: never features.
ML_FORBIDDEN = frozenset({"rating", "rated", "liked", "timestamp"})


def read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file; ``name:type`` headers become ``name``."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":", 1)[0].strip() for c in df.columns]
    return df.apply(lambda s: s.str.strip())


def load_movielens(
    paths: Mapping[str, Path],
    *,
    negatives_per_positive: float = 1.0,
    like_threshold: float = 4.0,
    seed: int = 0,
) -> MultiTaskData:
    """Build rated/liked/rating impressions from the ml-100k atomic files (see :func:`load`)."""
    if not negatives_per_positive >= 0:
        raise ValueError(f"negatives_per_positive must be >= 0, got {negatives_per_positive}")
    inter = read_atomic(paths["ml-100k.inter"])
    users = read_atomic(paths["ml-100k.user"])
    items = read_atomic(paths["ml-100k.item"])
    user_ids = np.sort(users["user_id"].astype(np.int64).unique())
    item_ids = np.sort(items["item_id"].astype(np.int64).unique())
    r_user = inter["user_id"].astype(np.int64).to_numpy()
    r_item = inter["item_id"].astype(np.int64).to_numpy()
    rating = inter["rating"].astype(np.float64).to_numpy()
    if not (np.isin(r_user, user_ids).all() and np.isin(r_item, item_ids).all()):
        raise ValueError("ml-100k.inter refers to users or items missing from the other files")

    neg_user, neg_item = _sample_unseen(
        r_user, r_item, user_ids, item_ids, negatives_per_positive, seed
    )
    n_neg = sum(len(a) for a in neg_item)
    all_user = np.concatenate([r_user, *neg_user]).astype(np.int64)
    all_item = np.concatenate([r_item, *neg_item]).astype(np.int64)
    is_rated = np.concatenate([np.ones(len(r_user)), np.zeros(n_neg)])
    all_rating = np.concatenate([rating, np.zeros(n_neg)])

    vocab, cat = _movielens_categoricals(users, user_ids, item_ids, all_user, all_item)
    dense = _movielens_genres(items, all_item)
    dense_names = [f"genre_{g}" for g in ML_GENRES]
    cat_names = list(cat)
    check_no_leak(cat_names + dense_names, ML_FORBIDDEN, "movielens-100k")
    return MultiTaskData(
        dense=dense,
        categorical=np.stack([cat[c] for c in cat_names], axis=1),
        labels={
            "rated": is_rated,
            "liked": ((all_rating >= like_threshold) & (is_rated == 1)).astype(np.float64),
            "rating": all_rating,
        },
        tasks=[
            TaskSpec("rated", "binary"),
            TaskSpec("liked", "binary"),
            TaskSpec("rating", "regression"),
        ],
        dense_names=dense_names,
        categorical_names=cat_names,
        cardinalities=[len(vocab[c]) for c in cat_names],
        masks={"rating": is_rated.astype(bool)},
        groups=all_user,
        meta={
            "dataset": "movielens-100k",
            "categories": vocab,
            "seed": seed,
            "negatives_per_positive": negatives_per_positive,
            "like_threshold": like_threshold,
            "n_rated": len(r_user),
            "n_sampled": n_neg,
        },
    )


def _sample_unseen(
    r_user: np.ndarray,
    r_item: np.ndarray,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    negatives_per_positive: float,
    seed: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Negative impressions: for each user, ``negatives_per_positive`` times as many items as
    they rated (at most all the others), drawn without replacement from those they did not
    rate; their users and items, one array per user that got any."""
    rng = np.random.default_rng(seed)
    neg_user, neg_item = [], []
    order = np.argsort(r_user, kind="stable")
    bounds = np.searchsorted(r_user[order], user_ids, side="left")
    ends = np.searchsorted(r_user[order], user_ids, side="right")
    for uid, lo, hi in zip(user_ids, bounds, ends, strict=True):
        seen = r_item[order[lo:hi]]
        unseen = np.setdiff1d(item_ids, seen, assume_unique=False)
        k = min(round(negatives_per_positive * (hi - lo)), len(unseen))
        if k:
            neg_item.append(rng.choice(unseen, size=k, replace=False))
            neg_user.append(np.full(k, uid))
    return neg_user, neg_item


def _movielens_categoricals(
    users: pd.DataFrame,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    all_user: np.ndarray,
    all_item: np.ndarray,
) -> tuple[dict[str, pd.Index], dict[str, np.ndarray]]:
    """The vocabularies of the categorical features (user, item, age group, gender,
    occupation) and their codes for each impression."""
    u = users.assign(user_id=users["user_id"].astype(np.int64)).set_index("user_id")
    ages = u["age"].astype(np.int64)
    lows = np.array([lo for lo, _ in ML_AGE_BINS])
    u["age_group"] = [ML_AGE_BINS[i][1] for i in np.searchsorted(lows, ages, side="right") - 1]
    vocab = {
        "user_id": pd.Index(user_ids),
        "item_id": pd.Index(item_ids),
        "age_group": pd.Index([name for _, name in ML_AGE_BINS]),
        "gender": pd.Index(sorted(u["gender"].unique())),
        "occupation": pd.Index(sorted(u["occupation"].unique())),
    }
    user_rows = u.index.get_indexer(all_user)
    cat = {
        "user_id": vocab["user_id"].get_indexer(all_user),
        "item_id": vocab["item_id"].get_indexer(all_item),
        "age_group": vocab["age_group"].get_indexer(u["age_group"].to_numpy()[user_rows]),
        "gender": vocab["gender"].get_indexer(u["gender"].to_numpy()[user_rows]),
        "occupation": vocab["occupation"].get_indexer(u["occupation"].to_numpy()[user_rows]),
    }
    return vocab, cat


def _movielens_genres(items: pd.DataFrame, all_item: np.ndarray) -> np.ndarray:
    """The dense features: each impression's item's genres, one 0/1 column per genre of
    :data:`ML_GENRES`; a genre not in it is an error."""
    it = items.assign(item_id=items["item_id"].astype(np.int64)).set_index("item_id")
    genre_sets = it["class"].str.split()
    unknown = sorted({g for gs in genre_sets for g in gs} - set(ML_GENRES))
    if unknown:
        raise ValueError(f"ml-100k.item has unknown genres {unknown[:5]}")
    genre_matrix = np.array([[g in gs for g in ML_GENRES] for gs in genre_sets], dtype=np.float32)
    return genre_matrix[it.index.get_indexer(all_item)]
