"""Run the joint-vs-plain experiment: per seed one teacher and one TreeSHAP, shared by every configuration.

Configurations (each trained once per seed, in this order, so that a partial experiment has every seed of the
methods it finished):

- ``plain``: GBDT2NN distilled with λ = 0, explained afterwards with every attributor of the experiment;
- ``independent``: an explanation network that learns TreeSHAP on its own; predictions are the plain student's;
- ``joint-<attributor>-<loss>``: GBDT2NN distilled with ``λ · L_align(attributor, loss)``.

The folder it writes::

    DIR/manifest.json                          versions, seeds, data hash, full config
    DIR/log.jsonl                              one line per event (start, resume, done, skip)
    DIR/cache/                                 the teachers' TreeSHAP (npz, keyed by model and rows)
    DIR/runs/<seed>/teacher/                   teacher model, teacher.json, explanations.npz (test rows)
    DIR/runs/<seed>/<config>/                  manifest.json, checkpoint.pt (while training), metrics.json,
                                               history.json, attributions.npz, the student (safetensors)

A configuration whose ``metrics.json`` exists is complete and skipped; one with a ``checkpoint.pt`` resumes from
its last finished epoch (the student saves after the leaf embedding and after every epoch), and ends exactly
where an uninterrupted run would have.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.data.cache import ExplanationCache
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.experiment.config import ExperimentConfig
from gbdt2nn_core.experiment.imitation import ExplanationNetwork
from gbdt2nn_core.experiment.manifest import build_manifest, data_digest
from gbdt2nn_core.experiment.names import IMITATION, INDEPENDENT, PLAIN
from gbdt2nn_core.host.interfaces import Attributor, Student, Teacher
from gbdt2nn_core.host.registry import Registry, get_registry
from gbdt2nn_core.model_files import write_atomic
from gbdt2nn_core.pipeline import Pipeline, Prepared, check_explains
from gbdt2nn_core.pipeline.metrics import Metrics, StudentMetrics, agreement, explained_outputs, task_metrics
from gbdt2nn_core.pipeline.runfolder import write_json
from gbdt2nn_core.progress import NullProgress, Progress
from gbdt2nn_core.student.kit import batch_size_for_rows

__all__ = [
    "INDEPENDENT",
    "PLAIN",
    "Configuration",
    "ExperimentRunner",
    "SeedContext",
    "plan",
    "run_experiment",
    "write_json",
    "write_npz",
]


@attrs.frozen(kw_only=True)
class Configuration:
    """One way of training a student (or explanation network), run once per seed."""

    name: str
    kind: Literal["plain", "joint", "independent"]
    attributor: str | None = None
    loss: str | None = None
    weight: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def resolve_components(config: ExperimentConfig, registry: Registry) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The experiment's attributors and losses: the chosen ones, checked, or every installed one."""
    registry.spec("teacher", config.teacher)
    registry.spec("student", config.student)

    def usable(name: str) -> Attributor:
        return registry.attributor(name, **config.attributor_options.get(name, {}))

    if config.attributors is None:  # every one that can train and explains this student
        candidates = {name: usable(name) for name in registry.names("attributor")}
        attributors = tuple(
            name
            for name, attributor in candidates.items()
            if attributor.differentiable and (attributor.students is None or config.student in attributor.students)
        )
    else:
        for name in config.attributors:
            registry.spec("attributor", name)
            if not usable(name).differentiable:
                raise ConfigError(
                    setting="attributors",
                    value=name,
                    fix="joint learning back-propagates through the attributor: choose a differentiable one",
                )
            check_explains(name, usable(name), config.student)
        attributors = config.attributors
    if config.losses is None:
        losses = registry.names("alignment loss")
    else:
        for name in config.losses:
            registry.spec("alignment loss", name)
        losses = config.losses
    for kind, names, given in (
        ("attributor_options", attributors, dict(config.attributor_options)),
        ("loss_options", losses, dict(config.loss_options)),
        ("alignment_weights", losses, dict(config.alignment_weights)),
    ):
        unused = sorted(set(given) - set(names))
        if unused:
            raise ConfigError(
                setting=f"{kind}.{unused[0]}",
                value=given[unused[0]],
                fix=f"the experiment does not run {unused[0]!r}: remove it, or run it (now: {', '.join(names)})",
            )
    if not attributors:
        raise ConfigError(
            setting="attributors", value=(), fix="install an attributor plugin (pip install gbdt2nn-gradient)"
        )
    if not losses:
        raise ConfigError(setting="losses", value=(), fix="install an alignment loss plugin (pip install gbdt2nn-mse)")
    return attributors, losses


def plan(config: ExperimentConfig, attributors: tuple[str, ...], losses: tuple[str, ...]) -> list[Configuration]:
    """Every configuration of the experiment, in the order they run."""
    configurations = [Configuration(name=PLAIN, kind="plain")]
    if config.independent:
        configurations.append(Configuration(name=INDEPENDENT, kind="independent"))
    configurations += [
        Configuration(
            name=f"joint-{attributor}-{loss}",
            kind="joint",
            attributor=attributor,
            loss=loss,
            weight=config.weight(loss),
        )
        for attributor in attributors
        for loss in losses
    ]
    return configurations


class SeedContext:
    """What every configuration of one seed shares: the pipeline's prepared split (teacher, TreeSHAP, margins...)."""

    def __init__(self, runner: ExperimentRunner, seed: int) -> None:
        config, registry = runner.config, runner.registry
        self.seed = seed
        folder = runner.out / "runs" / str(seed) / "teacher"
        folder.mkdir(parents=True, exist_ok=True)
        cache = ExplanationCache(runner.cache_dir)
        self.pipeline = Pipeline(config.distill_config(seed), registry, cache=cache)
        split = self.pipeline.split(runner.frame, runner.target)
        model_path = folder / f"teacher{registry.teacher_suffix(config.teacher)}"
        record_path = folder / "teacher.json"
        stored = json.loads(record_path.read_text()) if record_path.is_file() and model_path.is_file() else None
        # the booster trained earlier in this experiment: same model, same TreeSHAP cache keys, same checkpoints
        saved = registry.teacher(config.teacher, model=str(model_path)) if stored is not None else None
        self.prepared: Prepared = self.pipeline.prepare_split(split, saved)
        self.teacher: Teacher = self.prepared.teacher
        if stored is None:
            self.teacher.save(model_path)
        self.data = self.prepared.data
        # the test rows' explanations now (every configuration is judged on them); the training rows' are
        # explained when a configuration needs them (only the aligned rows for a joint student)
        self.shap_test = self.prepared.shap_test
        self.background = self.prepared.background
        monitor = min(config.monitor_rows, len(self.data.z_test))
        self.monitor_index = np.sort(np.random.default_rng(seed + 1).permutation(len(self.data.z_test))[:monitor])
        self.features = [str(name) for name in split.train_frame.columns]

        if stored is None:
            timings = self.prepared.timings
            self.record = {
                "seed": seed,
                "teacher": config.teacher,
                "fingerprint": self.teacher.fingerprint(),
                "rows": {"train": len(self.data.y_train), "test": len(self.data.y_test)},
                "features": self.features,
                "test": task_metrics(self.data.task, self.data.y_test, self.prepared.teacher_margin_test),
                "timings": {
                    "teacher_s": round(timings["teacher_s"], 4),
                    "treeshap_s": round(timings.get("treeshap_s", 0.0), 4),
                    "treeshap_cache_hits": cache.hits,
                },
            }
            write_npz(
                folder / "explanations.npz",
                shap_test=self.shap_test.values.astype(np.float32),
                expected_value=np.asarray(self.shap_test.expected_value),
                teacher_margin=np.asarray(self.prepared.teacher_margin_test, dtype=np.float32),
                y_test=np.asarray(self.data.y_test),
            )
            write_json(record_path, self.record)
        else:
            self.record = stored
            if stored.get("fingerprint") != self.teacher.fingerprint():  # pragma: no cover - a tampered folder
                raise DataError(
                    problem=f"the saved teacher of seed {seed} does not match its record",
                    fix=f"delete {folder} and run again with --resume",
                )


class ExperimentRunner:
    """Runs (or resumes) an experiment into ``out``; see the module docs for the folder it writes."""

    def __init__(
        self,
        config: ExperimentConfig,
        out: Path,
        *,
        frame: pd.DataFrame,
        target: str,
        data_source: str,
        registry: Registry | None = None,
        progress: Progress | None = None,
        resume: bool = False,
        echo: Callable[[str], None] | None = None,
        argv: list[str] | None = None,
        on_epoch_end: Callable[[Configuration, int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.out = Path(out)
        self.frame, self.target = frame, target
        self.registry = registry or get_registry()
        self.progress = progress or NullProgress()
        self.echo = echo or (lambda _message: None)
        self.resume = resume
        self._user_on_epoch_end = on_epoch_end
        self.attributors, self.losses = resolve_components(config, self.registry)
        self.configurations = plan(config, self.attributors, self.losses)
        self.cache_dir = Path(config.cache_dir) if config.cache_dir else self.out / "cache"
        self._contexts: dict[int, SeedContext] = {}
        self._data = {
            "source": data_source,
            "target": target,
            "rows": len(frame),
            "columns": len(frame.columns),
            "sha256": data_digest(frame),
        }
        self._argv = argv

    # ------------------------------------------------------------------ folder
    def _open_folder(self) -> dict[str, Any]:
        manifest_path = self.out / "manifest.json"
        if self.out.exists() and not self.out.is_dir():
            raise DataError(problem=f"--out {str(self.out)!r} is a file", fix="choose a folder for the experiment")
        if manifest_path.is_file():
            if not self.resume:
                raise DataError(
                    problem=f"{str(self.out)!r} already holds an experiment",
                    fix="pass --resume to continue it, or choose another --out",
                )
            stored = json.loads(manifest_path.read_text())
            self._check_same_experiment(stored)
            return dict(stored)
        if self.out.is_dir() and any(self.out.iterdir()):
            raise DataError(
                problem=f"the output folder {str(self.out)!r} is not empty and holds no experiment",
                fix="choose another --out",
            )
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = build_manifest(
            registry=self.registry,
            config=self.config.to_json(),
            config_digest=self.config.digest(),
            data=self._data,
            components={
                "attributors": list(self.attributors),
                "losses": list(self.losses),
                "configurations": [c.to_json() for c in self.configurations],
            },
            argv=self._argv,
        )
        write_json(manifest_path, manifest)
        return manifest

    def _check_same_experiment(self, stored: dict[str, Any]) -> None:
        if stored.get("data", {}).get("sha256") != self._data["sha256"]:
            raise ConfigError(
                setting="--resume",
                value=str(self.out),
                fix="the experiment there ran on other data: pass the same data, or choose another --out",
            )
        if stored.get("config_digest") != self.config.digest():
            old, new = stored.get("config", {}), self.config.to_json()
            differing = sorted(
                k for k in set(old) | set(new) if k not in ("cache_dir", "threads") and old.get(k) != new.get(k)
            )
            first = differing[0] if differing else "?"
            raise ConfigError(
                setting="--resume",
                value=str(self.out),
                fix=f"the experiment there used {first}={old.get(first)!r}, not {new.get(first)!r}: "
                "resume it with the same settings, or choose another --out",
            )

    def _log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, **fields})
        with (self.out / "log.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def run_folder(self, seed: int, configuration: Configuration) -> Path:
        return self.out / "runs" / str(seed) / configuration.name

    # ------------------------------------------------------------------ running
    def context(self, seed: int) -> SeedContext:
        if seed not in self._contexts:
            self.echo(f"seed {seed}: teacher and TreeSHAP")
            with self.progress.step(f"seed {seed}: teacher ({self.config.teacher}) and TreeSHAP"):
                self._contexts[seed] = SeedContext(self, seed)
        return self._contexts[seed]

    def run(self) -> Path:
        """Train every configuration that is not complete yet; returns the experiment folder."""
        import torch

        previous_threads = torch.get_num_threads()
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        try:
            manifest = self._open_folder()
            self._log("open", resume=self.resume, configurations=len(self.configurations))
            del manifest
            for seed in self.config.seeds:
                self.context(seed)
            for configuration in self.configurations:
                for seed in self.config.seeds:
                    folder = self.run_folder(seed, configuration)
                    if (folder / "metrics.json").is_file():
                        self._log("skip", seed=seed, run=configuration.name)
                        continue
                    self._run_one(self.context(seed), configuration, folder)
        finally:
            torch.set_num_threads(previous_threads)
        self._log("complete")
        return self.out

    def _run_one(self, ctx: SeedContext, configuration: Configuration, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        checkpoint = folder / "checkpoint.pt"
        manifest = json.loads((self.out / "manifest.json").read_text())
        manifest["run"] = {"seed": ctx.seed, **configuration.to_json()}
        write_json(folder / "manifest.json", manifest)
        self._log("start", seed=ctx.seed, run=configuration.name, checkpoint=checkpoint.is_file())
        self.echo(f"seed {ctx.seed}: {configuration.name}")
        if configuration.kind == "independent":
            metrics, attributions, history = self._train_independent(ctx, configuration, checkpoint)
        else:
            metrics, attributions, history = self._train_student(ctx, configuration, checkpoint, folder)
        write_npz(folder / "attributions.npz", **{k: v.astype(np.float32) for k, v in attributions.items()})
        write_json(folder / "history.json", history)
        write_json(folder / "metrics.json", metrics)  # last: its presence marks the configuration complete
        checkpoint.unlink(missing_ok=True)
        self._log("done", seed=ctx.seed, run=configuration.name, resumed_from_epoch=metrics["resumed_from_epoch"])
        summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics["student"]["agreement"].items() if k != "mse")
        self.echo(f"seed {ctx.seed}: {configuration.name} done in {metrics['timings']['train_s']:.1f} s · {summary}")

    def _options(self, names: list[str]) -> dict[str, dict[str, Any]]:
        return {name: dict(self.config.attributor_options.get(name, {})) for name in names}

    def _train_student(
        self, ctx: SeedContext, configuration: Configuration, checkpoint: Path, folder: Path
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        from gbdt2nn_core.pipeline.persistence import DistilledModel, save_model

        config, data, pipeline = self.config, ctx.data, ctx.pipeline
        aggregation = data.encoder.aggregation()
        explained_by = list(self.attributors) if configuration.kind == "plain" else [str(configuration.attributor)]
        attributor = explained_by[0]
        loss = str(configuration.loss) if configuration.kind == "joint" else pipeline.config.alignment
        # fresh attributors for measuring agreement (never the training attributor: its state must not move)
        monitors = pipeline.attributors(self._options(explained_by)) if len(ctx.monitor_index) else {}
        background = ctx.background
        z_monitor = data.z_test[ctx.monitor_index]
        y_monitor = data.y_test[ctx.monitor_index]
        shap_monitor = ctx.shap_test.values[ctx.monitor_index]
        # multiclass: the class the teacher predicts, as the final agreement (pipeline/evaluate.py) compares
        explained = explained_outputs(data.task, ctx.prepared.teacher_margin_test[ctx.monitor_index])

        def on_epoch_end(trained: Student, epoch: int) -> dict[str, float]:
            import torch

            started = time.perf_counter()
            extra: dict[str, float] = {}
            if monitors:
                margin = trained.predict_margin(z_monitor)
                extra.update({f"val_{k}": v for k, v in task_metrics(data.task, y_monitor, margin).items()})
                for name, monitor in monitors.items():
                    monitor.fit(trained.module, torch.as_tensor(background, dtype=torch.float32))
                    values = trained.attributions(z_monitor, monitor, aggregation)
                    scores = agreement(values, shap_monitor, explained=explained)
                    extra[f"spearman/{name}"] = scores["spearman"]
                    extra[f"cosine/{name}"] = scores["cosine"]
            if self._user_on_epoch_end is not None:
                self._user_on_epoch_end(configuration, ctx.seed, epoch)
            extra["monitor_s"] = time.perf_counter() - started
            return extra

        started = time.perf_counter()
        trained = pipeline.train(
            ctx.prepared,
            alignment_weight=configuration.weight if configuration.kind == "joint" else 0.0,
            attributor=attributor,
            attributor_options=config.attributor_options.get(attributor, {}),
            alignment=loss,
            alignment_options=config.loss_options.get(loss, {}),
            on_epoch_end=on_epoch_end,
            checkpoint=checkpoint,
        )
        wall = time.perf_counter() - started
        epochs = trained.student.history["epochs"]
        this_attempt = [r for r in epochs if r["epoch"] >= trained.first_epoch]
        setup_s = wall - sum(r["seconds"] for r in this_attempt)
        train_s = setup_s + sum(r["seconds"] - r["extra"].get("monitor_s", 0.0) for r in epochs)
        monitor_s = sum(r["extra"].get("monitor_s", 0.0) for r in epochs)

        arrays: dict[str, np.ndarray] = {}
        started = time.perf_counter()
        measured = pipeline.evaluate(
            ctx.prepared, trained, attributors=pipeline.attributors(self._options(explained_by)), keep=arrays
        )
        evaluate_s = time.perf_counter() - started
        model = DistilledModel(
            student=trained.student,
            encoder=data.encoder,
            target=data.target,
            metadata={"teacher": config.teacher, "alignment_weight": configuration.weight, "run": configuration.name},
            student_name=config.student,
        )
        save_model(folder, model)
        metrics = attrs.evolve(
            measured,
            timings={"train_s": train_s, "monitor_s": monitor_s, "evaluate_s": evaluate_s},
            run={
                "seed": ctx.seed,
                "configuration": configuration.to_json(),
                "epochs": len(epochs),
                "resumed_from_epoch": trained.first_epoch,
            },
        )
        history = {"kind": configuration.kind, **trained.student.history}
        return metrics.to_json(), arrays, history

    def _train_independent(
        self, ctx: SeedContext, configuration: Configuration, checkpoint: Path
    ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
        plain_metrics_path = self.run_folder(ctx.seed, Configuration(name=PLAIN, kind="plain")) / "metrics.json"
        plain = json.loads(plain_metrics_path.read_text())
        data = ctx.data
        options = dict(self.config.student_options)
        batch_size = options.get("batch_size", "auto")
        if batch_size == "auto":  # as the GBDT2NN student resolves it
            batch_size = batch_size_for_rows(len(data.y_train))
        network = ExplanationNetwork(
            self.config.imitation,
            epochs=int(options.get("epochs", 20)),
            batch_size=int(batch_size),
            seed=ctx.seed,
            device=ctx.pipeline.device(),
        )
        z_monitor = data.z_test[ctx.monitor_index]
        shap_monitor = ctx.shap_test.values[ctx.monitor_index]
        explained_test = explained_outputs(data.task, ctx.prepared.teacher_margin_test)
        explained = None if explained_test is None else explained_test[ctx.monitor_index]
        first_epoch: list[int] = []

        def on_epoch_end(trained: ExplanationNetwork, epoch: int) -> dict[str, float]:
            started = time.perf_counter()
            if not first_epoch:
                first_epoch.append(epoch)
            extra: dict[str, float] = {}
            if len(z_monitor):
                scores = agreement(trained.predict(z_monitor), shap_monitor, explained=explained)
                extra = {f"spearman/{IMITATION}": scores["spearman"], f"cosine/{IMITATION}": scores["cosine"]}
            if self._user_on_epoch_end is not None:
                self._user_on_epoch_end(configuration, ctx.seed, epoch)
            extra["monitor_s"] = time.perf_counter() - started
            return extra

        started = time.perf_counter()
        network.fit(data.z_train, ctx.prepared.shap_train.values, on_epoch_end=on_epoch_end, checkpoint=checkpoint)
        wall = time.perf_counter() - started
        this_attempt = [r for r in network.history_ if first_epoch and r["epoch"] >= first_epoch[0]]
        setup_s = wall - sum(r["seconds"] for r in this_attempt)
        train_s = setup_s + sum(r["seconds"] - r.get("monitor_s", 0.0) for r in network.history_)
        started = time.perf_counter()
        values = network.predict(data.z_test)
        evaluate_s = time.perf_counter() - started
        scores = agreement(values, ctx.shap_test.values, explained=explained_test)
        metrics = Metrics(
            task=data.task,
            rows_train=len(data.y_train),
            rows_test=len(data.y_test),
            teacher_name=self.config.teacher,
            teacher_test=plain["teacher"]["test"],
            # the prediction is the plain student's: the explanation network cannot change it
            student=StudentMetrics(
                name=IMITATION,
                attributor=IMITATION,
                loss="mse",
                weight=0.0,
                test=plain["student"]["test"],
                fidelity=plain["student"]["fidelity"],
                agreement=scores,
                agreement_by_attributor={IMITATION: scores},
                agreement_every_class=(agreement(values, ctx.shap_test.values) if explained_test is not None else None),
            ),
            timings={
                "train_s": train_s,
                "monitor_s": sum(r.get("monitor_s", 0.0) for r in network.history_),
                "evaluate_s": evaluate_s,
                "plain_train_s": plain["timings"]["train_s"],
            },
            run={
                "seed": ctx.seed,
                "configuration": configuration.to_json(),
                "epochs": len(network.history_),
                "resumed_from_epoch": first_epoch[0] if first_epoch else len(network.history_),
            },
        ).to_json()
        history = {
            "kind": configuration.kind,
            "epochs": [
                {
                    "epoch": r["epoch"],
                    "task_loss": None,
                    "alignment_loss": r["loss"],
                    "seconds": r["seconds"],
                    "extra": {k: v for k, v in r.items() if k not in ("epoch", "loss", "seconds")},
                }
                for r in network.history_
            ],
        }
        return metrics, {IMITATION: values}, history


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    write_atomic(path, buffer.getvalue())


def run_experiment(
    config: ExperimentConfig,
    out: Path | str,
    *,
    frame: pd.DataFrame,
    target: str,
    data_source: str = "frame",
    registry: Registry | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    echo: Callable[[str], None] | None = None,
    report: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the experiment into ``out``, write ``results.json`` and the report; returns the results."""
    from gbdt2nn_core.experiment.report import write_report
    from gbdt2nn_core.experiment.results import collect_results

    runner = ExperimentRunner(
        config,
        Path(out),
        frame=frame,
        target=target,
        data_source=data_source,
        registry=registry,
        progress=progress,
        resume=resume,
        echo=echo,
    )
    runner.run()
    results = collect_results(runner.out)
    if report:
        write_report(runner.out, results)
    return results
