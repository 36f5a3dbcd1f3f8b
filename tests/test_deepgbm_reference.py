"""benchmarks/deepgbm_reference.py: DeepGBM's own code run side by side with ours, from a checkout of it.

DeepGBM's repository cannot be cloned here (no network at test time, and nothing of it is copied into ours), so a
stand-in checkout with DeepGBM's layout and call structure plays its part: the same modules and functions, called
the way DeepGBM calls them, on the same 2019 APIs the harness's shims exist for (``lightgbm.train`` with
``early_stopping_rounds``, ``random.sample`` of a dict's keys, ``import torchvision``, a module that parses
``sys.argv`` when imported). Its ``TrainWithLog`` keeps its own clock of every epoch, the reference the harness's
epoch times are checked against.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

STAND_IN = {
    "experiments/models/__init__.py": """
        from models.components import *
        from models.gbdt2nn import GBDT2NN
        from models.pnn import PNN
    """,
    "experiments/models/pnn.py": "PNN = None\n",
    "experiments/models/gbdt2nn.py": "GBDT2NN = None\n",
    "experiments/models/components.py": """
        import random

        import lightgbm as lgb
        import numpy as np
        import torch
        import torchvision  # DeepGBM imports it and never uses it

        def one_hot(y, numslot):
            return torch.zeros(y.shape[0], numslot).scatter_(1, y.view(-1, 1).long(), 1)

        def TrainGBDT(train_x, train_y, test_x, test_y, lr, num_trees, maxleaf, mindata, task):
            params = {"objective": "binary", "num_leaves": maxleaf, "num_threads": 6, "learning_rate": lr}
            train = lgb.Dataset(train_x, train_y.reshape(-1))
            valid = lgb.Dataset(test_x, test_y.reshape(-1), reference=train)
            gbm = lgb.train(params, train, num_boost_round=num_trees, early_stopping_rounds=2, valid_sets=valid)
            return gbm, gbm.predict(train_x, raw_score=True).astype(np.float32)

        def group_trees(n_trees, n_groups):
            keys = random.sample({i: None for i in range(n_trees)}.keys(), n_trees)
            return [keys[g::n_groups] for g in range(n_groups)]
    """,
    "experiments/helper.py": """
        import json
        import os
        import time

        import numpy as np
        import sklearn.metrics
        import torch

        CLOCK = os.path.join(os.path.dirname(__file__), "clock.json")

        def EvalTestset(test_x, test_y, model, test_batch_size, test_x_opt=None):
            return 0.0, np.asarray(test_x[:, 0])

        def TrainWithLog(args, plot_title, train_x, train_y, train_y_opt, test_x, test_y, model, opt,
                         epoch, batch_size, n_output, key=""):
            epochs = []
            for e in range(epoch):
                started = time.perf_counter()
                time.sleep(0.02 * (1 + e % 3))  # epochs of different lengths
                EvalTestset(test_x, test_y, model, args.test_batch_size)
                epochs.append(time.perf_counter() - started)
            calls = json.load(open(CLOCK)) if os.path.exists(CLOCK) else []
            json.dump(calls + [epochs], open(CLOCK, "w"))
            return 0.0
    """,
    "experiments/train_models.py": """
        import sklearn.metrics

        from models import *
        from helper import *

        def train_GBDT2NN(args, num_data, plot_title, key, trained_gbdt_model=None, kd_type="emb"):
            train_x, train_y, test_x, test_y = num_data
            gbm, _ = TrainGBDT(train_x, train_y, test_x, test_y, args.tree_lr, args.ntrees, args.maxleaf,
                               args.mindata, args.task)
            group_trees(gbm.num_trees(), args.nslices)
            TrainWithLog(args, plot_title, train_x, train_y, None, test_x, test_y, None, None,
                         args.emb_epoch, args.batch_size, 1, key + "emb-")
            TrainWithLog(args, plot_title, train_x, train_y, None, test_x, test_y, None, None,
                         args.max_epoch, args.batch_size, 1, key)
            _, pred = EvalTestset(test_x, test_y, None, args.test_batch_size)
            auc = sklearn.metrics.roc_auc_score(test_y.ravel(), pred)
            return None, None, (0.0, auc)
    """,
    "experiments/preprocess/encoding_nume.py": """
        import argparse

        import numpy as np
        import pandas as pd

        parser = argparse.ArgumentParser()
        parser.add_argument("out_dir")
        args = vars(parser.parse_args())  # as DeepGBM's: parsed when the module is imported

        class NumEncoder:
            def __init__(self, cate_col, nume_col, threshold, thresrate, label):
                self.cate_col, self.nume_col, self.label = cate_col, nume_col, label
                self.codes = {}

            def _write(self, frame, out):
                columns = [frame[c].to_numpy(dtype=float) for c in self.nume_col]
                for c in self.cate_col:
                    columns.append(frame[c].map(self.codes[c]).fillna(-1).to_numpy(dtype=float))
                np.save(out + "_features.npy", np.stack(columns, axis=1))
                np.save(out + "_labels.npy", frame[self.label].to_numpy(dtype=float).reshape(-1, 1))

            def fit_transform(self, path, out):
                frame = pd.read_csv(path)
                self.codes = {c: {v: i for i, v in enumerate(sorted(frame[c].astype(str).unique()))}
                              for c in self.cate_col}
                self._write(frame, out)

            def transform(self, path, out):
                self._write(pd.read_csv(path), out)
    """,
}


@pytest.fixture
def stand_in_checkout(tmp_path: Path) -> Path:
    for name, text in STAND_IN.items():
        path = tmp_path / "DeepGBM" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text), encoding="utf-8")
    return tmp_path / "DeepGBM"


def run_harness(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BENCHMARKS / "deepgbm_reference.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)


def test_the_harness_times_every_epoch_of_deepgbm_s_student(stand_in_checkout: Path) -> None:
    done = run_harness("--checkout", str(stand_in_checkout), "--rows", "800", "--epochs", "4", "--threads", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # DeepGBM's own clock: the leaf embedding's call, then the student's; the harness reports the student's
    embedding, student = json.loads((stand_in_checkout / "experiments" / "clock.json").read_text())
    assert len(embedding) == 2  # DeepGBM's script's two leaf-embedding epochs
    assert len(result["epoch_s"]) == len(student) == 4
    assert result["epoch_s"] == pytest.approx(student, abs=0.01)
    assert result["rows"] == 800
    assert result["features"] == 14  # adult's columns, less the label
    assert 0.5 < result["metrics"]["teacher_test_auc"] <= 1.0  # the shimmed lightgbm.train fitted a teacher
    assert 0.0 <= result["metrics"]["student_test_auc"] <= 1.0
    phases = [p["phase"] for p in result["phases"]]
    assert "encode (DeepGBM's NumEncoder)" in phases
    assert result["process_peak_mib"] > 0
    assert sum(p["seconds"] for p in result["phases"]) == pytest.approx(result["total_s"], rel=0.05, abs=0.25)


def test_a_folder_that_is_not_a_checkout_gets_one_line_naming_the_fix(tmp_path: Path) -> None:
    done = run_harness("--checkout", str(tmp_path))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "is not a DeepGBM checkout" in last
    assert "clone https://github.com/motefly/DeepGBM" in last
    assert "Traceback" not in done.stderr
