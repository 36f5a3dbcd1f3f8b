"""The joint-vs-plain experiment: does imitating the teacher's explanation give better explanations and predictions?

``gbdt2nn experiment`` (or :func:`run_experiment`) trains, on one dataset and several seeds, the teacher, a plain
GBDT2NN student, a jointly trained student for every attributor × alignment loss and an independent
explanation network; it resumes interrupted runs from per-epoch checkpoints and writes ``results.json``,
``report.md`` and a self-contained ``report.html`` with plots. See ``docs/experiment.md``.
"""

from __future__ import annotations

from gbdt2nn_core.experiment.config import ExperimentConfig, ImitationConfig, read_experiment_file
from gbdt2nn_core.experiment.results import collect_results, load_results
from gbdt2nn_core.experiment.runner import Configuration, ExperimentRunner, plan, run_experiment

__all__ = [
    "Configuration",
    "ExperimentConfig",
    "ExperimentRunner",
    "ImitationConfig",
    "collect_results",
    "load_results",
    "plan",
    "read_experiment_file",
    "run_experiment",
    "write_report",
]


def write_report(*args: object, **kwargs: object) -> object:
    """Render ``report.md``, ``report.html`` and the figures (imports matplotlib only when called)."""
    from gbdt2nn_core.experiment.report import write_report as _write_report

    return _write_report(*args, **kwargs)  # type: ignore[arg-type]
