"""The bad-input catalogue: every user mistake gets one line that names the problem and the fix.

Each :class:`Case` below is one row of ``docs/bad-inputs.md``, which is generated from this list: run
``python tests/test_bad_inputs.py`` after adding or changing a case, and ``test_doc_is_current`` fails until
you do. Every case is exercised:

- CLI: the exit code is not 0, stderr is exactly the documented line (``gbdt2nn: error: ...``), nothing says
  "Traceback", and the working folder is byte-for-byte what it was (no output, no half-written file or folder);
- API: the call raises a :class:`~gbdt2nn_core.Gbdt2nnError` (or the documented type) whose one-line message is
  the documented one, and writes nothing;
- notes (documented behaviour, not errors): exit code 0, the output is written, and stderr is one note line.

In a message, ``…`` stands for text that comes from a library (a parser's error) and may change between versions.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import attrs
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad-inputs.md"
TARGET = "income_gt_50k"
WILDCARD = "…"

#: A 10-tree single-thread teacher for the few cases that get as far as building one.
TEACHER_FLAGS = ("--teacher-option", "n_estimators=10", "--teacher-option", "num_threads=1")
DISTILL = ("distill", "--data", "train.csv", "--target", TARGET, "--out", "out", *TEACHER_FLAGS)
PREDICT = ("predict", "--model", "run", "--data", "rows.csv", "--out", "pred.csv")
EXPLAIN = ("explain", "--model", "run", "--data", "rows.csv", "--out", "attr.csv")
EXPORT = ("export", "--model", "run", "--out", "model.pt")


class Context(NamedTuple):
    """What an API case works with: its folder (the current directory) and the saved student, loaded."""

    workdir: Path
    model: Any


@attrs.frozen(kw_only=True)
class Case:
    """One bad input: what the user did, what gbdt2nn says, and what to do about it."""

    id: str
    where: Literal["CLI", "API"]
    #: What the user did (Markdown).
    bad: str
    #: The exact line (CLI: the whole stderr line; API: ``str(exception)``); ``…`` matches anything.
    message: str
    #: What to do (Markdown; short).
    fix: str
    argv: tuple[str, ...] = ()
    #: Prepares the working folder (files to read) before the command runs.
    setup: Callable[[Path], None] | None = None
    call: Callable[[Context], object] | None = None
    error: type[BaseException] | None = None
    #: Simulates a fault the user cannot cause on demand (a missing package, a runtime that disagrees).
    patch: Callable[[pytest.MonkeyPatch], None] | None = None
    #: ``warning``: the command succeeds and its stderr has exactly one ``gbdt2nn: warning:`` line, the message
    #: (other lines, such as distill's progress, may surround it).
    outcome: Literal["error", "note", "warning"] = "error"
    #: The error comes after distill's progress lines (``✓ teacher ...``), which stderr may hold before it.
    after_progress: bool = False
    #: A section of its own in the document (cases of one issue, kept together); ``""``: by kind, as above.
    heading: str = ""
    #: A module of an optional extra the case needs (skipped without it), e.g. ``"distributed"``.
    requires: str = ""


# ------------------------------------------------------------------------------------------- file makers
def _rows(workdir: Path) -> pd.DataFrame:
    return pd.read_csv(workdir / "rows.csv")


def _write(
    name: str, change: Callable[[pd.DataFrame], pd.DataFrame], source: str = "rows.csv"
) -> Callable[[Path], None]:
    """A setup that writes ``name``: ``source`` changed by ``change``."""

    def setup(workdir: Path) -> None:
        change(pd.read_csv(workdir / source)).to_csv(workdir / name, index=False)

    return setup


def _text(name: str, content: str | bytes) -> Callable[[Path], None]:
    def setup(workdir: Path) -> None:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def _cut(source: str, name: str, keep: float = 0.5) -> Callable[[Path], None]:
    """A setup that writes the first ``keep`` of ``source``'s bytes to ``name`` (a truncated copy)."""

    def setup(workdir: Path) -> None:
        data = (workdir / source).read_bytes()
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_bytes(data[: int(len(data) * keep)])

    return setup


def _damaged_model(name: str, library: str) -> Callable[[Path], None]:
    """A setup that writes a small model file of ``library`` with one value damaged in its first tree."""

    def setup(workdir: Path) -> None:
        X = np.random.default_rng(0).random((60, 3))
        y = (X[:, 0] > 0.5).astype(float)
        if library == "lightgbm":  # the split feature indices past the last column, byte length unchanged
            text = (workdir / "run" / "teacher.txt").read_text()
            (workdir / name).write_text(
                re.sub(r"^split_feature=.*$", lambda m: re.sub(r"\d", "9", m.group(0)), text, flags=re.M)
            )
        elif library == "xgboost":
            import xgboost as xgb

            booster = xgb.train({"nthread": 1, "max_depth": 2}, xgb.DMatrix(X, label=y), 2)
            document = json.loads(bytes(booster.save_raw("json")))
            document["learner"]["gradient_booster"]["model"]["trees"][0]["split_indices"][0] = 7
            (workdir / name).write_text(json.dumps(document))
        else:
            import catboost as cb

            model = cb.CatBoostRegressor(
                iterations=2, depth=2, thread_count=1, verbose=False, allow_writing_files=False
            )
            data = model.fit(X, y)._serialize_model()
            leaf = np.asarray(model.get_leaf_values()[:1], "<f8").tobytes()
            (workdir / name).write_bytes(data.replace(leaf, np.array(np.nan, "<f8").tobytes(), 1))

    return setup


def _edit_student_json(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def setup(workdir: Path) -> None:
        path = workdir / "run" / "student.json"
        metadata = json.loads(path.read_text())
        change(metadata)
        path.write_text(json.dumps(metadata))

    return setup


def _rename_column(metadata: dict[str, Any]) -> None:
    """Rename the model's ``age`` column to ``age_years`` (a model of columns no bundled dataset has)."""
    encoder = metadata["encoder"]
    for column in encoder["schema"]:
        if column["name"] == "age":
            column["name"] = "age_years"
    encoder["state"]["age_years"] = encoder["state"].pop("age")


def _set(**values: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Overwrite the first rows of the given columns (``age=[np.inf]``)."""

    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        for column, new in values.items():
            frame[column] = frame[column].astype(object if any(isinstance(v, str) for v in new) else float)
            frame.loc[: len(new) - 1, column] = new
        return frame

    return change


def _few_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame[frame[TARGET] == 0].head(3), frame[frame[TARGET] == 1].head(2)])


def _ragged(workdir: Path) -> None:
    lines = (workdir / "train.csv").read_text().splitlines()
    lines[40] += ",1,2,3"
    (workdir / "ragged.csv").write_text("\n".join(lines))


def _parquet(workdir: Path) -> None:
    pd.read_csv(workdir / "rows.csv").to_parquet(workdir / "rows.parquet")


def _no_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError


def _disagreeing_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    from gbdt2nn_core.pipeline import export

    original = export._torchscript_runner

    def shifted(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
        run = original(data)
        return lambda z: run(z) + 0.5

    monkeypatch.setattr(export, "_torchscript_runner", shifted)


# ------------------------------------------------------------------------------------------- API calls
def _distill(frame: pd.DataFrame, target: Any = TARGET, **config: Any) -> object:
    from gbdt2nn_core.pipeline.distill import DistillConfig, distill

    options = {"teacher_options": {"n_estimators": 5, "num_threads": 1}, "cache_dir": "cache", **config}
    return distill(frame, target, DistillConfig(**options))


def _prepare(frame: pd.DataFrame, target: Any) -> object:
    from gbdt2nn_core.pipeline import DistillConfig, Pipeline

    config = DistillConfig(teacher_options={"n_estimators": 5, "num_threads": 1}, cache_dir="cache")
    return Pipeline(config).prepare(frame, target)


def _config(**values: Any) -> object:
    from gbdt2nn_core.pipeline.distill import DistillConfig

    return DistillConfig(**values)


def _alignment(**fields: Any) -> object:
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.kit.alignment import Alignment

    registry = get_registry()
    return Alignment(attributor=registry.attributor("structure"), loss=registry.alignment_loss("mse"), **fields)


def _student(**options: Any) -> object:
    from gbdt2nn_core.student import GBDT2NNStudent

    return GBDT2NNStudent(**options)


def _attribute(ctx: Context, z: Any) -> object:
    from gbdt2nn_core.student.structure import StructureAttributor

    return StructureAttributor().attribute(ctx.model.student.module, z)


def _encoded_with_nan(ctx: Context) -> Any:
    import torch

    z = torch.as_tensor(ctx.model.encode(_rows(ctx.workdir).head(4)))
    z[2, 0] = float("nan")
    return z


def _classifier(**params: Any) -> Any:
    from gbdt2nn_core.pipeline.estimator import GBDT2NNClassifier

    return GBDT2NNClassifier(
        teacher_options={"n_estimators": 5, "num_threads": 1},
        student_options={"n_groups": 2, "hidden": (8,)},
        epochs=1,
        cache_dir=False,
        **params,
    )


def _fitted_classifier(ctx: Context) -> Any:
    frame = _rows(ctx.workdir)
    return _classifier().fit(frame.drop(columns=[TARGET]), frame[TARGET])


# ------------------------------------------------------------------------------------------- issue 10 helpers
def _features(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows without the target (a note about the ignored target column would be a second line)."""
    return frame.drop(columns=[TARGET])


def _separated(name: str, separator: str) -> Callable[[Path], None]:
    def setup(workdir: Path) -> None:
        _features(_rows(workdir)).to_csv(workdir / name, index=False, sep=separator)

    return setup


def _with_index(workdir: Path) -> None:
    """train.csv written with DataFrame.to_csv's default index: an empty first header cell."""
    pd.read_csv(workdir / "train.csv").to_csv(workdir / "indexed.csv")


def _no_parquet_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("pyarrow", "fastparquet"):
        monkeypatch.setitem(sys.modules, name, None)  # import -> ImportError


def _no_parquet_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    """``DataFrame.to_parquet`` fails as pandas does without an engine (a multi-line ImportError)."""

    def fail(*args: Any, **kwargs: Any) -> None:
        raise ImportError(
            "Unable to find a usable engine; tried using: 'pyarrow', 'fastparquet'.\nA suitable version of pyarrow "
            "or fastparquet is required for parquet support.\nTrying to import the above resulted in these errors:"
        )

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)


def _cache_env(value: str) -> Callable[[pytest.MonkeyPatch], None]:
    def patch(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GBDT2NN_CACHE_DIR", value)

    return patch


def _integer_category_run(workdir: Path) -> None:
    """``intrun/``: a model distilled through the API from a ``category`` column of integers (``grade``)."""
    from gbdt2nn_core.pipeline.distill import DistillConfig, distill
    from gbdt2nn_core.pipeline.runfolder import write_run

    frame = pd.read_csv(workdir / "train.csv")[["age", "hours-per-week", "educational-num", TARGET]]
    frame["grade"] = pd.Categorical(frame["educational-num"] // 4)
    config = DistillConfig(
        teacher_options={"n_estimators": 5, "num_threads": 1},
        student_options={"epochs": 1, "n_groups": 2, "hidden": (8,)},
        cache_dir=str(workdir.parent / "intcache"),
        alignment_weight=0.0,
    )
    write_run(workdir / "intrun", distill(frame.drop(columns=["educational-num"]), TARGET, config))
    rows = pd.read_csv(workdir / "rows.csv")[["age", "hours-per-week", "educational-num"]]
    rows["grade"] = rows.pop("educational-num") // 4
    rows.loc[0, "grade"] = 42  # one category the model never saw
    rows.to_csv(workdir / "ints.csv", index=False)


def _tiny_scale_run(workdir: Path) -> None:
    """``scalerun/``: a model with a column of tiny values (``rate``, in the 1e-8s), and ``scaled.csv`` rows in
    which ``rate`` is ``1e31`` (another unit): encoded, that is beyond the 32-bit float range."""
    from gbdt2nn_core.pipeline.distill import DistillConfig, distill
    from gbdt2nn_core.pipeline.runfolder import write_run

    frame = pd.read_csv(workdir / "train.csv")[["age", "hours-per-week", TARGET]]
    frame["rate"] = frame["age"] * 1e-9
    config = DistillConfig(
        teacher_options={"n_estimators": 5, "num_threads": 1},
        student_options={"epochs": 1, "n_groups": 2, "hidden": (8,)},
        cache_dir=str(workdir.parent / "scalecache"),
        alignment_weight=0.0,
    )
    write_run(workdir / "scalerun", distill(frame, TARGET, config))
    rows = pd.read_csv(workdir / "rows.csv")[["age", "hours-per-week"]]
    rows["rate"] = rows["age"] * 1e-9
    rows.loc[[0, 2], "rate"] = 1e31
    rows.to_csv(workdir / "scaled.csv", index=False)


def _edit_weights(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Tamper with run/student.safetensors: ``change`` edits the loaded tensors in place."""

    def setup(workdir: Path) -> None:
        from safetensors.torch import load_file, save_file

        path = workdir / "run" / "student.safetensors"
        state = load_file(str(path))
        change(state)
        save_file(state, str(path))

    return setup


def _student_json(**changes: Any) -> Callable[[Path], None]:
    """Tamper with student.json: top-level keys, or ``architecture.KEY`` / ``config.KEY`` / ``state.KEY`` entries."""

    def change(metadata: dict[str, Any]) -> None:
        # format 2 keeps GBDT2NN's architecture in the student's state and its config as the student's options
        sections = {
            "architecture": metadata["student_state"]["architecture"],
            "config": metadata["student_options"],
            "state": metadata["student_state"],
        }
        for key, value in changes.items():
            section, _, name = key.partition("__")
            if name:
                sections[section][name] = value
            elif value is _DROP:
                metadata.pop(key)
            else:
                metadata[key] = value

    return _edit_student_json(change)


_DROP = object()
REL = "Issue 10: "


HAS_ESTIMATOR = (ROOT / "gbdt2nn_core" / "pipeline" / "estimator.py").is_file()
_ALL_ATTRIBUTORS = "gradient, gradient-x-input, integrated-gradients, shap, structure"
_STUDENT_OPTIONS = (
    "n_groups, features_per_group, embedding_dim, hidden, leaf_epochs, leaf_dropout, epochs, early_stopping, "
    "patience, weight_average_epochs, clip_gradients, calibrate, batch_size, lr, lr_schedule, "
    "weight_decay, beta0, beta_decay, beta_step, beta_floor, standardize_targets, alignment_cap, "
    "alignment_backoff, alignment_in_teacher_units, teacher_weight, recalibrate_batchnorm, sync_batchnorm, seed"
)
_RUN_FOLDER = "pass a run folder written by 'gbdt2nn distill' (it holds student.safetensors and student.json)"
_LGB_FIX = "save the model again (Booster.save_model or teacher.save), or pass model=None to train a new one"

E = "gbdt2nn: error: "

CASES: list[Case] = [
    # ---------------------------------------------------------------- data files (distill)
    Case(
        id="data-missing",
        where="CLI",
        bad="`distill --data` names a file that does not exist",
        argv=("distill", "--data", "nowhere.csv", "--target", TARGET, "--out", "out"),
        message=E + "data file 'nowhere.csv' does not exist; check the path passed to --data",
        fix="check the path",
    ),
    Case(
        id="data-folder",
        where="CLI",
        bad="`--data` is a folder",
        argv=("distill", "--data", "run", "--target", TARGET, "--out", "out"),
        message=E + "'run' is a directory, not a data file; pass a .csv or .parquet file",
        fix="pass the file inside it",
    ),
    Case(
        id="data-format",
        where="CLI",
        bad="`--data` has an unknown extension (`train.txt`)",
        setup=_write("train.txt", lambda f: f, "train.csv"),
        argv=("distill", "--data", "train.txt", "--target", TARGET, "--out", "out"),
        message=E + "cannot tell the format of 'train.txt'; use a .csv, .csv.gz or .parquet file",
        fix="rename it `.csv` (or `.parquet`)",
    ),
    Case(
        id="csv-ragged",
        where="CLI",
        bad="corrupt CSV: a row with more fields than the header",
        setup=_ragged,
        argv=("distill", "--data", "ragged.csv", "--target", TARGET, "--out", "out"),
        message=E + "cannot read ragged.csv: ParserError: Error tokenizing data. C error: Expected 15 fields in "
        "line 41, saw 18; check that the file is a complete, valid CSV or Parquet file",
        fix="repair or re-export the file",
    ),
    Case(
        id="csv-empty-file",
        where="CLI",
        bad="an empty file (0 bytes)",
        setup=_text("empty.csv", b""),
        argv=("distill", "--data", "empty.csv", "--target", TARGET, "--out", "out"),
        message=E + "cannot read empty.csv: EmptyDataError: No columns to parse from file; check that the file is "
        "a complete, valid CSV or Parquet file",
        fix="pass the file with data in it",
    ),
    Case(
        id="csv-header-only",
        where="CLI",
        bad="a CSV with a header and no rows",
        setup=_write("header.csv", lambda f: f.head(0), "train.csv"),
        argv=("distill", "--data", "header.csv", "--target", TARGET, "--out", "out"),
        message=E + "header.csv has no rows or no columns; pass a file with data in it",
        fix="pass the file with data in it",
    ),
    Case(
        id="gzip-truncated",
        where="CLI",
        bad="a truncated `.csv.gz` (an interrupted download)",
        setup=lambda w: (_write("full.csv.gz", lambda f: f, "train.csv")(w), _cut("full.csv.gz", "cut.csv.gz")(w)),
        argv=("distill", "--data", "cut.csv.gz", "--target", TARGET, "--out", "out"),
        message=E + "cannot read cut.csv.gz: EOFError: Compressed file ended before the end-of-stream marker was "
        "reached; check that the file is a complete, valid CSV or Parquet file",
        fix="download or compress it again",
    ),
    Case(
        id="parquet-corrupt",
        where="CLI",
        bad="a `.parquet` file that is not Parquet",
        setup=_text("bad.parquet", b"PAR1 this is not parquet"),
        argv=("predict", "--model", "run", "--data", "bad.parquet", "--out", "pred.csv"),
        message=E + "cannot read bad.parquet: ArrowInvalid: …; check that the file is a complete, valid CSV or "
        "Parquet file",
        fix="write the file again (`DataFrame.to_parquet`)",
    ),
    Case(
        id="parquet-truncated",
        where="CLI",
        bad="a truncated Parquet file",
        setup=lambda w: (_parquet(w), _cut("rows.parquet", "cut.parquet")(w)),
        argv=("predict", "--model", "run", "--data", "cut.parquet", "--out", "pred.csv"),
        message=E + "cannot read cut.parquet: ArrowInvalid: …; check that the file is a complete, valid CSV or "
        "Parquet file",
        fix="write the file again",
    ),
    # ---------------------------------------------------------------- target and task
    Case(
        id="target-flag-missing",
        where="CLI",
        bad="`distill --data` without `--target`",
        argv=("distill", "--data", "train.csv", "--out", "out"),
        message=E + "--data needs --target; name the target column with --target COL",
        fix="add `--target COL`",
    ),
    Case(
        id="out-flag-missing",
        where="CLI",
        bad="`distill --data` without `--out`",
        argv=("distill", "--data", "train.csv", "--target", TARGET),
        message=E + "--data needs --out; name a run folder to write with --out DIR",
        fix="add `--out DIR`",
    ),
    Case(
        id="target-typo",
        where="CLI",
        bad="`--target` names a column that is not in the data",
        argv=("distill", "--data", "train.csv", "--target", "income", "--out", "out"),
        message=E + "target column 'income' is not in the data; did you mean 'income_gt_50k'? Pass one of the 15 "
        "columns as the target",
        fix="use the suggested name",
    ),
    Case(
        id="target-one-class",
        where="CLI",
        bad="one-class target (every row has the same label)",
        setup=_write("one.csv", lambda f: f.assign(**{TARGET: 0}), "train.csv"),
        argv=("distill", "--data", "one.csv", "--target", TARGET, "--out", "out"),
        message=E + "the target has a single class (0); a classifier needs at least two; check the target column "
        "or the rows selected",
        fix="select rows of at least two classes",
    ),
    Case(
        id="target-missing-values",
        where="CLI",
        bad="missing values (NaN) in the target",
        setup=_write("nan.csv", _set(**{TARGET: [np.nan] * 3}), "train.csv"),
        argv=("distill", "--data", "nan.csv", "--target", TARGET, "--out", "out"),
        message=E + "the target has 3 missing value(s); drop those rows first",
        fix="drop the rows without a label",
    ),
    Case(
        id="target-infinite",
        where="CLI",
        bad="infinite values in a regression target",
        setup=_write("inf.csv", _set(**{"hours-per-week": [np.inf]}), "train.csv"),
        argv=("distill", "--data", "inf.csv", "--target", "hours-per-week", "--task", "regression", "--out", "out"),
        message=E + "the target contains infinite values; drop or fix those rows",
        fix="drop or fix the rows",
    ),
    Case(
        id="task-binary-many-classes",
        where="CLI",
        bad="`--task binary` for a target with six classes",
        argv=(*DISTILL[:4], "relationship", "--task", "binary", "--out", "out"),
        message=E + "task 'binary' but the target has 6 classes; pass --task multiclass (or --task regression for "
        "a numeric target)",
        fix="`--task multiclass`",
    ),
    Case(
        id="task-regression-labels",
        where="CLI",
        bad="`--task regression` for a text target",
        argv=(*DISTILL[:4], "workclass", "--task", "regression", "--out", "out"),
        message=E + "a regression target must be numeric but holds non-numbers; pass --task binary/multiclass for "
        "labels, or clean the target",
        fix="`--task multiclass` (or leave `--task` out)",
    ),
    Case(
        id="task-unknown",
        where="CLI",
        bad="`--task classification` (not a task)",
        argv=(*DISTILL, "--task", "classification"),
        message=E + "argument --task: invalid choice: 'classification' (choose from …) (see 'gbdt2nn distill --help')",
        fix="one of `regression`, `binary`, `multiclass`",
    ),
    Case(
        id="feature-infinite",
        where="CLI",
        bad="`inf` in a feature column",
        setup=_write("inf.csv", _set(age=[np.inf]), "train.csv"),
        argv=("distill", "--data", "inf.csv", "--target", TARGET, "--out", "out"),
        message=E + "column 'age' contains infinite values; replace inf with NaN (missing) or a finite value",
        fix="replace `inf` with an empty cell (missing)",
    ),
    Case(
        id="too-few-rows",
        where="CLI",
        bad="five rows of data",
        setup=_write("five.csv", _few_rows, "train.csv"),
        argv=("distill", "--data", "five.csv", "--target", TARGET, "--out", "out"),
        message=E + "only 5 rows; distil from at least 10 rows",
        fix="more rows",
    ),
    # ---------------------------------------------------------------- settings
    Case(
        id="epochs-zero",
        where="CLI",
        bad="`--epochs 0`",
        argv=(*DISTILL, "--epochs", "0"),
        message=E + "invalid --epochs=0: use a whole number of at least 1",
        fix="`--epochs 1` or more",
    ),
    Case(
        id="epochs-negative",
        where="CLI",
        bad="`--epochs -3`",
        argv=(*DISTILL, "--epochs", "-3"),
        message=E + "invalid --epochs=-3: use a whole number of at least 1",
        fix="`--epochs 1` or more",
    ),
    Case(
        id="epochs-not-a-number",
        where="CLI",
        bad="`--epochs ten`",
        argv=(*DISTILL, "--epochs", "ten"),
        message=E + "argument --epochs: invalid int value: 'ten' (see 'gbdt2nn distill --help')",
        fix="a whole number",
    ),
    Case(
        id="lambda-negative",
        where="CLI",
        bad="λ < 0: `--alignment-weight -0.5`",
        argv=(*DISTILL, "--alignment-weight", "-0.5"),
        message=E + "invalid alignment_weight=-0.5: use a finite number of at least 0 (0 = plain)",
        fix="λ ≥ 0 (0 = plain distillation)",
    ),
    Case(
        id="lambda-nan",
        where="CLI",
        bad="`--alignment-weight nan`",
        argv=(*DISTILL, "--alignment-weight", "nan"),
        message=E + "invalid alignment_weight=nan: use a finite number of at least 0 (0 = plain)",
        fix="a finite λ ≥ 0",
    ),
    Case(
        id="alignment-rows-zero",
        where="CLI",
        bad="no aligned rows: `--alignment-rows 0`",
        argv=(*DISTILL, "--alignment-rows", "0"),
        message=E + "invalid alignment_rows=0.0: use a number in (0, 1]",
        fix="a share of the training rows in (0, 1] (1 = all)",
    ),
    Case(
        id="alignment-rows-count",
        where="CLI",
        bad="a row count instead of a share: `--alignment-rows 5000`",
        argv=(*DISTILL, "--alignment-rows", "5000"),
        message=E + "invalid alignment_rows=5000.0: use a number in (0, 1]",
        fix="the share of training rows, e.g. 0.1 for a tenth",
    ),
    Case(
        id="alignment-min-rows-negative",
        where="CLI",
        bad="a negative floor of aligned rows: `--alignment-min-rows -1`",
        argv=(*DISTILL, "--alignment-min-rows", "-1"),
        message=E + "invalid alignment_min_rows=-1: use a whole number of rows of at least 0 (0 = no floor)",
        fix="a number of rows, e.g. 3000 (0 = no floor)",
    ),
    Case(
        id="alignment-min-rows-share",
        where="CLI",
        bad="a share instead of a row count: `--alignment-min-rows 0.5`",
        argv=(*DISTILL, "--alignment-min-rows", "0.5"),
        message=E + "argument --alignment-min-rows: invalid int value: '0.5' (see 'gbdt2nn distill --help')",
        fix="a whole number of rows (the share is `--alignment-rows`)",
    ),
    Case(
        id="threads-zero",
        where="CLI",
        bad="`--threads 0`",
        argv=(*DISTILL, "--threads", "0"),
        message=E + "invalid threads=0: use a whole number of at least 1",
        fix="`--threads 1` or more (default: every core)",
    ),
    Case(
        id="validation-fraction-count",
        where="CLI",
        bad="a row count instead of a share: `--validation-fraction 500`",
        argv=(*DISTILL, "--validation-fraction", "500"),
        message=E + "invalid validation_fraction=500.0: use a number in [0, 0.5), e.g. 0.1 (0 = none)",
        fix="the share of training rows the student holds out, e.g. 0.1",
    ),
    Case(
        id="synthetic-rows-share",
        where="CLI",
        bad="a negative count: `--synthetic-rows -1`",
        argv=(*DISTILL, "--synthetic-rows", "-1"),
        message=E + "invalid synthetic_rows=-1: use auto (chosen from the task) or a whole number of at least 0",
        fix="synthetic rows per training row, e.g. 2, or auto (0 = none)",
    ),
    Case(
        id="student-patience-zero",
        where="CLI",
        bad="`--student-option patience=0`",
        argv=(*DISTILL, "--student-option", "patience=0"),
        message=E + "invalid patience=0: use a whole number of at least 1",
        fix="wait at least one epoch without improvement (or early_stopping=false)",
    ),
    Case(
        id="student-standardize-targets-word",
        where="CLI",
        bad="`--student-option standardize_targets=yes`",
        argv=(*DISTILL, "--student-option", "standardize_targets=yes"),
        message=E + "invalid standardize_targets='yes': use true or false",
        fix="`standardize_targets=true` (the default) or `false` (train in the target's own units)",
    ),
    Case(
        id="student-hidden-zero-width",
        where="CLI",
        bad="`--student-option hidden=100,0` (a layer of width 0; `hidden=200,200` and `hidden=[200, 200]` work)",
        argv=(*DISTILL, "--student-option", "hidden=100,0"),
        message=E + "invalid hidden='100,0': give one or more positive layer widths, e.g. 100,100,100,50 (TOML: "
        "[100, 100, 100, 50])",
        fix="widths of at least 1, comma-separated or as a TOML list",
    ),
    Case(
        id="student-alignment-cap-negative",
        where="CLI",
        bad="`--student-option alignment_cap=-1`",
        argv=(*DISTILL, "--student-option", "alignment_cap=-1"),
        message=E + "invalid alignment_cap=-1: use a finite number of at least 0",
        fix="a multiple of the task loss, e.g. 1 (the default), or 0 for no cap",
    ),
    Case(
        id="student-beta-floor-above-one",
        where="CLI",
        bad="`--student-option beta_floor=1.5`",
        argv=(*DISTILL, "--student-option", "beta_floor=1.5"),
        message=E + "invalid beta_floor=1.5: use auto (chosen from the task) or a number between 0 and 1",
        fix="`beta_floor=auto` (the default: 0.1 for regression, 0.3 for classification) or e.g. `beta_floor=0.3`",
    ),
    Case(
        id="alignment-fraction-above-one",
        where="CLI",
        bad="`--alignment-fraction 2`",
        argv=(*DISTILL, "--alignment-fraction", "2"),
        message=E + "invalid alignment_fraction=2.0: use a number in (0, 1]",
        fix="a share of the batches in (0, 1]",
    ),
    Case(
        id="alignment-options-without-a-loss",
        where="CLI",
        bad="`--alignment-option temperature=0.5` without `--alignment`",
        argv=(*DISTILL, "--alignment-option", "temperature=0.5"),
        message=E + "invalid alignment_options={'temperature': 0.5}: name the loss they are for (e.g. "
        'alignment="rank"); "auto" takes each loss\'s defaults',
        fix="`--alignment rank --alignment-option temperature=0.5`: options belong to one loss, and the default "
        "`auto` may choose another",
    ),
    Case(
        id="alignment-batches-unknown",
        where="CLI",
        bad='`batches = "random"` in the `[alignment]` table of the `--config` file',
        setup=_text("run.toml", '[alignment]\nbatches = "random"\n'),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid alignment_batches='random': use 'grouped' or 'mixed'",
        fix="`grouped` (the default) or `mixed`",
    ),
    Case(
        id="test-size-above-one",
        where="CLI",
        bad="`test_size = 1.5` in the `--config` file",
        setup=_text("run.toml", "[run]\ntest_size = 1.5\n"),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid test_size=1.5: use a number between 0 and 1, e.g. 0.2",
        fix="a share of rows strictly between 0 and 1",
    ),
    Case(
        id="test-size-one",
        where="CLI",
        bad="`test_size = 1` (no training rows left)",
        setup=_text("run.toml", "[run]\ntest_size = 1\n"),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid test_size=1: use a number between 0 and 1, e.g. 0.2",
        fix="a share of rows strictly between 0 and 1",
    ),
    Case(
        id="threshold-bins-negative",
        where="CLI",
        bad="`threshold_bins = -1` in the `--config` file",
        setup=_text("run.toml", "[run]\nthreshold_bins = -1\n"),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid threshold_bins=-1: use a whole number of at least 0 (0 = no bins)",
        fix="0 or more",
    ),
    Case(
        id="merge-categories-not-boolean",
        where="CLI",
        bad='`merge_categories = "yes"` in the `--config` file',
        setup=_text("run.toml", '[run]\nmerge_categories = "yes"\n'),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid merge_categories='yes': use true or false",
        fix="true or false",
    ),
    Case(
        id="n-groups-zero",
        where="CLI",
        bad="`--student-option n_groups=0`",
        argv=(*DISTILL, "--student-option", "n_groups=0"),
        message=E + "invalid n_groups=0: use a whole number of at least 1",
        fix="1 or more groups",
    ),
    Case(
        id="batch-size-zero",
        where="CLI",
        bad="`--student-option batch_size=0`",
        argv=(*DISTILL, "--student-option", "batch_size=0"),
        message=E + "invalid batch_size=0: use auto (from the number of training rows) or a whole number of at least 2 "
        "(BatchNorm needs two rows per batch)",
        fix="a batch size of 2 or more",
    ),
    Case(
        id="student-option-unknown",
        where="CLI",
        bad="unknown student option (`--student-option epoch=3`)",
        argv=(*DISTILL, "--student-option", "epoch=3"),
        message=E + f"invalid student option='epoch': did you mean 'epochs'? use one of {_STUDENT_OPTIONS}",
        fix="spell it as listed (`epochs`)",
    ),
    Case(
        id="option-without-value",
        where="CLI",
        bad="`--teacher-option n_estimators` (no `=VALUE`)",
        argv=(*DISTILL, "--teacher-option", "n_estimators"),
        message=E + "invalid --teacher-option='n_estimators': write KEY=VALUE, e.g. n_estimators=50",
        fix="`--teacher-option n_estimators=50`",
    ),
    Case(
        id="teacher-option-unknown",
        where="CLI",
        bad="misspelt teacher option (`--teacher-option num_leave=4`)",
        argv=(*DISTILL, "--teacher-option", "num_leave=4"),
        message=E + "invalid teacher option='num_leave': did you mean 'num_leaves'? LightGBM does not know it; "
        "it takes n_estimators, num_leaves, learning_rate and the other LightGBM parameters",
        fix="spell it as suggested (`num_leaves=4`)",
    ),
    # ---------------------------------------------------------------- plugins
    Case(
        id="teacher-unknown",
        where="CLI",
        bad="misspelt teacher (`--teacher lightgmb`)",
        argv=(*DISTILL, "--teacher", "lightgmb"),
        message=E
        + "No teacher named 'lightgmb'. Did you mean 'lightgbm'? Installed teachers: catboost, lightgbm, xgboost.",
        fix="use the suggested name",
    ),
    Case(
        id="attributor-unknown",
        where="CLI",
        bad="misspelt attributor (`--attributor gradiant`)",
        argv=(*DISTILL, "--attributor", "gradiant"),
        message=E + f"No attributor named 'gradiant'. Did you mean 'gradient'? Installed attributors: "
        f"{_ALL_ATTRIBUTORS}.",
        fix="use the suggested name",
    ),
    Case(
        id="loss-unknown",
        where="CLI",
        bad="unknown alignment loss (`--alignment huber`)",
        argv=(*DISTILL, "--alignment", "huber"),
        message=E + "No alignment loss named 'huber'. Installed alignment losses: cosine, mse, rank. Run 'gbdt2nn "
        "plugins' to see what is installed and what failed to load.",
        fix="one of the installed losses, or install the plugin",
    ),
    # ---------------------------------------------------------------- TOML run files
    Case(
        id="config-missing",
        where="CLI",
        bad="`--config` names a file that does not exist",
        argv=(*DISTILL, "--config", "nowhere.toml"),
        message=E + "invalid --config='nowhere.toml': pass the path of an existing TOML file",
        fix="check the path",
    ),
    Case(
        id="config-syntax",
        where="CLI",
        bad="TOML syntax error in the `--config` file",
        setup=_text("run.toml", "[run\nseed = 1\n"),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid --config='run.toml': fix the TOML syntax (…)",
        fix="fix the line the message names",
    ),
    Case(
        id="config-section",
        where="CLI",
        bad="unknown section `[training]` in the `--config` file",
        setup=_text("run.toml", "[training]\nepochs = 3\n"),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid run.toml section='[training]': use the sections [data], [teacher], [student], "
        "[attributor], [alignment], [run]",
        fix="move the setting to its section (`[student] options = { epochs = 3 }`)",
    ),
    Case(
        id="config-key",
        where="CLI",
        bad="unknown key `epochs` in `[run]`",
        setup=_text("run.toml", "[run]\nepochs = 3\n"),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid run.toml [run] key='epochs': [run] takes background_rows, cache, cache_dir, compare, "
        "device, merge_categories, out, seed, spill_bytes, synthetic_rows, teacher_explanation, test_size, threads, "
        "threshold_bins, validation_fraction",
        fix="use a listed key, or `--epochs`",
    ),
    Case(
        id="config-type",
        where="CLI",
        bad='a setting of the wrong type (`test_size = "big"`)',
        setup=_text("run.toml", '[run]\ntest_size = "big"\n'),
        argv=(*DISTILL, "--config", "run.toml"),
        message=E + "invalid test_size='big': use a number between 0 and 1, e.g. 0.2",
        fix="a number",
    ),
    # ---------------------------------------------------------------- the run folder
    Case(
        id="out-exists",
        where="CLI",
        bad="`distill --out` is a folder that is not empty",
        setup=_text("out/keep.txt", "mine"),
        argv=DISTILL,
        message=E + "the output folder 'out' already exists and is not empty; pass --overwrite or choose another --out",
        fix="`--overwrite` (replaces it) or another `--out`",
    ),
    Case(
        id="out-is-file",
        where="CLI",
        bad="`distill --out` is a file",
        setup=_text("out", "a file"),
        argv=DISTILL,
        message=E + "--out 'out' is a file; choose a folder path for the run",
        fix="a folder path",
    ),
    Case(
        id="data-and-dataset",
        where="CLI",
        bad="both `--data` and `--dataset`",
        argv=(*DISTILL, "--dataset", "adult"),
        message=E + "both --data and --dataset were given; pass only one of them",
        fix="drop one",
    ),
    Case(
        id="dataset-unknown",
        where="CLI",
        bad="`--dataset adlt` (no such bundled dataset)",
        argv=("distill", "--dataset", "adlt"),
        message=E + "no bundled dataset named 'adlt'; choose one of adult, california or pass --data FILE",
        fix="`adult` or `california`",
    ),
    # ---------------------------------------------------------------- --teacher-model
    Case(
        id="teacher-model-missing",
        where="CLI",
        bad="`--teacher-model` names a file that does not exist",
        argv=(*DISTILL, "--teacher-model", "nowhere.txt"),
        message=E + "teacher model file 'nowhere.txt' does not exist; check --teacher-model",
        fix="check the path",
    ),
    Case(
        id="teacher-model-truncated",
        where="CLI",
        bad="a truncated LightGBM model file",
        setup=_cut("run/teacher.txt", "cut.txt"),
        argv=(*DISTILL[:7], "--teacher-model", "cut.txt"),
        message=E + f"cannot load model from cut.txt: truncated or corrupt: the 'end of trees' marker is missing; "
        f"{_LGB_FIX}",
        fix="save the booster again",
    ),
    Case(
        id="teacher-model-not-a-model",
        where="CLI",
        bad="`--teacher-model` is not a model (a CSV file)",
        argv=(*DISTILL[:7], "--teacher-model", "train.csv"),
        message=E + f"cannot load model from train.csv: not a LightGBM text model (it does not start with 'tree'); "
        f"{_LGB_FIX}",
        fix="pass the booster's model file",
    ),
    Case(
        id="teacher-model-other-library",
        where="CLI",
        bad="a LightGBM model file with `--teacher xgboost`",
        argv=(*DISTILL[:7], "--teacher", "xgboost", "--teacher-model", "run/teacher.txt"),
        message=E + "cannot load model from run/teacher.txt: not a readable XGBoost model (…); save the model "
        "again (Booster.save_model or teacher.save), or pass model=None to train a new one",
        fix="`--teacher lightgbm`",
    ),
    Case(
        id="teacher-model-feature-index",
        where="CLI",
        bad="a LightGBM model file whose trees split on columns past the last one (it used to crash the process)",
        setup=_damaged_model("bad.txt", "lightgbm"),
        argv=(*DISTILL[:7], "--teacher-model", "bad.txt"),
        message=E
        + f"cannot load model from bad.txt: corrupt: tree 0: split_feature[0] is …, outside 0..13; {_LGB_FIX}",
        fix="save the booster again",
    ),
    Case(
        id="teacher-model-xgboost-tree",
        where="CLI",
        bad="an XGBoost model file whose trees name a feature, child or array size that does not exist",
        setup=_damaged_model("bad.json", "xgboost"),
        argv=(*DISTILL[:7], "--teacher", "xgboost", "--teacher-model", "bad.json"),
        message=E + f"cannot load model from bad.json: tree 0: split_indices holds values outside 0..2; {_LGB_FIX}",
        fix="save the booster again",
    ),
    Case(
        id="teacher-model-catboost-damaged",
        where="CLI",
        bad="a damaged CatBoost `.cbm` file (CatBoost itself may crash on one: it is tried in a child process first)",
        setup=_damaged_model("bad.cbm", "catboost"),
        argv=(*DISTILL[:7], "--teacher", "catboost", "--teacher-model", "bad.cbm"),
        message=E + "cannot load model from bad.cbm: not a readable CatBoost model (…); save the model again "
        "(CatBoost.save_model or teacher.save), or pass model=None to train a new one",
        fix="save the model again",
    ),
    Case(
        id="teacher-model-catboost-foreign",
        where="CLI",
        bad="`--teacher catboost` with a file that is not a `.cbm` model",
        argv=(*DISTILL[:7], "--teacher", "catboost", "--teacher-model", "run/teacher.txt"),
        message=E + "cannot load model from run/teacher.txt: not a CatBoost model (.cbm files start with 'CBM1'); "
        "save the model again (CatBoost.save_model or teacher.save), or pass model=None to train a new one",
        fix="`--teacher lightgbm`, or the `.cbm` file",
    ),
    Case(
        id="teacher-model-columns",
        where="CLI",
        bad="data whose columns differ from the `--teacher-model` booster's",
        setup=_write("renamed.csv", lambda f: f.rename(columns={"age": "years"}), "train.csv"),
        argv=(
            "distill",
            "--data",
            "renamed.csv",
            "--target",
            TARGET,
            "--out",
            "out",
            "--teacher-model",
            "run/teacher.txt",
        ),
        message=E + "X's columns do not match the booster's 14 features: missing ['age']; unexpected ['years']; "
        "pass X[teacher.feature_names], the columns the booster was trained on, in its order",
        fix="rename the columns to the booster's",
    ),
    Case(
        id="teacher-model-task",
        where="CLI",
        bad="`--task regression` with a binary `--teacher-model` booster",
        argv=(*DISTILL[:7], "--task", "regression", "--teacher-model", "run/teacher.txt"),
        message=E + "invalid task='regression': the booster's objective 'binary' solves binary; pass "
        "task='binary' or wrap another model",
        fix="leave `--task` out (or `--task binary`)",
    ),
    # ---------------------------------------------------------------- --model (predict, explain, export)
    Case(
        id="model-missing",
        where="CLI",
        bad="`predict --model` names a folder that does not exist",
        argv=("predict", "--model", "nowhere", "--data", "rows.csv", "--out", "pred.csv"),
        message=E + f"cannot load model from nowhere: no such folder; {_RUN_FOLDER}",
        fix="check the path",
    ),
    Case(
        id="model-is-a-file",
        where="CLI",
        bad="`--model` is a file of the run folder",
        argv=("predict", "--model", "run/student.safetensors", "--data", "rows.csv", "--out", "pred.csv"),
        message=E + "cannot load model from run/student.safetensors: it is a file, not a run folder; pass the "
        "folder that holds it ('run')",
        fix="pass the folder",
    ),
    Case(
        id="model-not-a-run",
        where="CLI",
        bad="`--model` is a folder without a student",
        setup=_text("empty/readme.txt", "nothing here"),
        argv=("predict", "--model", "empty", "--data", "rows.csv", "--out", "pred.csv"),
        message=E + "cannot load model from empty: student.json or student.safetensors is missing; pass a folder "
        "written by 'gbdt2nn distill'",
        fix="pass a run folder",
    ),
    Case(
        id="weights-truncated",
        where="CLI",
        bad="truncated `student.safetensors`",
        setup=_cut("run/student.safetensors", "run/student.safetensors"),
        argv=PREDICT,
        message=E + "cannot load model from run: student.safetensors is corrupt or truncated (…); re-run the "
        "distillation",
        fix="copy the run folder again, or re-run `gbdt2nn distill`",
    ),
    Case(
        id="student-json-truncated",
        where="CLI",
        bad="truncated `student.json`",
        setup=_cut("run/student.json", "run/student.json"),
        argv=PREDICT,
        message=E + "cannot load model from run: student.json is corrupt (…); re-run the distillation",
        fix="copy the run folder again, or re-run `gbdt2nn distill`",
    ),
    Case(
        id="student-json-newer",
        where="CLI",
        bad="`student.json` written by a newer gbdt2nn",
        setup=_edit_student_json(lambda m: m.update(format_version=m["format_version"] + 1)),
        argv=PREDICT,
        message=E + "cannot load model from run: it was written in format 3, newer than this gbdt2nn reads (2); "
        "upgrade gbdt2nn-core (pip install -U gbdt2nn-core)",
        fix="upgrade gbdt2nn-core",
    ),
    Case(
        id="student-json-mismatch",
        where="CLI",
        bad="`student.json` and `student.safetensors` from different runs",
        setup=_edit_student_json(lambda m: m["student_state"]["architecture"].update(hidden=[3, 3])),
        argv=PREDICT,
        message=E + "cannot load model from run: the files do not fit together: student.json declares … of shape … "
        "but student.safetensors holds …; re-run the distillation",
        fix="keep the two files of one run together",
    ),
    Case(
        id="student-json-temperature",
        where="CLI",
        bad="a `student.json` whose calibration temperature is not a number > 0",
        setup=_edit_student_json(lambda m: m["student_state"]["calibration"].update(temperature=-1)),
        argv=PREDICT,
        message=E + "cannot load model from student.json: student_state.calibration.temperature is -1, not a "
        "number > 0; save the model again with this version",
        fix="re-run the distillation (the file was edited or damaged)",
    ),
    # ---------------------------------------------------------------- rows for a saved student
    Case(
        id="rows-missing-column",
        where="CLI",
        bad="`--data` lacks a column the student was trained on",
        setup=_write("no_age.csv", lambda f: f.drop(columns=["age"])),
        argv=("predict", "--model", "run", "--data", "no_age.csv", "--out", "pred.csv"),
        message=E + "no_age.csv lacks column(s) 'age' that the model was trained on; pass a --data file with the "
        "model's columns (14 in all; see student.json)",
        fix="add the column (empty cells are allowed: missing)",
    ),
    Case(
        id="rows-text-in-numeric",
        where="CLI",
        bad="text in a numeric column",
        setup=_write("text.csv", _set(age=["old", "young"])),
        argv=("predict", "--model", "run", "--data", "text.csv", "--out", "pred.csv"),
        message=E + "column 'age' should be numeric but holds text such as 'old' in 2 row(s); clean the column or "
        "declare it categorical",
        fix="clean the column",
    ),
    Case(
        id="rows-infinite",
        where="CLI",
        bad="`inf` in a numeric column at prediction time",
        setup=_write("inf.csv", _set(**{"capital-gain": [np.inf, -np.inf]})),
        argv=("explain", "--model", "run", "--data", "inf.csv", "--out", "attr.csv"),
        message=E + "column 'capital-gain' contains infinite values; replace inf with NaN (missing) or a finite value",
        fix="replace `inf` with an empty cell (missing)",
    ),
    Case(
        id="rows-empty",
        where="CLI",
        bad="`--data` with a header and no rows",
        setup=_write("none.csv", lambda f: f.head(0)),
        argv=("predict", "--model", "run", "--data", "none.csv", "--out", "pred.csv"),
        message=E + "none.csv has no rows or no columns; pass a file with data in it",
        fix="pass rows",
    ),
    Case(
        id="predict-out-exists",
        where="CLI",
        bad="`predict --out` exists",
        setup=_text("pred.csv", "old predictions"),
        argv=PREDICT,
        message=E + "--out 'pred.csv' already exists; pass --overwrite or choose another --out",
        fix="`--overwrite` or another `--out`",
    ),
    Case(
        id="predict-out-folder",
        where="CLI",
        bad="`predict --out` is a folder",
        argv=("predict", "--model", "run", "--data", "rows.csv", "--out", "run"),
        message=E + "--out 'run' is a folder; pass a file path for --out",
        fix="a file path",
    ),
    Case(
        id="predict-out-format",
        where="CLI",
        bad="`--out pred.xlsx` (unknown format)",
        argv=("predict", "--model", "run", "--data", "rows.csv", "--out", "pred.xlsx"),
        message=E + "cannot tell the output format of 'pred.xlsx'; name --out *.csv, *.csv.gz or *.parquet",
        fix="`.csv`, `.csv.gz` or `.parquet`",
    ),
    Case(
        id="predict-out-no-folder",
        where="CLI",
        bad="the folder of `--out` does not exist",
        argv=("predict", "--model", "run", "--data", "rows.csv", "--out", "nowhere/pred.csv"),
        message=E + "the folder of --out ('nowhere') does not exist; create it first or choose another --out",
        fix="create the folder",
    ),
    Case(
        id="keep-unknown",
        where="CLI",
        bad="`--keep id` for a column the data lacks",
        argv=(*PREDICT, "--keep", "id"),
        message=E + "--keep column(s) 'id' are not in the data; check the names",
        fix="name a column of `--data`",
    ),
    Case(
        id="explain-attributor-unknown",
        where="CLI",
        bad="`explain --attributor gradiant`",
        argv=(*EXPLAIN, "--attributor", "gradiant"),
        message=E + f"No attributor named 'gradiant'. Did you mean 'gradient'? Installed attributors: "
        f"{_ALL_ATTRIBUTORS}.",
        fix="use the suggested name",
    ),
    Case(
        id="explain-attributor-option",
        where="CLI",
        bad="an option the attributor refuses (`--attributor-option samples=0` for `shap`)",
        argv=(*EXPLAIN, "--attributor", "shap", "--attributor-option", "samples=0"),
        message=E + "invalid samples=0: use an integer >= 1",
        fix="a valid value",
    ),
    Case(
        id="explain-layout",
        where="CLI",
        bad="`explain --layout tall`",
        argv=(*EXPLAIN, "--layout", "tall"),
        message=E + "argument --layout: invalid choice: 'tall' (choose from …) (see 'gbdt2nn explain --help')",
        fix="`wide` or `long`",
    ),
    # ---------------------------------------------------------------- export
    Case(
        id="export-format-unknown",
        where="CLI",
        bad="`export --format tflite`",
        argv=(*EXPORT, "--format", "tflite"),
        message=E + "argument --format: invalid choice: 'tflite' (choose from …) (see 'gbdt2nn export --help')",
        fix="`torchscript` or `onnx`",
    ),
    Case(
        id="export-format-unclear",
        where="CLI",
        bad="`export --out model.bin` without `--format`",
        argv=("export", "--model", "run", "--out", "model.bin"),
        message=E + "cannot tell the export format from the name 'model.bin'; pass --format torchscript or "
        "--format onnx, or name the file *.pt or *.onnx",
        fix="`--format` or a `.pt` / `.onnx` name",
    ),
    Case(
        id="export-tolerance",
        where="CLI",
        bad="`export --tolerance -1`",
        argv=(*EXPORT, "--tolerance", "-1"),
        message=E + "invalid tolerance=-1.0: use a positive number, e.g. 1e-4",
        fix="a positive tolerance",
    ),
    Case(
        id="export-out-exists",
        where="CLI",
        bad="`export --out` exists",
        setup=_text("model.pt", "an older export"),
        argv=EXPORT,
        message=E + "--out 'model.pt' already exists; pass --overwrite or choose another --out",
        fix="`--overwrite` or another `--out`",
    ),
    Case(
        id="export-no-rows",
        where="CLI",
        bad="`export` without `--data` for a model of columns no bundled dataset has",
        setup=_edit_student_json(_rename_column),
        argv=EXPORT,
        message=E + "no real rows to check the export on: no bundled dataset has the model's columns ('age_years', "
        "'workclass', 'fnlwgt', 'education', ...); pass rows with those columns (--data FILE, or rows=frame)",
        fix="`--data FILE` with the model's columns",
    ),
    Case(
        id="export-rows-missing-column",
        where="CLI",
        bad="`export --data` lacks a column of the model",
        setup=_write("no_age.csv", lambda f: f.drop(columns=["age"])),
        argv=(*EXPORT, "--data", "no_age.csv"),
        message=E + "no_age.csv lacks column(s) 'age' that the model was trained on; pass a --data file with the "
        "model's columns (14 in all; see student.json)",
        fix="rows with the model's columns",
    ),
    Case(
        id="export-parity",
        where="CLI",
        bad="the exported graph disagrees with PyTorch (simulated: a runtime that shifts margins by 0.5)",
        patch=_disagreeing_runtime,
        argv=(*EXPORT, "--data", "rows.csv"),
        message=E + "the torchscript export does not match the PyTorch student: max |margin difference| 0.5 > "
        "tolerance 0.0001 on 200 rows, so model.pt was not written; try the other format, or report it with the "
        "model folder",
        fix="`--format onnx`, and report it",
    ),
    Case(
        id="export-onnx-missing",
        where="CLI",
        bad="`export --format onnx` without onnxruntime (simulated)",
        patch=_no_onnxruntime,
        argv=("export", "--model", "run", "--out", "model.onnx", "--data", "rows.csv"),
        message=E + "invalid format='onnx': ONNX export needs onnxruntime, which is not installed; install the "
        "export extra: pip install 'gbdt2nn-core[export]'",
        fix="`pip install 'gbdt2nn-core[export]'`",
    ),
    # ---------------------------------------------------------------- notes: documented behaviour, not errors
    Case(
        id="note-extra-columns",
        where="CLI",
        outcome="note",
        bad="`--data` has columns the model does not use (here: the target)",
        argv=PREDICT,
        message="gbdt2nn: note: rows.csv: ignoring 1 column(s) the model does not use: 'income_gt_50k'",
        fix="nothing: they are ignored",
    ),
    Case(
        id="note-unseen-category",
        where="CLI",
        outcome="note",
        bad="a category the student never saw in training",
        setup=_write("unseen.csv", lambda f: _set(workclass=["Space", "Space"])(f.drop(columns=[TARGET]))),
        argv=("predict", "--model", "run", "--data", "unseen.csv", "--out", "pred.csv"),
        message="gbdt2nn: note: unseen.csv: categories not seen in training are treated as missing (the average "
        "category): 'workclass' (2 rows, e.g. 'Space')",
        fix="nothing, if treating it as missing is right; otherwise distil again with such rows",
    ),
    # ---------------------------------------------------------------- Python API
    Case(
        id="api-lambda-negative",
        where="API",
        bad="`DistillConfig(alignment_weight=-1.0)`",
        call=lambda ctx: _config(alignment_weight=-1.0),
        message="invalid alignment_weight=-1.0: use a finite number of at least 0 (0 = plain)",
        fix="λ ≥ 0",
    ),
    Case(
        id="api-alignment-rows-bool",
        where="API",
        bad="`DistillConfig(alignment_rows=True)`",
        call=lambda ctx: _config(alignment_rows=True),
        message="invalid alignment_rows=True: use a number in (0, 1]",
        fix="a share of the training rows in (0, 1]",
    ),
    Case(
        id="api-alignment-min-rows-float",
        where="API",
        bad="`DistillConfig(alignment_min_rows=2000.0)`",
        call=lambda ctx: _config(alignment_min_rows=2000.0),
        message="invalid alignment_min_rows=2000.0: use a whole number of rows of at least 0 (0 = no floor)",
        fix="a whole number of rows (0 = no floor)",
    ),
    Case(
        id="api-validation-fraction-too-large",
        where="API",
        bad="`DistillConfig(validation_fraction=0.6)`",
        call=lambda ctx: _config(validation_fraction=0.6),
        message="invalid validation_fraction=0.6: use a number in [0, 0.5), e.g. 0.1 (0 = none)",
        fix="hold out less than half of the training rows (0 = no early stopping data)",
    ),
    Case(
        id="api-alignment-rows-mismatch",
        where="API",
        bad="`Alignment(rows=...)` with fewer positions than `teacher_attributions` rows",
        call=lambda ctx: _alignment(rows=np.arange(3), teacher_attributions=np.zeros((4, 2))),
        message="invalid Alignment.rows=(3,): give the sorted, distinct training-row positions of "
        "teacher_attributions, one per row",
        fix="one sorted, distinct training-row position per attribution row",
    ),
    Case(
        id="api-test-size-zero",
        where="API",
        bad="`DistillConfig(test_size=0)`",
        call=lambda ctx: _config(test_size=0),
        message="invalid test_size=0: use a number between 0 and 1, e.g. 0.2",
        fix="0 < test_size < 1",
    ),
    Case(
        id="api-task-unknown",
        where="API",
        bad='`DistillConfig(task="classification")`',
        call=lambda ctx: _config(task="classification"),
        message="invalid task='classification': use one of regression, binary, multiclass (or leave it out)",
        fix="a listed task, or `None` (inferred)",
    ),
    Case(
        id="api-epochs-negative",
        where="API",
        bad="`GBDT2NNStudent(epochs=-2)`",
        call=lambda ctx: _student(epochs=-2),
        message="invalid epochs=-2: use a whole number of at least 1",
        fix="1 or more",
    ),
    Case(
        id="api-hidden-zero",
        where="API",
        bad="`GBDT2NNStudent(hidden=(100, 0))`",
        call=lambda ctx: _student(hidden=(100, 0)),
        message="invalid hidden=(100, 0): give one or more positive layer widths, e.g. 100,100,100,50 "
        "(TOML: [100, 100, 100, 50])",
        fix="positive widths",
    ),
    Case(
        id="api-lr-nan",
        where="API",
        bad='`GBDT2NNStudent(lr=float("nan"))`',
        call=lambda ctx: _student(lr=float("nan")),
        message="invalid lr=nan: use auto (chosen from the data) or a number > 0",
        fix='`lr="auto"` (the default) or e.g. `lr=1e-3`',
    ),
    Case(
        id="api-student-option-unknown",
        where="API",
        bad="`GBDT2NNStudent(epoch=3)`",
        call=lambda ctx: _student(epoch=3),
        message=f"invalid student option='epoch': did you mean 'epochs'? use one of {_STUDENT_OPTIONS}",
        fix="`epochs=3`",
    ),
    Case(
        id="api-plugin-unknown",
        where="API",
        bad='`get_registry().attributor("integrated_gradients")`',
        call=lambda ctx: __import__("gbdt2nn_core").get_registry().attributor("integrated_gradients"),
        message=f"No attributor named 'integrated_gradients'. Did you mean 'integrated-gradients'? Installed "
        f"attributors: {_ALL_ATTRIBUTORS}.",
        fix="use the suggested name",
    ),
    Case(
        id="api-distill-no-rows",
        where="API",
        bad="`distill(frame.head(0), target)`",
        call=lambda ctx: _distill(_rows(ctx.workdir).head(0)),
        message="the data has no rows; pass at least one row",
        fix="pass rows",
    ),
    Case(
        id="api-distill-nan-target",
        where="API",
        bad="`distill(frame, target)` with NaN in the target",
        call=lambda ctx: _distill(_set(**{TARGET: [np.nan]})(_rows(ctx.workdir))),
        message="the target has 1 missing value(s); drop those rows first",
        fix="`frame.dropna(subset=[target])`",
    ),
    Case(
        id="api-prepare-target-series",
        where="API",
        bad="`Pipeline(config).prepare(frame, frame[target])`: the target column, not its name",
        call=lambda ctx: _prepare(_rows(ctx.workdir), _rows(ctx.workdir)[TARGET]),
        message=f"the target must be the name of a column of the data, not a Series; pass its name, {TARGET!r}",
        fix="`prepare(frame, target)` with the column's name",
    ),
    Case(
        id="api-distill-target-array",
        where="API",
        bad="`distill(X, y)` with the labels apart (an array)",
        call=lambda ctx: _distill(_features(_rows(ctx.workdir)), _rows(ctx.workdir)[TARGET].to_numpy()),
        message="the target must be the name of a column of the data, not a ndarray; pass the name of the target "
        "column (kept in the data), or fit GBDT2NNClassifier / GBDT2NNRegressor with the labels apart: fit(X, y)",
        fix="keep the target in the frame and pass its name, or use the scikit-learn estimators",
    ),
    Case(
        id="api-load-missing",
        where="API",
        bad='`load_model("nowhere")`',
        call=lambda ctx: importlib.import_module("gbdt2nn_core.pipeline.persistence").load_model("nowhere"),
        message="cannot load model from nowhere: student.json or student.safetensors is missing; pass a folder "
        "written by 'gbdt2nn distill'",
        fix="pass a run folder",
    ),
    Case(
        id="api-predict-shape",
        where="API",
        bad="`model.predict(np.zeros((3, 5)))`: wrong number of columns",
        call=lambda ctx: ctx.model.predict(np.zeros((3, 5))),
        message="expected a 2-D array with 14 columns, got shape (3, 5); pass rows with the same columns as the "
        "training data",
        fix="the training columns, in order",
    ),
    Case(
        id="api-predict-missing-column",
        where="API",
        bad="`model.predict(frame)` without a training column",
        call=lambda ctx: ctx.model.predict(_rows(ctx.workdir).drop(columns=["age", "race"])),
        message="the data lacks column(s) 'age', 'race' that the model was trained on; pass data with the same "
        "columns as the training data",
        fix="add the columns (NaN = missing)",
    ),
    Case(
        id="api-predict-empty",
        where="API",
        bad="`model.predict(frame.head(0))`",
        call=lambda ctx: ctx.model.predict(_rows(ctx.workdir).head(0)),
        message="the data has no rows; pass at least one row",
        fix="pass rows",
    ),
    Case(
        id="api-student-not-fitted",
        where="API",
        bad="`GBDT2NNStudent().predict_margin(z)` before `fit`",
        call=lambda ctx: _student().predict_margin(np.zeros((2, 3), dtype=np.float32)),  # type: ignore[attr-defined]
        message="GBDT2NNStudent.module was called before fit; call fit() first, or load a saved student",
        fix="`fit` first",
    ),
    Case(
        id="api-attribute-nan",
        where="API",
        bad="NaN in encoded rows given to an attributor",
        call=lambda ctx: _attribute(ctx, _encoded_with_nan(ctx)),
        message="z has NaN or infinite values in 1 of 4 rows; encode the rows with the core's encoder, which "
        "imputes missing values",
        fix="`model.encode(frame)`",
    ),
    Case(
        id="api-attribute-1d",
        where="API",
        bad="one encoded row as a 1-D tensor",
        call=lambda ctx: _attribute(ctx, __import__("torch").as_tensor(ctx.model.encode(_rows(ctx.workdir)))[0]),
        message="z has shape (76,), expected (rows, features); pass one 2-D tensor of encoded rows (use z[None] "
        "for a single row)",
        fix="`z[None]`",
    ),
    Case(
        id="api-export-folder",
        where="API",
        bad='`export_torchscript(model, "run")`: the path is a folder',
        call=lambda ctx: importlib.import_module("gbdt2nn_core.pipeline.export").export_torchscript(ctx.model, "run"),
        message="'run' is a folder; pass a file path for the export, e.g. model.onnx",
        fix="a file path",
    ),
    Case(
        id="api-export-tolerance",
        where="API",
        bad='`export_onnx(model, "m.onnx", tolerance=0)`',
        call=lambda ctx: importlib.import_module("gbdt2nn_core.pipeline.export").export_onnx(
            ctx.model, "m.onnx", tolerance=0
        ),
        message="invalid tolerance=0: use a positive number, e.g. 1e-4",
        fix="e.g. `1e-4`",
    ),
    Case(
        id="api-export-rows-shape",
        where="API",
        bad='`export_torchscript(model, "m.pt", rows=np.zeros((3, 2)))`',
        call=lambda ctx: importlib.import_module("gbdt2nn_core.pipeline.export").export_torchscript(
            ctx.model, "m.pt", rows=np.zeros((3, 2))
        ),
        message="expected a 2-D array with 14 columns, got shape (3, 2); pass rows with the same columns as the "
        "training data",
        fix="rows with the model's columns",
    ),
    Case(
        id="api-teacher-columns",
        where="API",
        bad="a wrapped booster asked about rows with other columns",
        call=lambda ctx: (
            __import__("gbdt2nn_core")
            .get_registry()
            .teacher("lightgbm", model="run/teacher.txt")
            .predict_margin(ctx.model.encoder.schema.to_frame(_rows(ctx.workdir)).rename(columns={"race": "ethnicity"}))
        ),
        message="X's columns do not match the booster's 14 features: missing ['race']; unexpected ['ethnicity']; "
        "pass X[teacher.feature_names], the columns the booster was trained on, in its order",
        fix="the booster's columns",
    ),
]

if HAS_ESTIMATOR:
    CASES += [
        Case(
            id="estimator-nan-target",
            where="API",
            bad="`GBDT2NNClassifier().fit(X, y)` with NaN in `y`",
            call=lambda ctx: _classifier().fit(
                _rows(ctx.workdir).drop(columns=[TARGET]), _rows(ctx.workdir)[TARGET].where(lambda s: s.index > 0)
            ),
            message="the target has 1 missing value(s); drop those rows first",
            fix="drop the unlabelled rows",
        ),
        Case(
            id="estimator-patience-zero",
            where="API",
            bad="`GBDT2NNClassifier(n_iter_no_change=0).fit(X, y)`",
            call=lambda ctx: _classifier(n_iter_no_change=0).fit(
                _rows(ctx.workdir).drop(columns=[TARGET]), _rows(ctx.workdir)[TARGET]
            ),
            message="invalid n_iter_no_change=0: use a whole number of at least 1",
            fix="wait at least one epoch without improvement",
        ),
        Case(
            id="estimator-not-fitted",
            where="API",
            bad="`GBDT2NNClassifier().predict(X)` before `fit`",
            error=__import__("sklearn.exceptions").exceptions.NotFittedError,
            call=lambda ctx: _classifier().predict(_rows(ctx.workdir)),
            message="GBDT2NNClassifier.predict was called before fit; call GBDT2NNClassifier.fit(X, y) first, or "
            "load a saved one with GBDT2NNClassifier.load(path)",
            fix="`fit` (or `load`) first",
        ),
        Case(
            id="estimator-columns",
            where="API",
            bad="a fitted estimator's `predict` on an array with the wrong number of columns",
            call=lambda ctx: _fitted_classifier(ctx).predict(np.zeros((3, 5))),
            message="expected a 2-D array with 14 columns, got shape (3, 5); pass rows with the same columns as the "
            "training data",
            fix="the training columns",
        ),
    ]

# ------------------------------------------------------------------------------------------- issue 10
READING = "Reading data files (issue 10)"
TRAINING = "Targets and training (issue 10)"
SERVING = "Rows a model cannot serve (issue 10)"
TAMPERED = "Tampered model files (issue 10)"
SECTION_INTROS = {
    READING: "In a CSV file only an empty cell is missing in a text column: `NA`, `None`, `null` are categories like "
    "any other (in a numeric column they are missing). A file separated by `;`, tabs or `|` is read with its own "
    "separator, with a warning.",
    TRAINING: "Training that diverges stops at the first non-finite loss and names the setting to lower; a warning "
    "line (`gbdt2nn: warning: ...`) says what happened when the run goes on.",
    SERVING: "A margin that is not finite never becomes a prediction, a probability or an attribution.",
    TAMPERED: "`student.json` is checked against the header of `student.safetensors` (names and shapes) before "
    "anything it declares is allocated.",
}
_FLOAT32 = "too large for the student's 32-bit floats"
_OVERFLOW_FIX = (
    "values this far outside the training data overflow the network's 32-bit floats: check the column's unit, or "
    "make those cells empty (missing)"
)
_NOT_FIT = "cannot load model from run: the files do not fit together: student.json "
_DIVERGED = "training diverged in "
PREDICT_FEATURES = ("predict", "--model", "run", "--data", "features.csv", "--out", "pred.csv")
ONE_EPOCH = ("--epochs", "1")

CASES += [
    # ---------------------------------------------------------------- reading files
    Case(
        id="na-category",
        where="CLI",
        heading=READING,
        outcome="note",
        bad="the category `NA` in a text column (pandas reads it as missing)",
        setup=_write("na.csv", lambda f: _set(workclass=["NA", "NA"])(_features(f))),
        argv=("predict", "--model", "run", "--data", "na.csv", "--out", "pred.csv"),
        message="gbdt2nn: note: na.csv: categories not seen in training are treated as missing (the average "
        "category): 'workclass' (2 rows, e.g. 'NA')",
        fix="nothing: `NA` is a category of its own (leave the cell empty for missing)",
    ),
    Case(
        id="null-category",
        where="CLI",
        heading=READING,
        outcome="note",
        bad="the category `null` in a text column",
        setup=_write("null.csv", lambda f: _set(race=["null"])(_features(f))),
        argv=("predict", "--model", "run", "--data", "null.csv", "--out", "pred.csv"),
        message="gbdt2nn: note: null.csv: categories not seen in training are treated as missing (the average "
        "category): 'race' (1 rows, e.g. 'null')",
        fix="nothing: `null` is a category of its own",
    ),
    Case(
        id="none-category",
        where="CLI",
        heading=READING,
        outcome="note",
        bad="the category `None` in a text column",
        setup=_write("none.csv", lambda f: _set(gender=["None", "None", "None"])(_features(f))),
        argv=("predict", "--model", "run", "--data", "none.csv", "--out", "pred.csv"),
        message="gbdt2nn: note: none.csv: categories not seen in training are treated as missing (the average "
        "category): 'gender' (3 rows, e.g. 'None')",
        fix="nothing: `None` is a category of its own",
    ),
    Case(
        id="csv-semicolons",
        where="CLI",
        heading=READING,
        outcome="warning",
        bad="a CSV file separated by semicolons",
        setup=_separated("semi.csv", ";"),
        argv=("predict", "--model", "run", "--data", "semi.csv", "--out", "pred.csv"),
        message="gbdt2nn: warning: semi.csv: the first line has no commas; read as separated by ';'",
        fix="nothing (or export the file with commas)",
    ),
    Case(
        id="csv-tabs",
        where="CLI",
        heading=READING,
        outcome="warning",
        bad="a `.csv` file separated by tabs",
        setup=_separated("tabs.csv", "\t"),
        argv=("predict", "--model", "run", "--data", "tabs.csv", "--out", "pred.csv"),
        message="gbdt2nn: warning: tabs.csv: the first line has no commas; read as separated by tabs",
        fix="nothing (or export the file with commas)",
    ),
    Case(
        id="csv-pipes",
        where="CLI",
        heading=READING,
        outcome="warning",
        bad="a CSV file separated by `|`",
        setup=_separated("pipes.csv", "|"),
        argv=("explain", "--model", "run", "--data", "pipes.csv", "--out", "attr.csv"),
        message="gbdt2nn: warning: pipes.csv: the first line has no commas; read as separated by '|'",
        fix="nothing (or export the file with commas)",
    ),
    Case(
        id="csv-semicolons-distill",
        where="CLI",
        heading=READING,
        outcome="warning",
        bad="`distill --data` on a file separated by semicolons (was: target not in data)",
        setup=lambda w: pd.read_csv(w / "train.csv").to_csv(w / "semi.csv", index=False, sep=";"),
        argv=("distill", "--data", "semi.csv", "--target", TARGET, "--out", "out", *TEACHER_FLAGS, *ONE_EPOCH),
        message="gbdt2nn: warning: semi.csv: the first line has no commas; read as separated by ';'",
        fix="nothing (or export the file with commas)",
    ),
    Case(
        id="csv-empty-header-cell",
        where="CLI",
        heading=READING,
        bad="a CSV whose first header cell is empty (a row index written by `DataFrame.to_csv`)",
        setup=_with_index,
        argv=("distill", "--data", "indexed.csv", "--target", TARGET, "--out", "out", *TEACHER_FLAGS),
        message=E + "indexed.csv: the header has no name for column 1 (counting from 1); name every column in the "
        "first line (a row index written by DataFrame.to_csv: write with index=False)",
        fix="name the column, or write the file with `index=False`",
    ),
    Case(
        id="parquet-without-pyarrow",
        where="CLI",
        heading=READING,
        bad="a Parquet file without pyarrow installed (simulated)",
        setup=_parquet,
        patch=_no_parquet_engine,
        argv=("predict", "--model", "run", "--data", "rows.parquet", "--out", "pred.csv"),
        message=E + "reading rows.parquet needs pyarrow, which is not installed; pip install pyarrow",
        fix="`pip install pyarrow`",
    ),
    Case(
        id="float-limit-distill",
        where="CLI",
        heading=READING,
        bad="values near the float limit (`1e300`) in a training column",
        setup=_write("huge.csv", _set(age=[1e300, 1e300]), "train.csv"),
        argv=("distill", "--data", "huge.csv", "--target", TARGET, "--out", "out", *TEACHER_FLAGS),
        message=E + f"column 'age' holds values beyond ±3.4e38, {_FLOAT32} (e.g. 1e+300), in row(s) 1, 2 of the "
        "data; rescale the column (another unit) or make those cells empty (missing)",
        fix="another unit, or empty cells",
    ),
    Case(
        id="float-limit-predict",
        where="CLI",
        heading=READING,
        bad="a value beyond the 32-bit float range (`1e39`) at prediction time",
        setup=_write("huge.csv", _set(**{"capital-gain": [0.0, 0.0, 1e39]})),
        argv=("predict", "--model", "run", "--data", "huge.csv", "--out", "pred.csv"),
        message=E + f"column 'capital-gain' holds values beyond ±3.4e38, {_FLOAT32} (e.g. 1e+39), in row(s) 3 of "
        "the data; rescale the column (another unit) or make those cells empty (missing)",
        fix="another unit, or empty cells",
    ),
    Case(
        id="float-limit-negative",
        where="CLI",
        heading=READING,
        bad="`-1.7e308` in a column to explain",
        setup=_write("huge.csv", _set(fnlwgt=[-1.7e308])),
        argv=("explain", "--model", "run", "--data", "huge.csv", "--out", "attr.csv"),
        message=E + f"column 'fnlwgt' holds values beyond ±3.4e38, {_FLOAT32} (e.g. -1.7e+308), in row(s) 1 of "
        "the data; rescale the column (another unit) or make those cells empty (missing)",
        fix="another unit, or empty cells",
    ),
    Case(
        id="booleans-in-numeric",
        where="CLI",
        heading=READING,
        bad="`True`/`False` text in a numeric column (was read as 1/0)",
        setup=_write("bools.csv", lambda f: f.assign(age=["True", "False"] * (len(f) // 2))),
        argv=("predict", "--model", "run", "--data", "bools.csv", "--out", "pred.csv"),
        message=E + "column 'age' holds true/false values but held numbers in training; pass the column's numbers "
        "(true/false are not read as 1/0)",
        fix="the column's numbers",
    ),
    Case(
        id="booleans-in-numeric-upper",
        where="CLI",
        heading=READING,
        bad="`TRUE`/`FALSE` text in a numeric column",
        setup=_write("bools.csv", lambda f: f.assign(**{"hours-per-week": ["TRUE", "FALSE"] * (len(f) // 2)})),
        argv=("explain", "--model", "run", "--data", "bools.csv", "--out", "attr.csv"),
        message=E + "column 'hours-per-week' holds true/false values but held numbers in training; pass the "
        "column's numbers (true/false are not read as 1/0)",
        fix="the column's numbers",
    ),
    Case(
        id="api-booleans-in-numeric",
        where="API",
        heading=READING,
        bad="`model.predict(frame)` with Python booleans in a numeric column",
        call=lambda ctx: ctx.model.predict(_rows(ctx.workdir).assign(age=True)),
        message="column 'age' holds true/false values but held numbers in training; pass the column's numbers "
        "(true/false are not read as 1/0)",
        fix="the column's numbers",
    ),
    Case(
        id="api-float-limit",
        where="API",
        heading=READING,
        bad="`model.predict(frame)` with `1e39` in a column",
        call=lambda ctx: ctx.model.predict(_set(age=[1e39])(_rows(ctx.workdir))),
        message=f"column 'age' holds values beyond ±3.4e38, {_FLOAT32} (e.g. 1e+39), in row(s) 1 of the data; "
        "rescale the column (another unit) or make those cells empty (missing)",
        fix="another unit, or NaN",
    ),
    # ---------------------------------------------------------------- targets and training
    Case(
        id="target-inf-binary",
        where="CLI",
        heading=TRAINING,
        bad="`inf` in a classification target (was: a third class, `Infinity` in student.json)",
        setup=_write("inf.csv", _set(**{TARGET: [np.inf]}), "train.csv"),
        argv=("distill", "--data", "inf.csv", "--target", TARGET, "--out", "out", *TEACHER_FLAGS),
        message=E + "the target contains infinite values; drop or fix those rows",
        fix="drop or fix the rows",
    ),
    Case(
        id="target-inf-multiclass",
        where="CLI",
        heading=TRAINING,
        bad="`-inf` in a multiclass target",
        setup=_write("inf.csv", _set(**{"educational-num": [-np.inf]}), "train.csv"),
        argv=("distill", "--data", "inf.csv", "--target", "educational-num", "--task", "multiclass", "--out", "out"),
        message=E + "the target contains infinite values; drop or fix those rows",
        fix="drop or fix the rows",
    ),
    Case(
        id="api-target-inf",
        where="API",
        heading=TRAINING,
        bad="`distill(frame, target)` with `inf` in a binary target",
        call=lambda ctx: _distill(_set(**{TARGET: [np.inf]})(_rows(ctx.workdir))),
        message="the target contains infinite values; drop or fix those rows",
        fix="drop or fix the rows",
    ),
    Case(
        id="multiclass-continuous",
        where="CLI",
        heading=TRAINING,
        bad="`--task multiclass` on a continuous target (was: a 7 KB line listing every value)",
        argv=(*DISTILL[:4], "fnlwgt", "--task", "multiclass", "--out", "out"),
        message=E + "task 'multiclass' but the target has … classes (e.g. …, ...), more than the 100 a classifier "
        "is distilled for; pass --task regression for a numeric target, or group the labels into fewer classes",
        fix="`--task regression`",
    ),
    Case(
        id="regression-target-huge",
        where="CLI",
        heading=TRAINING,
        bad="a regression target of `1e40`",
        setup=_write("huge.csv", _set(fnlwgt=[1e40]), "train.csv"),
        argv=("distill", "--data", "huge.csv", "--target", "fnlwgt", "--task", "regression", "--out", "out"),
        message=E + "the regression target reaches 1e+40, beyond the ±1e+30 the student's 32-bit floats train on; "
        "rescale the target (e.g. divide it by a power of ten) and scale predictions back",
        fix="rescale the target",
    ),
    Case(
        id="batch-size-one",
        where="CLI",
        heading=TRAINING,
        bad="`--student-option batch_size=1` (was: zero training steps, losses of 0.0, exit 0)",
        argv=(*DISTILL, "--student-option", "batch_size=1"),
        message=E + "invalid batch_size=1: use auto (from the number of training rows) or a whole number of at least 2 "
        "(BatchNorm needs two rows per batch)",
        fix="a batch size of 2 or more",
    ),
    Case(
        id="api-batch-size-one",
        where="API",
        heading=TRAINING,
        bad="`GBDT2NNStudent(batch_size=1)`",
        call=lambda ctx: _student(batch_size=1),
        message="invalid batch_size=1: use auto (from the number of training rows) or a whole number of at least 2 "
        "(BatchNorm needs two rows per batch)",
        fix="`batch_size=2` or more",
    ),
    Case(
        id="alignment-weight-diverges",
        after_progress=True,
        where="CLI",
        heading=TRAINING,
        bad="`--alignment-weight 1e308` with the cap on λ off (`--student-option alignment_cap=0`; was: NaN metrics, "
        "internal error; with the cap on, λ is capped and training goes on)",
        argv=(*DISTILL, *ONE_EPOCH, "--alignment-weight", "1e308", "--student-option", "alignment_cap=0"),
        message=E + _DIVERGED + "epoch 1 of the student training: … became infinite or NaN; lower the alignment "
        "weight (--alignment-weight, now 1e+308) or the learning rate (--student-option lr, now 0.001)",
        fix="a smaller `--alignment-weight`",
    ),
    Case(
        id="learning-rate-diverges",
        after_progress=True,
        where="CLI",
        heading=TRAINING,
        bad="`--student-option lr=1e308`",
        argv=(*DISTILL, *ONE_EPOCH, "--student-option", "lr=1e308"),
        message=E + _DIVERGED + "the leaf embedding: the leaf embedding loss became infinite or NaN; lower the "
        "learning rate (--student-option lr, now 1e+308)",
        fix="a smaller `lr` (the default, auto, is 1e-3 or 3e-3 by the batch size)",
    ),
    Case(
        id="few-test-rows",
        where="CLI",
        heading=TRAINING,
        outcome="warning",
        bad="a 12-row file: 3 test rows (was: NaN metrics, no warning)",
        setup=_write(
            "twelve.csv", lambda f: pd.concat([f[f[TARGET] == 0].head(8), f[f[TARGET] == 1].head(4)]), "train.csv"
        ),
        argv=("distill", "--data", "twelve.csv", "--target", TARGET, "--out", "out", *TEACHER_FLAGS, *ONE_EPOCH),
        message="gbdt2nn: warning: only 3 of the 12 rows are held out for testing, too few for the test metrics "
        "(noisy, NaN where a class is absent); distil from more rows, or raise test_size to hold out 30 or more",
        fix="more rows",
    ),
    Case(
        id="cache-dir-is-a-file",
        where="CLI",
        heading=TRAINING,
        bad="`GBDT2NN_CACHE_DIR` names a file (was: an error after the teacher trained)",
        setup=_text("cachefile", "not a folder"),
        patch=_cache_env("cachefile"),
        argv=DISTILL,
        message=E + "invalid cache_dir='cachefile': it is a file, not a folder; point GBDT2NN_CACHE_DIR (or "
        "cache_dir) at a folder, or turn the cache off",
        fix="a folder path",
    ),
    Case(
        id="cache-dir-below-a-file",
        where="CLI",
        heading=TRAINING,
        bad="`GBDT2NN_CACHE_DIR` names a path below a file",
        setup=_text("cachefile", "not a folder"),
        patch=_cache_env("cachefile/treeshap"),
        argv=DISTILL,
        message=E + "invalid cache_dir='cachefile/treeshap': 'cachefile' is a file, not a folder; point "
        "GBDT2NN_CACHE_DIR (or cache_dir) at a folder, or turn the cache off",
        fix="a folder path",
    ),
    Case(
        id="api-cache-dir-is-a-file",
        where="API",
        heading=TRAINING,
        bad='`distill(frame, target, DistillConfig(cache_dir="cachefile"))`, a file',
        setup=_text("cachefile", "not a folder"),
        call=lambda ctx: _distill(_rows(ctx.workdir), cache_dir="cachefile"),
        message="invalid cache_dir='cachefile': it is a file, not a folder; point GBDT2NN_CACHE_DIR (or cache_dir) "
        "at a folder, or turn the cache off",
        fix="a folder path, or `cache=False`",
    ),
    # ---------------------------------------------------------------- rows a model cannot serve
    Case(
        id="margins-overflow-predict",
        where="CLI",
        heading=SERVING,
        bad="`predict` on values that overflow the network (a column of values in the 1e-8s given `1e31`; was: "
        "blank probabilities and a label)",
        setup=_tiny_scale_run,
        argv=("predict", "--model", "scalerun", "--data", "scaled.csv", "--out", "pred.csv"),
        message=E + "the student's margins are not finite for 2 row(s) (row(s) 1, 3 of the data); their largest "
        f"value is 1e+31, in column 'rate'; {_OVERFLOW_FIX}",
        fix="check the unit, or empty cells",
    ),
    Case(
        id="margins-overflow-explain",
        where="CLI",
        heading=SERVING,
        bad="`explain` on values that overflow the network (was: blank rows)",
        setup=_tiny_scale_run,
        argv=("explain", "--model", "scalerun", "--data", "scaled.csv", "--out", "attr.csv"),
        message=E + "the student's margins are not finite for 2 row(s) (row(s) 1, 3 of the data); their largest "
        f"value is 1e+31, in column 'rate'; {_OVERFLOW_FIX}",
        fix="check the unit, or empty cells",
    ),
    Case(
        id="margins-overflow-export",
        where="CLI",
        heading=SERVING,
        bad="`export --data` with rows that overflow the network (was: the parity check blamed the exporter)",
        setup=_tiny_scale_run,
        argv=("export", "--model", "scalerun", "--out", "model.pt", "--data", "scaled.csv"),
        message=E + "the student's margins are not finite for 2 row(s) (row(s) 1, 3 of the data); their largest "
        f"value is 1e+31, in column 'rate'; {_OVERFLOW_FIX}",
        fix="check the rows' units",
    ),
    Case(
        id="api-margins-overflow",
        where="API",
        heading=SERVING,
        bad="`model.predict_proba(frame)` with values that overflow the network",
        setup=_tiny_scale_run,
        call=lambda ctx: (
            importlib.import_module("gbdt2nn_core.pipeline.persistence")
            .load_model(ctx.workdir / "scalerun")
            .predict_proba(pd.read_csv(ctx.workdir / "scaled.csv").tail(-1))
        ),
        message="the student's margins are not finite for 1 row(s) (row(s) 2 of the data); their largest value is "
        f"1e+31, in column 'rate'; {_OVERFLOW_FIX}",
        fix="check the unit, or NaN",
    ),
    Case(
        id="far-from-training",
        where="CLI",
        heading=SERVING,
        outcome="note",
        bad="a column in another unit than in training (hours → seconds: the student extrapolates, unlike its teacher)",
        setup=_write("seconds.csv", lambda f: _features(f).assign(**{"hours-per-week": f["hours-per-week"] * 3600})),
        argv=("predict", "--model", "run", "--data", "seconds.csv", "--out", "pred.csv"),
        message="gbdt2nn: note: seconds.csv: values far outside the training range, where the student extrapolates "
        "and may disagree with its teacher: 'hours-per-week' (200 rows)",
        fix="the training unit",
    ),
    Case(
        id="integer-categories",
        where="CLI",
        heading=SERVING,
        outcome="note",
        bad="a model of integer categories (distilled through the API) served from CSV (was: every row unseen)",
        setup=_integer_category_run,
        argv=("predict", "--model", "intrun", "--data", "ints.csv", "--out", "pred.csv"),
        message="gbdt2nn: note: ints.csv: categories not seen in training are treated as missing (the average "
        "category): 'grade' (1 rows, e.g. 42)",
        fix="nothing: only the category never seen is treated as missing",
    ),
]
CASES += [
    Case(
        id="parquet-out-without-pyarrow",
        where="CLI",
        heading=READING,
        bad="`predict --out pred.parquet` without pyarrow installed (simulated)",
        patch=_no_parquet_writer,
        argv=("predict", "--model", "run", "--data", "rows.csv", "--out", "pred.parquet"),
        message=E + "writing pred.parquet needs pyarrow, which is not installed; pip install pyarrow",
        fix="`pip install pyarrow`, or `--out pred.csv`",
    ),
    Case(
        id="csv-gz-semicolons",
        where="CLI",
        heading=READING,
        outcome="warning",
        bad="a `.csv.gz` file separated by semicolons",
        setup=lambda w: _features(_rows(w)).to_csv(w / "semi.csv.gz", index=False, sep=";"),
        argv=("predict", "--model", "run", "--data", "semi.csv.gz", "--out", "pred.csv"),
        message="gbdt2nn: warning: semi.csv.gz: the first line has no commas; read as separated by ';'",
        fix="nothing (or export the file with commas)",
    ),
    Case(
        id="export-rows-far-from-training",
        where="CLI",
        heading=SERVING,
        bad="`export --data` with a column in another unit (was: the parity check blamed the exporter)",
        setup=_write("seconds.csv", lambda f: f.assign(**{"hours-per-week": f["hours-per-week"] * 3600})),
        # ONNX: TorchScript may run the very kernels of the eager forward, and then agrees to the last bit however
        # large the margins (it did for the student trained since issue 11); ONNX Runtime's kernels round otherwise
        argv=("export", "--model", "run", "--out", "model.onnx", "--data", "seconds.csv"),
        message=E + "the rows hold values far outside the training range in 'hours-per-week' (200 rows), where the "
        "student's margins are too large to compare; check those columns' units, or check on rows like the "
        "training data",
        fix="rows like the training data",
    ),
    Case(
        id="weights-not-finite",
        where="CLI",
        heading=TAMPERED,
        bad="`student.safetensors` holding an infinite weight",
        setup=_edit_weights(lambda state: state["head_bias"].fill_(float("inf"))),
        argv=PREDICT,
        message=E + "cannot load model from run: student.safetensors holds infinite or NaN values in head_bias; "
        "re-run the distillation",
        fix="re-run the distillation",
    ),
    Case(
        id="weights-group-index",
        where="CLI",
        heading=TAMPERED,
        bad="`student.safetensors` whose `group_input_index` differs from `student.json`'s",
        setup=_edit_weights(
            lambda state: state.update(group_input_index=state["group_input_index"].flip(1).contiguous())
        ),
        argv=PREDICT,
        message=E + "cannot load model from run: the files do not fit together: student.safetensors holds another "
        "group_input_index than student.json declares; re-run the distillation",
        fix="re-run the distillation",
    ),
]
_TAMPERINGS: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "classes-empty",
        "`classes` empty",
        {"classes": []},
        "lists 0 class label(s) for a binary network with 1 output(s); a binary student has 2 label(s) and 1 output(s)",
    ),
    (
        "classes-too-many",
        "more `classes` than the network has outputs",
        {"classes": [0, 1, 2, 3]},
        "lists 4 class label(s) for a binary network with 1 output(s); a binary student has 2 label(s) and 1 output(s)",
    ),
    (
        "task-unknown",
        "an unknown `task`",
        {"task": "ranking"},
        "names an unknown task 'ranking' (one of regression, binary, multiclass expected)",
    ),
    (
        "task-multiclass",
        "`task` changed to multiclass",
        {"task": "multiclass"},
        "declares a multiclass network with 1 output(s); a multiclass student has 3 or more",
    ),
    (
        "hidden-huge",
        "`hidden` of [6000, 6000] (was: 1.8 GB allocated before the check)",
        {"architecture__hidden": [6000, 6000]},
        "declares mlp.hidden.0.weight of shape [4, …, 6000] but student.safetensors holds [4, …, 16]",
    ),
    (
        "hidden-invalid",
        "`hidden` not a list of widths",
        {"architecture__hidden": "big"},
        "has an invalid hidden='big' (positive layer widths expected)",
    ),
    (
        "outputs-zero",
        "`n_outputs` 0",
        {"architecture__n_outputs": 0},
        "has an invalid n_outputs=0 (a whole number of at least 1 expected)",
    ),
    (
        "outputs-more",
        "`n_outputs` larger than the tensors'",
        {"architecture__n_outputs": 2},
        "lists 2 class label(s) for a binary network with 2 output(s); a binary student has 2 label(s) and 1 output(s)",
    ),
    (
        "embedding-zero",
        "`embedding_dim` 0",
        {"architecture__embedding_dim": 0},
        "has an invalid embedding_dim=0 (a whole number of at least 1 expected)",
    ),
    (
        "group-output-range",
        "a group sent to an output that does not exist",
        {"architecture__group_output": [0, 0, 0, 5]},
        "sends a group to output 5 of a network with 1 output(s)",
    ),
    (
        "group-output-length",
        "`group_output` shorter than the groups",
        {"architecture__group_output": [0]},
        "has a group_output that does not list one output per group (4 groups)",
    ),
    (
        "group-index-ragged",
        "`group_input_index` rows of different lengths",
        {"architecture__group_input_index": [[0, 1], [2]]},
        "has a group_input_index whose rows differ in length or hold other than column positions",
    ),
    (
        "group-index-range",
        "`group_input_index` beyond the encoder's columns",
        {"architecture__group_input_index": [[10**6]] * 4},
        "has a group_input_index that reads encoded column 1000000 of the encoder's 76",
    ),
    (
        "config-batch-size",
        "a training setting the student refuses (`batch_size` 1)",
        {"config__batch_size": 1},
        "has an invalid setting (invalid batch_size=1: use auto (from the number of training rows) or a whole number "
        "of at least 2 (BatchNorm needs two rows per batch))",
    ),
    (
        "state-learning-rate",
        "the learning rate online updates start from (`learning_rate`) negative",
        {"state__learning_rate": -1.0},
        "has an invalid learning_rate=-1.0 (a finite number > 0 expected)",
    ),
    (
        "state-batch-size",
        "the batch size online updates train with (`batch_size`) 1",
        {"state__batch_size": 1},
        "has an invalid batch_size=1 (a whole number of at least 2 expected)",
    ),
    (
        "config-unknown",
        "an unknown student setting",
        {"config__momentum": 0.9},
        "has unknown student settings ['momentum']",
    ),
    ("encoder-missing", "no `encoder` section", {"encoder": _DROP}, "has an unreadable encoder (…)"),
]
CASES += [
    Case(
        id=f"student-json-{name}",
        where="CLI",
        heading=TAMPERED,
        bad=f"`student.json` tampered: {what}",
        setup=_student_json(**changes),
        argv=PREDICT,
        message=E + _NOT_FIT + problem + "; re-run the distillation",
        fix="re-run the distillation (or copy the run folder again)",
    )
    for name, what, changes, problem in _TAMPERINGS
]
CASES += [
    Case(
        id="api-student-json-classes",
        where="API",
        heading=TAMPERED,
        bad="`load_model(folder)` whose `student.json` lists no classes",
        setup=_student_json(classes=[]),
        call=lambda ctx: None,  # the harness loads the model first: that raises
        message="cannot load model from …: the files do not fit together: student.json lists 0 class label(s) for "
        "a binary network with 1 output(s); a binary student has 2 label(s) and 1 output(s); re-run the distillation",
        fix="re-run the distillation",
    ),
]

# ------------------------------------------------------------------------------------------- issue 13: Dask
DASK = "The Dask engine (issue 13)"
SECTION_INTROS[DASK] = (
    "`gbdt2nn distill --engine dask` needs the optional extra (`pip install 'gbdt2nn-core[dask]'`); its settings are "
    "checked before any worker starts."
)
_DASK_FIX = "pip install 'gbdt2nn-core[dask]'"


def _no_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("dask.dataframe", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)  # import -> ImportError, as without the extra


def _short_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import dask
    import distributed  # noqa: F401 - loads distributed's configuration defaults

    monkeypatch.setitem(dask.config.config["distributed"]["comm"]["timeouts"], "connect", "1s")


def _dask_settings(**values: Any) -> object:
    from gbdt2nn_core.pipeline.dask_engine import DaskSettings

    return DaskSettings(**values)


CASES += [
    Case(
        id="dask-missing",
        where="CLI",
        heading=DASK,
        bad="`--engine dask` without the dask extra installed",
        patch=_no_dask,
        argv=(*DISTILL, "--engine", "dask"),
        message=E + f"invalid engine='dask': Dask is not installed; {_DASK_FIX}",
        fix=f"`{_DASK_FIX}`",
    ),
    Case(
        id="dask-scheduler-unreachable",
        where="CLI",
        heading=DASK,
        requires="distributed",
        bad="`--scheduler` names an address where no scheduler answers",
        patch=_short_connect_timeout,
        argv=(*DISTILL, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:9"),
        message=E + "invalid scheduler='tcp://127.0.0.1:9': no Dask scheduler answers there (…); pass the address a "
        "running `dask scheduler` prints (tcp://HOST:PORT), or leave --scheduler out for a local cluster",
        fix="start the scheduler, or fix the address",
    ),
    Case(
        id="dask-scheduler-not-an-address",
        where="CLI",
        heading=DASK,
        requires="distributed",
        bad="`--scheduler` is not an address",
        argv=(*DISTILL, "--engine", "dask", "--scheduler", "my laptop"),
        message=E + "invalid scheduler='my laptop': not a scheduler address; pass the one a running `dask scheduler` "
        "prints (tcp://HOST:PORT)",
        fix="`tcp://HOST:PORT`",
    ),
    Case(
        id="dask-data-missing",
        where="CLI",
        heading=DASK,
        requires="distributed",
        bad="`--engine dask --data` names a file that does not exist",
        argv=("distill", "--engine", "dask", "--data", "nowhere.csv", "--target", TARGET, "--out", "out"),
        message=E + "data file 'nowhere.csv' does not exist; check the path passed to --data",
        fix="check the path (no worker was started)",
    ),
    Case(
        id="dask-scheduler-without-engine",
        where="CLI",
        heading=DASK,
        bad="`--scheduler` without `--engine dask`",
        argv=(*DISTILL, "--scheduler", "tcp://127.0.0.1:8786"),
        message=E + "invalid --scheduler='tcp://127.0.0.1:8786': it needs --engine dask",
        fix="add `--engine dask`",
    ),
    Case(
        id="dask-workers-with-scheduler",
        where="CLI",
        heading=DASK,
        bad="`--dask-workers` together with `--scheduler`",
        argv=(*DISTILL, "--engine", "dask", "--scheduler", "tcp://127.0.0.1:8786", "--dask-workers", "4"),
        message=E + "invalid --dask-workers=4: it sizes a local cluster; the cluster behind --scheduler has its own "
        "workers",
        fix="drop one of them",
    ),
    Case(
        id="dask-workers-zero",
        where="CLI",
        heading=DASK,
        bad="`--dask-workers 0`",
        argv=(*DISTILL, "--engine", "dask", "--dask-workers", "0"),
        message=E + "invalid --dask-workers=0: use a whole number ≥ 1",
        fix="at least 1",
    ),
    Case(
        id="api-dask-settings-threads",
        where="API",
        heading=DASK,
        bad="`DaskSettings(threads_per_worker=0)`",
        call=lambda ctx: _dask_settings(threads_per_worker=0),
        message="invalid threads_per_worker=0: use a whole number ≥ 1",
        fix="at least 1",
    ),
]


# ------------------------------------------------------------------------------------------- devices (issue 13)
DEVICE = "Devices (issue 13)"
_DEVICE_FIX = "use --device cpu or auto (auto: the first CUDA device when there is one, else the CPU)"


def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def _distill_config(**values: Any) -> object:
    from gbdt2nn_core.pipeline import DistillConfig

    return DistillConfig(**values)


# ------------------------------------------------------------------------------------------- issue 13: --nproc
NPROC = "Several processes: `--nproc` and torchrun (issue 13)"
SECTION_INTROS[NPROC] = (
    "`gbdt2nn distill --nproc N` checks its settings before it starts any process, so that a mistake is one line "
    "and nothing is written; see [scaling-out.md](scaling-out.md)."
)


def _under_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment torchrun gives each process it starts."""
    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }.items():
        monkeypatch.setenv(name, value)


CASES += [
    Case(
        id="device-cuda-without-gpu",
        where="CLI",
        heading=DEVICE,
        bad="`--device cuda` on a machine without a CUDA GPU (checked before the teacher trains)",
        patch=_no_gpu,
        argv=(*DISTILL, "--device", "cuda"),
        message=E + "invalid device='cuda': this machine has no CUDA GPU that PyTorch can use; " + _DEVICE_FIX,
        fix="`--device cpu`, or `auto` (the GPU when there is one)",
    ),
    Case(
        id="device-beyond-count",
        where="CLI",
        heading=DEVICE,
        bad="`--device cuda:3` on a machine with two GPUs",
        patch=_two_gpus,
        argv=(*DISTILL, "--device", "cuda:3"),
        message=E + "invalid device='cuda:3': this machine has 2 CUDA devices (cuda:0 to cuda:1); " + _DEVICE_FIX,
        fix="a device number below the count, `cpu` or `auto`",
    ),
    Case(
        id="device-unknown-name",
        where="CLI",
        heading=DEVICE,
        bad="`--device gpu` (not a device name)",
        argv=(*DISTILL, "--device", "gpu"),
        message=E + "invalid device='gpu': did you mean 'cuda'? use one of auto, cpu, cuda, cuda:N",
        fix="`cuda`",
    ),
    Case(
        id="device-predict-without-gpu",
        where="CLI",
        heading=DEVICE,
        bad="`gbdt2nn predict --device cuda` (or `explain`) on a machine without a CUDA GPU",
        patch=_no_gpu,
        argv=(*PREDICT, "--device", "cuda"),
        message=E + "invalid device='cuda': this machine has no CUDA GPU that PyTorch can use; " + _DEVICE_FIX,
        fix="leave `--device` out (the CPU)",
    ),
    Case(
        id="api-device-unknown-name",
        where="API",
        heading=DEVICE,
        bad='`DistillConfig(device="tpu")` (also the estimators\' `device=`)',
        call=lambda ctx: _distill_config(device="tpu"),
        message="invalid device='tpu': did you mean 'cpu'? use one of auto, cpu, cuda, cuda:N",
        fix="`cpu`, `cuda[:N]` or `auto`",
    ),
    Case(
        id="nproc-zero",
        where="CLI",
        heading=NPROC,
        bad="`--nproc 0`",
        argv=(*DISTILL, "--nproc", "0"),
        message=E + "invalid --nproc=0: use a whole number of processes ≥ 1",
        fix="at least 1 (1 trains in this process)",
    ),
    Case(
        id="nproc-with-dask",
        where="CLI",
        heading=NPROC,
        bad="`--nproc 2` with `--engine dask`",
        argv=(*DISTILL, "--engine", "dask", "--nproc", "2"),
        message=E + "invalid --nproc=2: the Dask engine prepares the teacher in one process; use --engine dask or "
        "--nproc, not both",
        fix="drop one of them",
    ),
    Case(
        id="nproc-under-torchrun",
        where="CLI",
        heading=NPROC,
        bad="`--nproc 2` in a command that torchrun starts",
        patch=_under_torchrun,
        argv=(*DISTILL, "--nproc", "2"),
        message=E + "invalid --nproc=2: this command already runs under torchrun, which starts the processes; leave "
        "--nproc out",
        fix="leave `--nproc` out: torchrun's `--nproc-per-node` says how many",
    ),
    Case(
        id="experiment-under-torchrun",
        where="CLI",
        heading=NPROC,
        bad="`gbdt2nn experiment` started by torchrun",
        patch=_under_torchrun,
        argv=("experiment", "--out", "exp"),
        message=E + "gbdt2nn experiment runs in one process, not under torchrun; run it without torchrun (gbdt2nn "
        "distill --nproc / torchrun train one student on several processes)",
        fix="run it without torchrun",
    ),
    Case(
        id="nproc-data-missing",
        where="CLI",
        heading=NPROC,
        bad="`--nproc 2 --data` names a file that does not exist",
        argv=("distill", "--data", "nowhere.csv", "--target", TARGET, "--out", "out", "--nproc", "2"),
        message=E + "data file 'nowhere.csv' does not exist; check the path passed to --data",
        fix="check the path (no process was started)",
    ),
]


# ------------------------------------------------------------------------------------------- the runner
def _matches(expected: str, actual: str) -> bool:
    pattern = ".+?".join(re.escape(part) for part in expected.split(WILDCARD))
    return re.fullmatch(pattern, actual) is not None


def _snapshot(folder: Path) -> dict[str, tuple[bool, bytes]]:
    return {
        path.relative_to(folder).as_posix(): (path.is_dir(), b"" if path.is_dir() else path.read_bytes())
        for path in folder.rglob("*")
    }


@pytest.fixture(scope="module")
def template(adult_run: Any, adult_dataset: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder: ``run/`` (a run folder), ``rows.csv`` (200 adult rows) and ``train.csv`` (300 rows)."""
    from gbdt2nn_core.pipeline.runfolder import write_run

    folder = tmp_path_factory.mktemp("bad-inputs")
    write_run(folder / "run", adult_run)
    frame = adult_dataset.frame
    seen = pd.Series(True, index=frame.index)
    for column in adult_run.data.schema.columns:  # rows whose categories the student saw (no notes about them)
        if column.kind == "categorical":
            seen &= frame[column.name].isna() | frame[column.name].astype(str).isin(column.categories)
    frame[seen].sample(200, random_state=5).to_csv(folder / "rows.csv", index=False)
    adult_dataset.frame.sample(300, random_state=6).to_csv(folder / "train.csv", index=False)
    return folder


@pytest.fixture
def workdir(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh copy of the template, as the current folder; a private cache; no debug tracebacks."""
    from gbdt2nn_core.host.registry import get_registry

    folder = tmp_path / "work"
    shutil.copytree(template, folder)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "160")
    for name in ("GBDT2NN_DEBUG", "GBDT2NN_DISABLE_PLUGINS", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    get_registry.cache_clear()
    yield folder
    get_registry.cache_clear()


def _run_cli(argv: tuple[str, ...]) -> int:
    from gbdt2nn_core.cli import main

    try:
        return main(list(argv))
    except SystemExit as exc:  # argparse
        return int(exc.code) if isinstance(exc.code, int) else 1


@pytest.mark.usefixtures("single_thread_torch")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(
    case: Case, workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.requires:
        pytest.importorskip(case.requires, reason=f"the case needs the optional {case.requires}")
    if case.setup is not None:
        case.setup(workdir)
    if case.patch is not None:
        case.patch(monkeypatch)
    before = _snapshot(workdir)
    if case.where == "CLI":
        code = _run_cli(case.argv)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.out + captured.err
        lines = captured.err.splitlines()
        if case.outcome == "warning":
            lines = [line for line in lines if line.startswith("gbdt2nn: warning:")]
            assert code == 0, captured.err
        if case.after_progress:
            lines = [line for line in lines if not line.startswith(("gbdt2nn distill · ", "✓ "))]
        assert len(lines) == 1, f"stderr is not one line:\n{captured.err}"
        assert _matches(case.message, lines[0]), f"\nexpected: {case.message}\nactual:   {lines[0]}"
        if case.outcome in ("note", "warning"):
            assert code == 0
            return
        assert code != 0
    else:
        from gbdt2nn_core.errors import Gbdt2nnError

        assert case.call is not None
        with pytest.raises(case.error or Gbdt2nnError) as info:
            case.call(Context(workdir=workdir, model=_model(workdir)))
        text = str(info.value)
        assert "\n" not in text
        assert _matches(case.message, text), f"\nexpected: {case.message}\nactual:   {text}"
    after = _snapshot(workdir)
    after.pop("cache", None)  # the TreeSHAP cache of an API run
    assert after == before, "the folder changed: " + ", ".join(sorted(set(after) ^ set(before)))


def _model(workdir: Path) -> Any:
    from gbdt2nn_core.pipeline.persistence import load_model

    return load_model(workdir / "run")


def test_catalogue_is_large_and_unique() -> None:
    assert len(CASES) >= 150  # issue 10's bar
    assert len([c for c in CASES if c.outcome == "error"]) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.where for c in CASES} == {"CLI", "API"}
    for case in CASES:
        assert (case.where == "CLI") == bool(case.argv), case.id
        assert (case.where == "API") == (case.call is not None), case.id


# ------------------------------------------------------------------------------------------- the document
_HEADER = """# Bad inputs: what gbdt2nn says, and what to do

Every user mistake gets **one line** that names the problem and the fix: on the command line as
`gbdt2nn: error: ...` on stderr with exit code 2 (1 for a bug: `gbdt2nn: internal error: ...`), and in Python as a
`gbdt2nn_core.Gbdt2nnError` whose fields carry the details (`DataError.problem`, `ConfigError.setting`,
`ModelFileError.path`, ...). No traceback is printed for a user mistake (set `GBDT2NN_DEBUG=1` to see one), and
nothing is left half-written: a run folder is assembled under a temporary name and renamed into place when
complete; an output file is written to a temporary file and renamed. A command that fails before its end leaves
the output folder as it found it.

This table is generated from `tests/test_bad_inputs.py`, which runs every row and checks the exact line, the
exit code and that nothing was written (`python tests/test_bad_inputs.py` regenerates it). In a message, `…`
stands for text from a library (a parser's own error) that may change between versions.

The last rows are not errors but documented behaviour that prints a `gbdt2nn: note:` line on stderr after
the output is written: columns the model does not use are ignored, and categories not seen in training are
treated as missing (encoded as the average category; the teacher sends them down its default branch).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """docs/bad-inputs.md, from :data:`CASES`."""
    lines = [_HEADER]
    plain = [c for c in CASES if not c.heading]
    sections = [
        ("Command line", [c for c in plain if c.where == "CLI" and c.outcome == "error"]),
        ("Python API", [c for c in plain if c.where == "API"]),
        ("Notes (not errors)", [c for c in plain if c.outcome == "note"]),
    ]
    for heading in dict.fromkeys(c.heading for c in CASES if c.heading):
        sections.append((heading, [c for c in CASES if c.heading == heading]))
    number = 0
    for title, cases in sections:
        lines += [f"## {title}", ""]
        if title in SECTION_INTROS:
            lines += [SECTION_INTROS[title], ""]
        lines += ["| # | bad input | what gbdt2nn says | fix |", "|---|---|---|---|"]
        for case in cases:
            number += 1
            shown = " ".join(case.argv)
            bad = f"{case.bad}<br>`gbdt2nn {_cell(shown)}`" if case.argv else case.bad
            lines.append(f"| {number} | {_cell(bad)} | `{_cell(case.message)}` | {_cell(case.fix)} |")
        lines.append("")
    return "\n".join(lines)


def test_doc_is_current() -> None:
    assert DOC.is_file(), "docs/bad-inputs.md is missing: run python tests/test_bad_inputs.py"
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/bad-inputs.md is out of date: run python tests/test_bad_inputs.py"
    )


def test_every_documented_message_is_tested() -> None:
    text = DOC.read_text(encoding="utf-8")
    for case in CASES:
        assert f"`{_cell(case.message)}`" in text, case.id


if __name__ == "__main__":
    DOC.write_text(render(), encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)} ({len(CASES)} cases)")
