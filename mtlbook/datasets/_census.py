"""UCI Census-Income (KDD): the census data of the MMoE paper, as a :class:`MultiTaskData`.

The schema follows ``census-income.names`` of the UCI repository: 42 comma-separated fields per
line (the 41 attributes, among them the sampling weight ``instance weight`` at position 25,
then the income class), values preceded by a space, every line ending with a period, ``?`` for
a missing value. The training part ``census-income.data`` has 199,523 lines and the test part
``census-income.test`` 99,762.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import IO, cast

import numpy as np
import pandas as pd

from ..data import MultiTaskData, TaskSpec
from ._loaders import check_no_leak

# The raw columns in file order (the attribute names of census-income.names; the last field,
# the income class, has no name there).
CENSUS_COLUMNS = (
    "age",
    "class of worker",
    "detailed industry recode",
    "detailed occupation recode",
    "education",
    "wage per hour",
    "enroll in edu inst last wk",
    "marital stat",
    "major industry code",
    "major occupation code",
    "race",
    "hispanic origin",
    "sex",
    "member of a labor union",
    "reason for unemployment",
    "full or part time employment stat",
    "capital gains",
    "capital losses",
    "dividends from stocks",
    "tax filer stat",
    "region of previous residence",
    "state of previous residence",
    "detailed household and family stat",
    "detailed household summary in household",
    "instance weight",
    "migration code-change in msa",
    "migration code-change in reg",
    "migration code-move within reg",
    "live in this house 1 year ago",
    "migration prev res in sunbelt",
    "num persons worked for employer",
    "family members under 18",
    "country of birth father",
    "country of birth mother",
    "country of birth self",
    "citizenship",
    "own business or self employed",
    "fill inc questionnaire for veteran's admin",
    "veterans benefits",
    "weeks worked in year",
    "year",
    "income",
)


def feature_name(column: str) -> str:
    """The snake_case feature name of a raw column: ``"class of worker"`` → ``class_of_worker``."""
    return re.sub(r"[^0-9a-z]+", "_", column.lower().replace("'", "")).strip("_")


_COUNTRIES = (
    "Mexico",
    "United-States",
    "Puerto-Rico",
    "Dominican-Republic",
    "Jamaica",
    "Cuba",
    "Portugal",
    "Nicaragua",
    "Peru",
    "Ecuador",
    "Guatemala",
    "Philippines",
    "Canada",
    "Columbia",
    "El-Salvador",
    "Japan",
    "England",
    "Trinadad&Tobago",
    "Honduras",
    "Germany",
    "Taiwan",
    "Outlying-U S (Guam USVI etc)",
    "India",
    "Vietnam",
    "China",
    "Hong Kong",
    "Cambodia",
    "France",
    "Laos",
    "Haiti",
    "South Korea",
    "Iran",
    "Greece",
    "Italy",
    "Poland",
    "Thailand",
    "Yugoslavia",
    "Holand-Netherlands",
    "Ireland",
    "Scotland",
    "Hungary",
    "Panama",
)
_EDUCATION = (
    "Children",
    "Less than 1st grade",
    "1st 2nd 3rd or 4th grade",
    "5th or 6th grade",
    "7th and 8th grade",
    "9th grade",
    "10th grade",
    "11th grade",
    "12th grade no diploma",
    "High school graduate",
    "Some college but no degree",
    "Associates degree-occup /vocational",
    "Associates degree-academic program",
    "Bachelors degree(BA AB BS)",
    "Masters degree(MA MS MEng MEd MSW MBA)",
    "Prof school degree (MD DDS DVM LLB JD)",
    "Doctorate degree(PhD EdD)",
)
#: "At least college" of the MMoE paper, read as a bachelor's or higher degree.
CENSUS_COLLEGE = frozenset(
    {
        "Bachelors degree(BA AB BS)",
        "Masters degree(MA MS MEng MEd MSW MBA)",
        "Prof school degree (MD DDS DVM LLB JD)",
        "Doctorate degree(PhD EdD)",
    }
)
_MARITAL = (
    "Never married",
    "Married-civilian spouse present",
    "Married-spouse absent",
    "Separated",
    "Divorced",
    "Widowed",
    "Married-A F spouse present",
)
_INCOME = ("- 50000", "50000+")

# Fixed vocabularies of the categorical features, in the order census-income.names lists them
# (values stripped of surrounding spaces). Code 0 is "unknown": '?' (missing) and any value
# outside the list.
CENSUS_VOCAB: dict[str, tuple[str, ...]] = {
    "class of worker": (
        "Not in universe",
        "Federal government",
        "Local government",
        "Never worked",
        "Private",
        "Self-employed-incorporated",
        "Self-employed-not incorporated",
        "State government",
        "Without pay",
    ),
    "detailed industry recode": tuple(str(i) for i in range(52)),
    "detailed occupation recode": tuple(str(i) for i in range(47)),
    "education": _EDUCATION,
    "enroll in edu inst last wk": ("Not in universe", "High school", "College or university"),
    "major industry code": (
        "Not in universe or children",
        "Entertainment",
        "Social services",
        "Agriculture",
        "Education",
        "Public administration",
        "Manufacturing-durable goods",
        "Manufacturing-nondurable goods",
        "Wholesale trade",
        "Retail trade",
        "Finance insurance and real estate",
        "Private household services",
        "Business and repair services",
        "Personal services except private HH",
        "Construction",
        "Medical except hospital",
        "Other professional services",
        "Transportation",
        "Utilities and sanitary services",
        "Mining",
        "Communications",
        "Hospital services",
        "Forestry and fisheries",
        "Armed Forces",
    ),
    "major occupation code": (
        "Not in universe",
        "Professional specialty",
        "Other service",
        "Farming forestry and fishing",
        "Sales",
        "Adm support including clerical",
        "Protective services",
        "Handlers equip cleaners etc",
        "Precision production craft & repair",
        "Technicians and related support",
        "Machine operators assmblrs & inspctrs",
        "Transportation and material moving",
        "Executive admin and managerial",
        "Private household services",
        "Armed Forces",
    ),
    "race": ("White", "Black", "Other", "Amer Indian Aleut or Eskimo", "Asian or Pacific Islander"),
    "hispanic origin": (
        "Mexican (Mexicano)",
        "Mexican-American",
        "Puerto Rican",
        "Central or South American",
        "All other",
        "Other Spanish",
        "Chicano",
        "Cuban",
        "Do not know",
        "NA",
    ),
    "sex": ("Female", "Male"),
    "member of a labor union": ("Not in universe", "No", "Yes"),
    "reason for unemployment": (
        "Not in universe",
        "Re-entrant",
        "Job loser - on layoff",
        "New entrant",
        "Job leaver",
        "Other job loser",
    ),
    "full or part time employment stat": (
        "Children or Armed Forces",
        "Full-time schedules",
        "Unemployed part- time",
        "Not in labor force",
        "Unemployed full-time",
        "PT for non-econ reasons usually FT",
        "PT for econ reasons usually PT",
        "PT for econ reasons usually FT",
    ),
    "region of previous residence": (
        "Not in universe",
        "South",
        "Northeast",
        "West",
        "Midwest",
        "Abroad",
    ),
    "state of previous residence": (
        "Not in universe",
        "Utah",
        "Michigan",
        "North Carolina",
        "North Dakota",
        "Virginia",
        "Vermont",
        "Wyoming",
        "West Virginia",
        "Pennsylvania",
        "Abroad",
        "Oregon",
        "California",
        "Iowa",
        "Florida",
        "Arkansas",
        "Texas",
        "South Carolina",
        "Arizona",
        "Indiana",
        "Tennessee",
        "Maine",
        "Alaska",
        "Ohio",
        "Montana",
        "Nebraska",
        "Mississippi",
        "District of Columbia",
        "Minnesota",
        "Illinois",
        "Kentucky",
        "Delaware",
        "Colorado",
        "Maryland",
        "Wisconsin",
        "New Hampshire",
        "Nevada",
        "New York",
        "Georgia",
        "Oklahoma",
        "New Mexico",
        "South Dakota",
        "Missouri",
        "Kansas",
        "Connecticut",
        "Louisiana",
        "Alabama",
        "Massachusetts",
        "Idaho",
        "New Jersey",
    ),
    "migration code-change in msa": (
        "Not in universe",
        "Nonmover",
        "MSA to MSA",
        "NonMSA to nonMSA",
        "MSA to nonMSA",
        "NonMSA to MSA",
        "Abroad to MSA",
        "Not identifiable",
        "Abroad to nonMSA",
    ),
    "migration code-change in reg": (
        "Not in universe",
        "Nonmover",
        "Same county",
        "Different county same state",
        "Different state same division",
        "Abroad",
        "Different region",
        "Different division same region",
    ),
    "migration code-move within reg": (
        "Not in universe",
        "Nonmover",
        "Same county",
        "Different county same state",
        "Different state in West",
        "Abroad",
        "Different state in Midwest",
        "Different state in South",
        "Different state in Northeast",
    ),
    "live in this house 1 year ago": ("Not in universe under 1 year old", "Yes", "No"),
    "migration prev res in sunbelt": ("Not in universe", "Yes", "No"),
    "family members under 18": (
        "Both parents present",
        "Neither parent present",
        "Mother only present",
        "Father only present",
        "Not in universe",
    ),
    "country of birth father": _COUNTRIES,
    "country of birth mother": _COUNTRIES,
    "country of birth self": _COUNTRIES,
    "citizenship": (
        "Native- Born in the United States",
        "Foreign born- Not a citizen of U S",
        "Native- Born in Puerto Rico or U S Outlying",
        "Native- Born abroad of American Parent(s)",
        "Foreign born- U S citizen by naturalization",
    ),
    "own business or self employed": ("0", "2", "1"),
    "fill inc questionnaire for veteran's admin": ("Not in universe", "Yes", "No"),
    "veterans benefits": ("0", "2", "1"),
    "year": ("94", "95"),
}
# Fixed dense transforms, chosen from the value ranges in census-income.names without looking at
# the data: (log1p(x) if log else x - centre) / scale.
CENSUS_DENSE: dict[str, tuple[bool, float, float]] = {
    "age": (False, 35.0, 22.0),
    "wage per hour": (True, 0.0, 10.0),
    "capital gains": (True, 0.0, 11.5),
    "capital losses": (True, 0.0, 11.5),
    "dividends from stocks": (True, 0.0, 11.5),
    "num persons worked for employer": (False, 0.0, 6.0),
    "weeks worked in year": (False, 0.0, 52.0),
}
#: Raw columns that are never features, with the reason.
CENSUS_EXCLUDED: dict[str, str] = {
    "income": "the income label",
    "marital stat": "the never-married label",
    "instance weight": "a sampling weight (census-income.names: not to be used by classifiers)",
    "tax filer stat": "joint filing implies being married, single / head of household implies "
    "not: a proxy of the marital label",
    "detailed household and family stat": "its codes spell out marital status ('never marr', "
    "'ever marr', 'Spouse of ...')",
    "detailed household summary in household": "its codes spell out marital status "
    "('Spouse of householder', '... never married')",
}
#: The categorical features (raw column names), in file order.
CENSUS_CATEGORICAL = tuple(CENSUS_VOCAB)
#: Task groups of the MMoE paper (Ma et al., 2018, section 5.2).
CENSUS_TASK_GROUPS: dict[str, tuple[str, str]] = {
    "income-marital": ("income", "never_married"),
    "education-marital": ("college_degree", "never_married"),
}
#: Feature names that are labels or reveal one, whatever the task group: never features.
#: (``education`` is also excluded when ``college_degree`` is a task.)
CENSUS_FORBIDDEN = frozenset(
    {feature_name(c) for c in CENSUS_EXCLUDED} | {"income", "never_married", "college_degree"}
)

_PART_MEMBERS = {"census-income.data": "train", "census-income.test": "test"}
_ZIP, _TAR = "census+income+kdd.zip", "census.tar.gz"
_GZ = {"train": "census-income.data.gz", "test": "census-income.test.gz"}
_CHUNK_ROWS = 50_000


def _check_max_rows(max_rows: object) -> int | None:
    if max_rows is None:
        return None
    if isinstance(max_rows, bool) or not isinstance(max_rows, int | np.integer) or max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer or None, got {max_rows!r}")
    return int(max_rows)


def _iter_tar(fileobj: IO[bytes], wanted: set[str], where: str) -> Iterator[tuple[str, IO[bytes]]]:
    """Stream the wanted parts out of a ``census.tar.gz`` (members found by base name)."""
    found: set[str] = set()
    names: list[str] = []
    with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
        for member in tar:
            names.append(member.name)
            part = _PART_MEMBERS.get(PurePosixPath(member.name).name)
            if part in wanted and part not in found and member.isfile():
                stream = tar.extractfile(member)
                assert stream is not None
                found.add(part)
                yield part, stream
    missing = sorted(wanted - found)
    if missing:
        need = [m for m, p in _PART_MEMBERS.items() if p in missing]
        raise ValueError(f"{where} has no member {need}; its members are {names[:10]}")


def _iter_parts(paths: Mapping[str, Path], wanted: set[str]) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield ``(part, binary stream)`` for the wanted parts, from whichever layout is given."""
    if _ZIP in paths:
        with zipfile.ZipFile(paths[_ZIP]) as zf:
            inner = [n for n in zf.namelist() if PurePosixPath(n).name == _TAR]
            if not inner:
                raise ValueError(
                    f"{paths[_ZIP]} has no member {_TAR}; its members are {zf.namelist()[:10]}"
                )
            with zf.open(inner[0]) as raw:
                yield from _iter_tar(raw, wanted, f"{paths[_ZIP]}:{inner[0]}")
    elif _TAR in paths:
        with open(paths[_TAR], "rb") as raw:
            yield from _iter_tar(raw, wanted, str(paths[_TAR]))
    elif all(_GZ[p] in paths for p in wanted):
        for part in ("train", "test"):
            if part in wanted:
                with gzip.open(paths[_GZ[part]], "rb") as stream:
                    # A binary stream; typeshed's GzipFile is a BufferedIOBase, not an IO[bytes].
                    yield part, cast(IO[bytes], stream)
    else:
        raise ValueError(
            f"census-income needs {_ZIP}, {_TAR} or {sorted(_GZ.values())}; "
            f"got files {sorted(paths)}"
        )


def _factorize(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, uniques)`` with the distinct values stripped of surrounding spaces (the strip
    runs once per distinct value, not once per row)."""
    codes, uniques = pd.factorize(values)
    return codes, np.array([str(u).strip() for u in uniques], dtype=object)


def _codes(values: pd.Series, column: str, oov: dict[str, int]) -> np.ndarray:
    """Codes 1.. for the published values, 0 for '?' and for values outside the vocabulary."""
    index = {v: i for i, v in enumerate(CENSUS_VOCAB[column], start=1)}
    rows, uniques = _factorize(values)
    lut = np.array([index.get(u, 0) for u in uniques], dtype=np.int64)
    outside = np.array([u not in index and u != "?" for u in uniques], dtype=bool)
    n_outside = int(outside[rows].sum()) if outside.any() else 0
    if n_outside:
        oov[column] = oov.get(column, 0) + n_outside
    return lut[rows]


# task → (source column, its published values, the values that make the label 1)
_LABELS: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {
    "income": ("income", _INCOME, frozenset({"50000+"})),
    "never_married": ("marital stat", _MARITAL, frozenset({"Never married"})),
    "college_degree": ("education", _EDUCATION, CENSUS_COLLEGE),
}


def _read_part(
    stream: IO[bytes],
    part: str,
    limit: int | None,
    cat_columns: list[str],
    task_names: tuple[str, ...],
    oov: dict[str, int],
) -> dict[str, np.ndarray]:
    """Parse one part in chunks; return the encoded columns of its first ``limit`` rows."""
    n_fields = len(CENSUS_COLUMNS)
    reader = pd.read_csv(
        stream,
        header=None,
        names=range(n_fields + 1),
        sep=",",
        skipinitialspace=True,
        dtype=str,
        keep_default_na=False,
        na_values=[],
        chunksize=_CHUNK_ROWS,
        nrows=limit,
        encoding="utf-8",
    )
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("cat", "dense", "weight", *task_names)}
    pos = {c: i for i, c in enumerate(CENSUS_COLUMNS)}
    seen = 0
    for chunk in reader:
        bad = (chunk[n_fields] != "").to_numpy() | (chunk[n_fields - 1] == "").to_numpy()
        if bad.any():
            raise ValueError(
                f"census-income {part} part: data line "
                f"{seen + int(np.flatnonzero(bad)[0]) + 1} does not have the "
                f"{n_fields} comma-separated fields of census-income.names"
            )
        seen += len(chunk)

        def col(name: str, chunk: pd.DataFrame = chunk) -> pd.Series:
            return chunk[pos[name]]

        for task in task_names:  # labels: every value must be a published one
            source, allowed, positive = _LABELS[task]
            rows, uniques = _factorize(col(source))
            if source == "income":  # the line's final period
                uniques = np.array([u.removesuffix(".").strip() for u in uniques], dtype=object)
            unexpected = sorted(set(uniques) - set(allowed))
            if unexpected:
                raise ValueError(
                    f"census-income {part} part: unexpected {source} values "
                    f"{unexpected[:5]}; expected one of {list(allowed)}"
                )
            out[task].append(np.isin(uniques, list(positive))[rows])
        out["cat"].append(np.stack([_codes(col(c), c, oov) for c in cat_columns], axis=1))
        dense = []
        for c in [*CENSUS_DENSE, "instance weight"]:
            rows, uniques = _factorize(col(c))
            x = pd.to_numeric(pd.Series(uniques), errors="coerce").to_numpy(dtype=np.float64)
            if np.isnan(x).any():
                raise ValueError(
                    f"census-income {part} part: column {c!r} has non-numeric "
                    f"values {sorted(uniques[np.isnan(x)])[:5]}"
                )
            dense.append(x[rows])
        out["weight"].append(dense.pop())
        out["dense"].append(np.stack(dense, axis=1))
    if not seen:
        raise ValueError(f"census-income {part} part has no data lines")
    return {k: np.concatenate(v) for k, v in out.items()}


def load_census_income(
    paths: Mapping[str, Path],
    *,
    tasks: str = "income-marital",
    part: str = "all",
    max_rows: int | None = None,
) -> MultiTaskData:
    """Build the census tasks of the MMoE paper from UCI Census-Income (KDD).

    The raw files are read by streaming, in chunks, straight out of the published archive:
    ``census+income+kdd.zip`` (which holds ``census.tar.gz`` with ``census-income.data`` and
    ``census-income.test``), a bare ``census.tar.gz``, or the pair ``census-income.data.gz``
    and ``census-income.test.gz`` of the repository's former file listing; nothing is
    extracted to disk.

    Tasks (both binary, every person), as the two task groups of the MMoE paper:

    * ``tasks="income-marital"``: ``income`` (the income class is 50000+) and
      ``never_married`` (marital stat is "Never married");
    * ``tasks="education-marital"``: ``college_degree`` and ``never_married``. The paper asks
      whether "the education level is at least college" without naming the values; here it is
      a bachelor's, master's, professional-school or doctoral degree ("Some college but no
      degree" and associate degrees count as 0), as in a public reimplementation.

    Features (29 categorical, 7 dense; 28 categorical with ``education-marital``): every
    attribute of census-income.names except those of :data:`CENSUS_EXCLUDED` — the labels
    (income class, marital stat; and ``education`` when it is the label's source), the
    sampling weight ``instance weight``, and three proxies of marital status: ``tax filer stat``
    (joint returns are filed by married couples), ``detailed household and family stat`` and
    ``detailed household summary in household`` (their codes read "never marr", "ever marr",
    "Spouse of householder"). Categorical columns use the fixed vocabularies of
    census-income.names (code 0 = ``'?'`` or any value outside it; such values are counted in
    ``meta["out_of_vocabulary"]``), so every part and option gives the same codes. The seven
    continuous attributes get fixed transforms that do not look at the data
    (:data:`CENSUS_DENSE`; log1p for the money amounts). Income components such as wage per hour,
    capital gains and dividends stay features, as in the paper's setup.

    Args:
        paths: file name → path of the verified raw files (from :func:`mtlbook.datasets.fetch`).
        tasks: ``"income-marital"`` or ``"education-marital"``.
        part: ``"train"`` (census-income.data, 199,523 rows), ``"test"`` (census-income.test,
            99,762 rows) or ``"all"`` (both, train first); ``truth["part"]`` records each row's
            part and ``truth["instance_weight"]`` its sampling weight.
        max_rows: read only the first ``max_rows`` rows (in the order train, test).

    Returns:
        The :class:`MultiTaskData`; ``meta`` holds the vocabularies, the dense transforms and
        the out-of-vocabulary counts.

    Example:
        >>> from mtlbook import datasets
        >>> data = datasets.load("census-income", tasks="education-marital",
        ...                      max_rows=1000)  # doctest: +SKIP
        >>> data.task_names                                     # doctest: +SKIP
        ('college_degree', 'never_married')
    """
    if tasks not in CENSUS_TASK_GROUPS:
        raise ValueError(f"tasks must be one of {sorted(CENSUS_TASK_GROUPS)}, got {tasks!r}")
    parts = {"train": ["train"], "test": ["test"], "all": ["train", "test"]}
    if part not in parts:
        raise ValueError(f"part must be one of {sorted(parts)}, got {part!r}")
    max_rows = _check_max_rows(max_rows)
    task_names = CENSUS_TASK_GROUPS[tasks]
    forbidden = CENSUS_FORBIDDEN
    cat_columns = list(CENSUS_CATEGORICAL)
    if "college_degree" in task_names:  # education is the label's source
        forbidden = forbidden | {"education"}
        cat_columns.remove("education")
    cat_names = [feature_name(c) for c in cat_columns]
    dense_names = [feature_name(c) for c in CENSUS_DENSE]
    check_no_leak(cat_names + dense_names, forbidden, "census-income")

    oov: dict[str, int] = {}
    read: dict[str, dict[str, np.ndarray]] = {}
    for name, stream in _iter_parts(paths, set(parts[part])):
        limit = max_rows
        if max_rows is not None and name == "test" and "train" in read:
            limit = max_rows - len(read["train"]["weight"])
        if limit is not None and limit <= 0:
            continue  # the rows read from the training part are already enough
        read[name] = _read_part(stream, name, limit, cat_columns, task_names, oov)
    order = [p for p in parts[part] if p in read]
    cols = {k: np.concatenate([read[p][k] for p in order]) for k in read[order[0]]}
    part_of = np.concatenate([np.full(len(read[p]["weight"]), p) for p in order])
    if max_rows is not None:
        cols = {k: v[:max_rows] for k, v in cols.items()}
        part_of = part_of[:max_rows]

    dense = []
    for j, (log, centre, scale) in enumerate(CENSUS_DENSE.values()):
        x = cols["dense"][:, j]
        dense.append(((np.log1p(np.maximum(x, 0.0)) if log else x) - centre) / scale)
    vocabs = {feature_name(c): pd.Index(("unknown", *CENSUS_VOCAB[c])) for c in cat_columns}
    return MultiTaskData(
        dense=np.stack(dense, axis=1),
        categorical=cols["cat"],
        labels={t: cols[t].astype(np.float64) for t in task_names},
        tasks=[TaskSpec(t, "binary") for t in task_names],
        dense_names=dense_names,
        categorical_names=cat_names,
        cardinalities=[len(vocabs[c]) for c in cat_names],
        truth=pd.DataFrame({"part": part_of, "instance_weight": cols["weight"]}),
        meta={
            "dataset": "census-income",
            "tasks": tasks,
            "part": part,
            "max_rows": max_rows,
            "categories": vocabs,
            "dense_transforms": {feature_name(c): t for c, t in CENSUS_DENSE.items()},
            "excluded": dict(CENSUS_EXCLUDED),
            "out_of_vocabulary": oov,
        },
    )
