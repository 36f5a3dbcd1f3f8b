"""A third-party plugin, installed like any other, is used by name: examples/gbdt2nn-example-plugin.

Runs in ``nox -s example``, which installs the core, the lightgbm teacher and the example (and nothing else);
elsewhere the example is not installed and the module skips itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gbdt2nn_core.data import load_bundled
from gbdt2nn_core.pipeline.distill import DistillConfig, compare

pytest.importorskip("gbdt2nn_example", reason="install examples/gbdt2nn-example-plugin (nox -s example does)")

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_gbdt2nn_plugins_lists_the_examples_components() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gbdt2nn_core.cli", "plugins", "--json"], capture_output=True, text=True, check=True
    )
    report = json.loads(result.stdout)
    mine = {(c["kind"], c["name"]) for c in report["components"] if c["distribution"] == "gbdt2nn-example-plugin"}
    assert mine == {("attributor", "smoothgrad"), ("alignment loss", "huber")}
    (plugin,) = [p for p in report["plugins"] if p["name"] == "example"]
    assert plugin["status"] == "loaded"


def test_a_distillation_uses_the_examples_attributor_and_loss_by_name(tmp_path: Path) -> None:
    adult = load_bundled("adult")
    frame = adult.frame.sample(2000, random_state=0).reset_index(drop=True)
    config = DistillConfig(
        teacher="lightgbm",
        teacher_options={"n_estimators": 20, "num_leaves": 15, "num_threads": 1},
        student_options={"epochs": 4, "n_groups": 4, "hidden": (32, 32), "batch_size": 256},
        attributor="smoothgrad",
        attributor_options={"samples": 4},
        alignment="huber",
        alignment_weight=30.0,  # Huber compares values (like mse), and TreeSHAP values on adult are small
        cache_dir=str(tmp_path / "cache"),
    )
    plain, aligned = compare(frame, adult.target, config)

    before, after = plain.metrics["student"], aligned.metrics["student"]
    assert after["alignment"] == {"attributor": "smoothgrad", "loss": "huber", "weight": 30.0}
    assert type(aligned.attributor).__name__ == "SmoothGrad"
    assert after["test"]["auc"] > 0.8
    # Pulling the example's smoothgrad attributions towards TreeSHAP makes them agree better with TreeSHAP.
    assert after["agreement"]["spearman"] > before["agreement"]["spearman"] + 0.05, (
        before["agreement"],
        after["agreement"],
    )
