"""DeepGBM's own GBDT2NN on adult, run from a local checkout of its code, so its speed is measured, not quoted.

    python benchmarks/deepgbm_reference.py --checkout PATH [--threads 1] [--seed 0] [--json OUT]

``PATH`` is a checkout of https://github.com/motefly/DeepGBM; its ``experiments/`` folder is what runs (the
top-level copy of the same files cannot import: its ``models/__init__.py`` names a ``models/pnn.py`` that only
``experiments/`` holds; the GBDT2NN code of the two is the same). The repository states no licence, so none of its
code is copied here: this script imports it from the checkout the user supplies. ``benchmarks/run.py --deepgbm
PATH`` runs this script in a fresh process in every end-to-end round, beside our plain and aligned runs, and
reports the ratios as measured side by side.

What runs is DeepGBM's own pipeline, with the settings docs/DESIGN.md §2.7 names (adult, stratified 80/20 split
with ``random_state=0``; 100 trees x 64 leaves, 10 groups of trees, layers 100-100-100-50-20, batch 512,
20 epochs) and, for the rest, those of DeepGBM's own script for its binary flight benchmark
(``experiments/scripts/flight_gbdt2nn_offline.sh``: tree learning rate 0.15, two leaf-embedding epochs, β from 1
by 0.7 every 2 epochs down to 0.3, test rows evaluated in batches of 5,000):

1. ``preprocess/encoding_nume.py``'s ``NumEncoder`` turns the table into its numeric features (numeric columns,
   a running target encoding of each categorical column, its ordinal code in bits), then ``data_helpers``'s
   standardisation;
2. ``train_models.train_GBDT2NN``: the LightGBM teacher, tree grouping, the leaf embedding, and the student's
   epochs through ``helper.TrainWithLog``, which evaluates the test rows at the end of every epoch (as our
   pipeline evaluates its validation rows).

It runs on today's libraries (this environment's torch and LightGBM, the same ones our side uses) through a few
compatibility shims, none of which changes what is computed: stub modules for ``torchvision`` and
``tensorboardX`` (imported, never used); ``lightgbm.train``'s removed ``early_stopping_rounds`` argument passed as
the callback that replaced it, and the teacher's hard-coded ``num_threads: 6`` set to ``--threads``;
``random.sample`` given a list where DeepGBM passes a dict's keys (Python 3.11 refuses a set-like population; the
draw is the same); ``models.components.one_hot`` given a contiguous tensor (torch 0.4's ``Tensor.type`` returned
one, today's keeps the column-sliced leaf indices' strides and the ``view`` after it fails). Epoch times are read
between the ends of consecutive test evaluations.

The output is one JSON line on stdout: phase times, every epoch's seconds, peak RSS, teacher and student test AUC.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import sys
import tempfile
import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from bench_measure import PhaseRecorder, configure_threads  # noqa: E402

#: DeepGBM's run on adult as docs/DESIGN.md §2.7 describes it (``main.py``'s argument names).
DEEPGBM_ADULT_ARGS: dict[str, Any] = {
    "model": "gbdt2nn",
    "task": "binary",
    "ntrees": 100,
    "maxleaf": 64,
    "mindata": 40,
    "tree_lr": 0.15,
    "nslices": 10,
    "tree_layers": "100,100,100,50",
    "embsize": 20,
    "emb_epoch": 2,
    "emb_lr": 1e-3,
    "lr": 1e-3,
    "l2_reg": 1e-6,
    "batch_size": 512,
    "test_batch_size": 5_000,
    "max_epoch": 20,
    "loss_init": 1.0,
    "loss_dr": 0.7,
    "loss_de": 2,
    "group_method": "Random",
    "feat_per_group": 64,
    "log_freq": 10**9,  # no per-step training-loss lines
    "test_freq": 10**9,  # test rows evaluated at the end of each epoch only
}
#: The phase that runs DeepGBM's ``train_GBDT2NN``: teacher, tree groups, leaf embedding, student (the report reads it).
TRAINING_PHASE = "DeepGBM train_GBDT2NN (teacher, leaf embedding, student)"
REQUIRED_FILES = tuple(
    f"experiments/{name}"
    for name in ("helper.py", "train_models.py", "models/gbdt2nn.py", "models/pnn.py", "preprocess/encoding_nume.py")
)


def checkout_problem(checkout: Path) -> str | None:
    """What makes ``checkout`` unusable as a DeepGBM checkout, with the fix, in one line; ``None`` when it is one."""
    missing = [name for name in REQUIRED_FILES if not (checkout / name).is_file()]
    if not missing:
        return None
    return (
        f"{checkout} is not a DeepGBM checkout (no {', '.join(missing)}); "
        "clone https://github.com/motefly/DeepGBM and pass its folder"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a checkout of github.com/motefly/DeepGBM")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, OpenMP, BLAS and LightGBM")
    parser.add_argument("--seed", type=int, default=0, help="DeepGBM's seed (numpy, random, torch)")
    parser.add_argument("--epochs", type=int, default=DEEPGBM_ADULT_ARGS["max_epoch"], help="student epochs")
    parser.add_argument("--rows", type=int, default=None, help="a sample of adult's rows (smoke runs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")
    args = parser.parse_args(argv)
    problem = checkout_problem(args.checkout)
    if problem is not None:
        parser.error(problem)
    if args.threads < 1 or args.epochs < 1:
        parser.error("--threads and --epochs must be at least 1")
    return args


def install_shims(threads: int) -> None:
    """Let DeepGBM's 2019 code import and run on today's libraries without changing what it computes."""
    import random

    import lightgbm

    for name in ("torchvision", "torchvision.transforms", "tensorboardX"):
        sys.modules.setdefault(name, types.ModuleType(name))  # imported by DeepGBM's modules, never used
    native_train = lightgbm.train

    def train(
        params: dict[str, Any], train_set: Any, *args: Any, early_stopping_rounds: int | None = None, **kwargs: Any
    ) -> Any:
        params = {**params, "num_threads": threads, "verbose": -1}
        if early_stopping_rounds is not None:
            kwargs["callbacks"] = [
                *kwargs.get("callbacks", []),
                lightgbm.early_stopping(early_stopping_rounds, verbose=False),
            ]
        return native_train(params, train_set, *args, **kwargs)

    lightgbm.train = train
    native_sample = random.sample

    def sample(population: Any, k: int, **kwargs: Any) -> list[Any]:
        return native_sample(list(population), k, **kwargs)

    random.sample = sample  # type: ignore[assignment]


def adult_csvs(folder: Path, rows: int | None) -> tuple[Path, Path, list[str], list[str], str]:
    """Bundled adult split 80/20, stratified, ``random_state=0``, as CSV files for DeepGBM's encoder."""
    from sklearn.model_selection import train_test_split

    from gbdt2nn_core.data import load_bundled

    adult = load_bundled("adult")
    frame = adult.frame
    if rows is not None:
        frame = frame.sample(rows, random_state=0).reset_index(drop=True)
    train, test = train_test_split(frame, test_size=0.2, stratify=frame[adult.target], random_state=0)
    features = [c for c in frame.columns if c != adult.target]
    categorical = [c for c in features if not _is_numeric(frame[c])]
    numeric = [c for c in features if c not in categorical]
    train_path, test_path = folder / "train.csv", folder / "test.csv"
    train.to_csv(train_path, index=False)
    test.to_csv(test_path, index=False)
    return train_path, test_path, categorical, numeric, adult.target


def _is_numeric(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column))


@contextlib.contextmanager
def _argv(values: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = values
    try:
        yield
    finally:
        sys.argv = saved


def load_encoder_class(checkout: Path) -> Any:
    """``NumEncoder`` from DeepGBM's ``preprocess/encoding_nume.py`` (the module parses ``sys.argv`` on import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "deepgbm_encoding_nume", checkout / "experiments" / "preprocess" / "encoding_nume.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load DeepGBM's encoder from {checkout}")
    module = importlib.util.module_from_spec(spec)
    with _argv(["encoding_nume.py", "unused"]):
        spec.loader.exec_module(module)
    return module.NumEncoder


class EpochClock:
    """Times each call of DeepGBM's ``TrainWithLog`` epoch by epoch: with ``test_freq`` past an epoch's steps it
    evaluates the test rows once, at the end of every epoch, so an epoch runs from one evaluation's end to the
    next (the first from the call's start)."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []

    def wrap_training(self, train_with_log: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.calls.append([time.perf_counter()])
            return train_with_log(*args, **kwargs)

        return timed

    def wrap_evaluation(self, evaluate: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            result = evaluate(*args, **kwargs)
            if self.calls:
                self.calls[-1].append(time.perf_counter())
            return result

        return timed

    def epochs_of_last_call(self, epochs: int) -> list[float]:
        """The last call's epoch times (a final evaluation after it, outside any epoch, is left out)."""
        marks = self.calls[-1][: epochs + 1]
        return [b - a for a, b in itertools.pairwise(marks)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    recorder = PhaseRecorder()
    started = time.perf_counter()
    with recorder.phase("import"):
        import numpy as np
        import torch

        torch.set_num_threads(args.threads)
        install_shims(args.threads)
        sys.path.insert(0, str(args.checkout / "experiments"))
        with contextlib.redirect_stdout(io.StringIO()):
            import helper
            import models.components
            import train_models
        native_one_hot = models.components.one_hot
        models.components.one_hot = lambda y, *rest, **kw: native_one_hot(y.contiguous(), *rest, **kw)
    with tempfile.TemporaryDirectory(prefix="deepgbm-adult-") as tmp:
        folder = Path(tmp)
        with recorder.phase("load adult"):
            train_csv, test_csv, categorical, numeric, label = adult_csvs(folder, args.rows)
        with recorder.phase("encode (DeepGBM's NumEncoder)"), contextlib.redirect_stderr(io.StringIO()):
            encoder = load_encoder_class(args.checkout)(categorical, numeric, 10, 0.99, label)
            with contextlib.redirect_stdout(io.StringIO()):
                encoder.fit_transform(str(train_csv), str(folder / "train"))
                encoder.transform(str(test_csv), str(folder / "test"))
            # data_helpers.load_data's standardisation, on the arrays it would read from these files
            train_x = np.load(folder / "train_features.npy").astype(np.float32)
            test_x = np.load(folder / "test_features.npy").astype(np.float32)
            train_y = np.load(folder / "train_labels.npy").astype(np.float32)
            test_y = np.load(folder / "test_labels.npy").astype(np.float32)
            mean, std = np.mean(train_x, axis=0), np.std(train_x, axis=0)
            train_x, test_x = (train_x - mean) / (std + 1e-5), (test_x - mean) / (std + 1e-5)
    settings = {**DEEPGBM_ADULT_ARGS, "max_epoch": args.epochs, "seeds": [args.seed], "seed": str(args.seed)}
    namespace = argparse.Namespace(**settings)
    import random

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    clock = EpochClock()
    helper.EvalTestset = train_models.EvalTestset = clock.wrap_evaluation(helper.EvalTestset)
    train_models.TrainWithLog = clock.wrap_training(helper.TrainWithLog)
    teachers: list[Any] = []
    native_teacher = train_models.TrainGBDT

    def teacher(*teacher_args: Any) -> Any:
        gbm, preds = native_teacher(*teacher_args)
        teachers.append(gbm)  # scored after the timed phase
        return gbm, preds

    train_models.TrainGBDT = teacher
    log = io.StringIO()
    with recorder.phase(TRAINING_PHASE), contextlib.redirect_stdout(log):
        _, _, metric = train_models.train_GBDT2NN(namespace, (train_x, train_y, test_x, test_y), "adult", "")
    recorder.finish()
    from sklearn.metrics import roc_auc_score

    teacher_auc = float(roc_auc_score(test_y.ravel(), teachers[0].predict(test_x)))
    epoch_s = clock.epochs_of_last_call(args.epochs)  # the leaf embedding's call came first
    return {
        "seed": args.seed,
        "threads": args.threads,
        "rows": int(len(train_x) + len(test_x)),
        "features": int(train_x.shape[1]),
        "total_s": time.perf_counter() - started,
        "phases": recorder.phases,
        "epoch_s": epoch_s,
        "process_peak_mib": recorder.peak.process_peak,
        "peak_method": recorder.peak.method,
        "metrics": {"student_test_auc": float(metric[1]), "teacher_test_auc": teacher_auc},
        "settings": {k: v for k, v in settings.items() if k not in ("log_freq", "test_freq")},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    import json

    args = parse_args(argv)
    configure_threads(args.threads)
    result = run(args)
    text = json.dumps(result)
    if args.json is not None:
        args.json.write_text(text, encoding="utf-8")
    print(text)
    return result


if __name__ == "__main__":
    main()
