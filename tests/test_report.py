"""The experiment's results, report and manifest: numbers match the runs, the HTML stands alone, manifests are full."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gbdt2nn_core.experiment.report import fmt, markdown_table, write_report
from gbdt2nn_core.experiment.results import collect_results, load_results

PNG = b"\x89PNG\r\n\x1a\n"


def _run_metrics(out: Path, run: str) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"runs/*/{run}/metrics.json"))]


def test_results_are_mean_and_std_of_the_runs_metrics(small_experiment: Path) -> None:
    results = load_results(small_experiment)
    assert results["complete"]
    assert results["missing"] == []
    assert results["seeds"] == [0, 1]
    for method_id, run, key in (
        ("plain/structure", "plain", "structure"),
        ("joint/structure/mse", "joint-structure-mse", "structure"),
        ("independent", "independent", "imitation"),
    ):
        runs = _run_metrics(small_experiment, run)
        entry = results["summary"][method_id]
        for group in ("test", "agreement"):
            for metric, stats in entry[group].items():
                students = [m["student"] for m in runs]
                values = np.array(
                    [
                        (s["agreement_by_attributor"][key] if group == "agreement" else s[group])[metric]
                        for s in students
                    ]
                )
                assert stats["mean"] == pytest.approx(values.mean(), rel=1e-12, abs=1e-15)
                assert stats["std"] == pytest.approx(values.std(ddof=1), rel=1e-9, abs=1e-15)
                assert stats["n"] == 2
    teachers = [json.loads(p.read_text()) for p in sorted(small_experiment.glob("runs/*/teacher/teacher.json"))]
    assert results["teacher"]["test"]["auc"]["mean"] == pytest.approx(np.mean([t["test"]["auc"] for t in teachers]))


def test_paired_differences_are_joint_minus_plain_per_seed(small_experiment: Path) -> None:
    results = load_results(small_experiment)
    joint = _run_metrics(small_experiment, "joint-structure-mse")
    plain = _run_metrics(small_experiment, "plain")
    paired = results["paired"]["joint/structure/mse"]
    assert paired["against"] == "plain/structure"
    expected = [
        j["student"]["agreement_by_attributor"]["structure"]["spearman"]
        - p["student"]["agreement_by_attributor"]["structure"]["spearman"]
        for j, p in zip(joint, plain, strict=True)
    ]
    assert paired["difference"]["spearman"]["mean"] == pytest.approx(np.mean(expected))
    assert paired["difference"]["auc"]["values"] == pytest.approx(
        [j["student"]["test"]["auc"] - p["student"]["test"]["auc"] for j, p in zip(joint, plain, strict=True)]
    )


def test_report_shows_the_numbers_of_results_json(small_experiment: Path) -> None:
    results = load_results(small_experiment)
    markdown = (small_experiment / "report.md").read_text()
    page = (small_experiment / "report.html").read_text()
    for method_id in ("plain/structure", "joint/structure/mse", "independent"):
        entry = results["summary"][method_id]
        for value in (entry["test"]["auc"], entry["agreement"]["spearman"], entry["agreement"]["top5"]):
            assert fmt(value) in markdown
            assert fmt(value) in page
    assert fmt(results["teacher"]["test"]["auc"]) in markdown
    assert markdown_table(results) in markdown
    assert "## Joint minus plain, paired by seed" in markdown
    for name in ("agreement", "scatter", "curves", "example", "importance"):
        figure = small_experiment / "figures" / f"{name}.png"
        assert figure.read_bytes().startswith(PNG)
        assert f"(figures/{name}.png)" in markdown


def test_html_report_is_self_contained(small_experiment: Path) -> None:
    page = (small_experiment / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 5
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page
    assert "<link" not in page
    assert "url(" not in page
    assert "http://" not in page
    assert "https://" not in page


def test_manifest_records_what_reproduces_the_result(small_experiment: Path, experiment_csv: Path) -> None:
    from gbdt2nn_core.cache import frame_digest
    from gbdt2nn_core.data import read_table

    manifest = json.loads((small_experiment / "manifest.json").read_text())
    packages = manifest["packages"]
    assert packages["gbdt2nn-core"]
    assert {"lightgbm", "mse"} <= set(packages["plugins"])
    assert all(p["version"] and p["distribution"] for p in packages["plugins"].values())
    assert {"torch", "numpy", "lightgbm", "scikit-learn"} <= set(packages["libraries"])
    assert manifest["python"].count(".") == 2
    assert manifest["torch"]["version"]
    assert manifest["torch"]["threads"] == 1
    assert manifest["seeds"] == [0, 1]
    assert manifest["data"]["sha256"] == frame_digest(read_table(experiment_csv))
    assert manifest["config"]["student_options"]["epochs"] == 2
    assert manifest["config"]["attributors"] == ["structure"]
    assert [c["name"] for c in manifest["components"]["configurations"]] == [
        "plain",
        "independent",
        "joint-structure-mse",
    ]
    for path in small_experiment.glob("runs/*/*/metrics.json"):
        run_manifest = json.loads((path.parent / "manifest.json").read_text())
        assert run_manifest["run"]["seed"] == int(path.parent.parent.name)
        assert run_manifest["run"]["name"] == path.parent.name
        assert run_manifest["config_digest"] == manifest["config_digest"]


def test_partial_experiment_reports_what_finished(small_experiment: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(small_experiment, partial)
    (partial / "runs/1/joint-structure-mse/metrics.json").unlink()
    shutil.rmtree(partial / "runs/0/independent")
    shutil.rmtree(partial / "runs/1/independent")
    results = collect_results(partial)
    assert not results["complete"]
    assert set(results["missing"]) == {"0/independent", "1/independent", "1/joint-structure-mse"}
    assert results["summary"]["joint/structure/mse"]["seeds"] == [0]
    assert results["summary"]["independent"]["seeds"] == []
    write_report(partial, results)
    markdown = (partial / "report.md").read_text()
    assert "**Incomplete**: 3 runs have not finished yet" in markdown
    assert "joint · structure · mse (1 of 2 seeds)" in markdown
    assert (partial / "figures" / "importance.png").read_bytes().startswith(PNG)
