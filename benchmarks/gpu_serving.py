"""Serving a distilled student on a GPU: the exported TorchScript student vs the teacher where users run it.

Two steps, because the GPU machine may not have gbdt2nn installed (only torch):

    python benchmarks/gpu_serving.py prepare --dir .gpubench        # here, on CPU: teacher, student, export, rows
    python benchmarks/gpu_serving.py measure --dir .gpubench --json benchmarks/results/gpu-serving.json
                                                                    # on a CUDA machine: torch, numpy; lightgbm
                                                                    # and hummingbird-ml where installed

``prepare`` trains the benchmark's teacher on adult (LightGBM, 100 trees × 64 leaves), a GBDT2NN student of the
default shape (10 groups, hidden 100-100-100-50; one epoch: speed does not depend on how well it is trained),
exports the student as TorchScript (what ``gbdt2nn export`` writes) and saves the encoded test rows, the rows as
the teacher reads them (category codes), the teacher and a *twin* teacher (same size, categories as numbers, for
hummingbird-ml, which cannot compile LightGBM's categorical splits) and reference margins computed on the CPU.

``measure`` times one batch of 10k, 100k and 1M rows (the test rows tiled) for: the student on the GPU (float32
exact, and with TF32 matmuls), the same with the host-to-device copy of the rows and the copy back, the student on
the machine's CPU cores, LightGBM's native ``predict`` on all CPU cores, and hummingbird-ml's compiled twin
teacher on the GPU; plus the GPU's own float32 matmul FLOP/s (a large GEMM and ``bmm`` at the student's shapes).
Every GPU figure is the median of 5 timed rounds after a warm-up (``bench_measure.measure``, the harness's own
interleaved timing), with ``torch.cuda.synchronize`` inside the timing; margins are checked against the CPU
reference. ``benchmarks/run.py`` adds the JSON as a section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules, also when this file is loaded by path (the smoke test)
    sys.path.insert(0, str(HERE))

# bench_measure imports nothing third-party at module level, so it runs on a GPU machine without gbdt2nn
from bench_measure import measure as time_cases  # noqa: E402
from bench_measure import paired_ratio, summary  # noqa: E402

BATCHES = (10_000, 100_000, 1_000_000)
REPEATS = 5


# ------------------------------------------------------------------------------------------------------ prepare
def prepare(directory: Path, *, quick: bool = False) -> None:
    """Write the student (TorchScript), teachers (LightGBM text) and rows (``.npy``) that ``measure`` reads.

    ``quick``: 3,000 rows and a 10-tree teacher, a smoke test of the code path (its figures mean nothing).
    """
    import numpy as np
    import torch
    from bench_suites import codes_frame

    from gbdt2nn_core.data import load_bundled
    from gbdt2nn_core.host.interfaces import StudentInputs
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.pipeline import BACKGROUND_ROWS, PreparedData, background_index, fit_encoder, split_data
    from gbdt2nn_core.student._layers import GroupLinear
    from gbdt2nn_core.student.gbdt2nn import GBDT2NNStudent

    if not quick:
        torch.set_num_threads(os.cpu_count() or 1)
    directory.mkdir(parents=True, exist_ok=True)
    registry = get_registry()
    adult = load_bundled("adult")
    frame = adult.frame.sample(3000, random_state=0).reset_index(drop=True) if quick else adult.frame
    split = split_data(frame, adult.target, task=adult.task, test_size=0.2, seed=0)
    options = {"n_estimators": 10, "num_leaves": 15} if quick else {"n_estimators": 100, "num_leaves": 64}
    teacher = registry.teacher("lightgbm", **options)
    teacher.fit(split.train_frame, split.y_train, task=split.task, seed=0)
    data = PreparedData.encode(split, fit_encoder(split, teacher, 64))
    student = registry.student("gbdt2nn", seed=0, epochs=1, batch_size=512, n_groups=10)
    assert isinstance(student, GBDT2NNStudent)  # its module's groups and layer shapes are recorded
    student.fit(
        StudentInputs(
            teacher=teacher,
            leaves=teacher.leaf_indices(data.train_frame),
            z=data.z_train,
            y=data.y_train,
            task=split.task,
            teacher_margin=teacher.predict_margin(data.train_frame),
            column_of=data.encoder.column_of,
            aggregation=data.encoder.aggregation(),
            background=data.z_train[background_index(len(data.z_train), BACKGROUND_ROWS, 0)],
        )
    )
    module = student.module.cpu().float().eval()
    torch.jit.save(torch.jit.script(module), str(directory / "student.pt"))
    # the same weights as plain tensors, for a torch too old to read this TorchScript file (see _load_student)
    torch.save(module.state_dict(), directory / "student_state.pt")
    z = data.z_test.astype(np.float32)
    np.save(directory / "z.npy", z)
    with torch.no_grad():
        np.save(directory / "student_margin.npy", module(torch.from_numpy(z)).numpy())

    # LightGBM maps a categorical DataFrame column to its codes; the same codes as floats give the same margins
    booster = teacher.native_model
    codes = codes_frame(data.test_frame).to_numpy()
    reference = booster.predict(data.test_frame, raw_score=True)
    if not np.allclose(booster.predict(codes, raw_score=True), reference, rtol=0, atol=1e-12):
        raise SystemExit("the teacher's margins on category codes differ from its margins on the frame")
    booster.save_model(str(directory / "teacher.txt"))
    np.save(directory / "teacher_rows.npy", codes)
    np.save(directory / "teacher_margin.npy", reference)

    twin = registry.teacher("lightgbm", **options)
    twin.fit(codes_frame(data.train_frame), data.y_train, task=split.task, seed=0)
    twin.native_model.save_model(str(directory / "twin.txt"))
    np.save(directory / "twin_margin.npy", twin.native_model.predict(codes, raw_score=True))
    layers = [m for m in module.modules() if isinstance(m, GroupLinear)]
    shapes = [(m.groups, m.in_features, m.out_features) for m in layers]
    (directory / "prepared.json").write_text(
        json.dumps(
            {
                "rows_test": len(z),
                "encoded_width": int(z.shape[1]),
                "groups": int(module.n_groups),
                "group_width": int(module.group_input_index.shape[1]),
                "hidden": list(module.hidden_sizes),
                "group_linear_shapes": shapes,
                "macs_per_row": int(sum(k * i * o for k, i, o in shapes)),
                "teacher": {"trees": options["n_estimators"], "leaves": options["num_leaves"]},
                "torch_prepared_with": torch.__version__,
                "quick": quick,
            },
            indent=2,
        )
    )
    print(f"prepared {directory}: student.pt, z.npy ({z.shape[0]} × {z.shape[1]}), teacher.txt, twin.txt")


# ------------------------------------------------------------------------------------------------------ measure
def _tile(array: Any, rows: int) -> Any:
    import numpy as np

    repeats = -(-rows // len(array))
    return np.concatenate([array] * repeats)[:rows]


def measure(directory: Path, *, device: str = "cuda", batches: Sequence[int] = BATCHES) -> dict[str, Any]:
    """Time every case at every batch size; return the JSON record (see the module docstring).

    ``device="cpu"`` runs the same code paths without a GPU (a smoke test; its figures mean nothing).
    """
    import numpy as np
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("measure needs a CUDA GPU (torch.cuda.is_available() is False); --device cpu smoke-tests")
    cuda = torch.device(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    prepared = json.loads((directory / "prepared.json").read_text())
    cpu_threads = os.cpu_count() or 1
    torch.set_num_threads(cpu_threads)
    record_errors: dict[str, str] = {}
    student_gpu = _load_student(directory, prepared, cuda, record_errors)
    student_cpu = _load_student(directory, prepared, torch.device("cpu"), record_errors)
    # the same student with the per-group gather first layer (before the dense one), side by side
    student_gather = _load_student(directory, prepared, cuda, record_errors)
    student_gather.dense_max_ratio = 0.0
    z_test = np.load(directory / "z.npy")
    teacher_rows = np.load(directory / "teacher_rows.npy")
    reference = {
        "student": np.load(directory / "student_margin.npy"),
        "teacher": np.load(directory / "teacher_margin.npy"),
        "twin": np.load(directory / "twin_margin.npy"),
    }
    record: dict[str, Any] = {
        "prepared": prepared,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke test)",
        "cpu": {"threads": cpu_threads, "processor": platform.processor() or platform.machine()},
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version()},
        "batches": {},
        "parity": {},
        "errors": record_errors,
    }

    # parity first: the GPU student (exact float32, then TF32) and CPU student vs the CPU reference margins
    torch.backends.cuda.matmul.allow_tf32 = False
    z_gpu = torch.from_numpy(z_test).to(cuda)
    record["parity"]["student gpu float32 vs cpu"] = float(
        np.abs(_run_student(student_gpu, z_gpu).cpu().numpy() - reference["student"]).max()
    )
    record["parity"]["student gpu gather first layer vs cpu"] = float(
        np.abs(_run_student(student_gather, z_gpu).cpu().numpy() - reference["student"]).max()
    )
    torch.backends.cuda.matmul.allow_tf32 = True
    record["parity"]["student gpu tf32 vs cpu"] = float(
        np.abs(_run_student(student_gpu, z_gpu).cpu().numpy() - reference["student"]).max()
    )
    torch.backends.cuda.matmul.allow_tf32 = False

    lightgbm = _optional("lightgbm", record)
    boosters = {}
    if lightgbm is not None:
        for name in ("teacher", "twin"):
            boosters[name] = lightgbm.Booster(model_file=str(directory / f"{name}.txt"))
            margin = boosters[name].predict(teacher_rows, raw_score=True, num_threads=cpu_threads)
            record["parity"][f"{name} lightgbm on this machine vs prepared"] = float(
                np.abs(margin - reference[name]).max()
            )
    compiled = _hummingbird(boosters.get("twin"), teacher_rows, cuda, record, reference["twin"])

    for rows in batches:
        students = (student_gpu, student_cpu, student_gather)
        cases = _batch_cases(rows, z_test, teacher_rows, students, boosters, compiled, cuda, cpu_threads)
        try:
            samples = time_cases(cases, repeats=REPEATS, sync=sync)
        except torch.OutOfMemoryError as exc:  # pragma: no cover - GPU only: the gemm strategy may not fit
            record["errors"][f"batch {rows}"] = str(exc).splitlines()[0][:200]
            cases = {k: v for k, v in cases.items() if "gemm" not in k}
            _empty_cache()
            samples = time_cases(cases, repeats=REPEATS, sync=sync)
        base = samples["student: GPU, float32"]
        record["batches"][str(rows)] = {
            name: {
                **summary(times),
                "rows_per_s": rows / statistics.median(times),
                "student_gpu_speed_vs": paired_ratio(times, base),  # its time ÷ the student's
            }
            for name, times in samples.items()
        }
        del cases
        _empty_cache()

    gemm = 8192 if device == "cuda" else 256
    record["flops"] = _gpu_flops(prepared, student_gpu, z_test, cuda, sync, rows=max(batches), gemm=gemm)
    return record


def _run_student(module: Any, z: Any) -> Any:
    import torch

    with torch.no_grad():
        return module(z)


def _batch_cases(
    rows: int,
    z_test: Any,
    teacher_rows: Any,
    students: tuple[Any, Any, Any],
    boosters: dict[str, Any],
    compiled: dict[str, Any],
    device: Any,
    cpu_threads: int,
) -> dict[str, Callable[[], object]]:
    """Every case at one batch size: ``rows`` test rows (tiled), resident on the device where the case says so."""
    import numpy as np
    import torch

    student_gpu, student_cpu, student_gather = students
    z_host = _tile(z_test, rows)
    z_device = torch.from_numpy(z_host).to(device)
    raw_host = _tile(teacher_rows, rows)
    raw_device = torch.from_numpy(raw_host.astype(np.float32)).to(device)
    cases: dict[str, Callable[[], object]] = {
        "student: GPU, float32": lambda: _run_student(student_gpu, z_device),
        "student: GPU, TF32 matmuls": lambda: _with_tf32(lambda: _run_student(student_gpu, z_device)),
        "student: GPU, float32, per-group gather first layer": lambda: _run_student(student_gather, z_device),
        "student: GPU, float32, with host↔device copies": lambda: _run_student(
            student_gpu, torch.from_numpy(z_host).to(device)
        ).cpu(),
    }
    if rows <= 100_000 or device.type == "cpu":  # the CPU cases take seconds at 1M rows; rows/s is flat by 100k
        cases[f"student: CPU, {cpu_threads} threads"] = lambda: _run_student(student_cpu, torch.from_numpy(z_host))
    for name, label in (("teacher", "teacher"), ("twin", "twin teacher")):
        if name in boosters:
            booster = boosters[name]
            cases[f"{label}: LightGBM predict, {cpu_threads} threads"] = _lgb_case(booster, raw_host, cpu_threads)
    for strategy, model in compiled.items():
        cases[f"twin teacher: hummingbird-ml on GPU, {strategy}"] = _hb_case(model, raw_device)
    return cases


def _lgb_case(booster: Any, rows: Any, threads: int) -> Callable[[], object]:
    return lambda: booster.predict(rows, raw_score=True, num_threads=threads)


def _load_student(directory: Path, prepared: dict[str, Any], device: Any, errors: dict[str, str]) -> Any:
    """The exported TorchScript student; if this torch cannot read it, the same weights in gbdt2nn's module."""
    import torch

    try:
        # torch.jit.load has no annotations
        return torch.jit.load(str(directory / "student.pt"), map_location=device).eval()  # type: ignore[no-untyped-call]
    except Exception as exc:  # e.g. a file written by a newer torch
        errors["torchscript"] = f"{type(exc).__name__}: {str(exc)[:200]} (used the state dict instead)"
    from gbdt2nn_core.student.module import GBDT2NNModule

    state = torch.load(directory / "student_state.pt", map_location="cpu", weights_only=True)
    module = GBDT2NNModule(
        group_input_index=state["group_input_index"],
        group_output=state["output_map"].argmax(dim=1),
        n_outputs=int(state["output_map"].shape[1]),
        hidden=tuple(prepared["hidden"]),
    )
    module.load_state_dict(state)
    return module.to(device).eval()


def _with_tf32(call: Callable[[], Any]) -> Any:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return call()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = False


def _optional(name: str, record: dict[str, Any]) -> Any:
    try:
        return __import__(name)
    except ImportError as exc:
        record["errors"][name] = f"not installed: {exc}"
        return None


def _hummingbird(booster: Any, rows: Any, cuda: Any, record: dict[str, Any], reference: Any) -> dict[str, Any]:
    """The twin teacher compiled by hummingbird-ml for each tree strategy, on the GPU; parity recorded."""
    import numpy as np
    import torch

    if booster is None:
        return {}
    hummingbird = _optional("hummingbird.ml", record)
    if hummingbird is None:
        return {}
    compiled: dict[str, Any] = {}
    # perf_tree_trav is left out: it allocates 2^depth nodes per tree (200 GiB for this teacher, depth 28)
    for strategy in ("gemm", "tree_trav"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = hummingbird.ml.convert(
                    booster, "torch", rows[:100], extra_config={"tree_implementation": strategy}
                ).to(cuda)
                ops = model.model  # the torch module: margins without hummingbird's numpy round trip
                with torch.no_grad():
                    out = ops(torch.from_numpy(rows.astype(np.float32)).to(cuda))
        except Exception as exc:
            record["errors"][f"hummingbird {strategy}"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            continue
        margin = _hb_margin(out).cpu().numpy()
        record["parity"][f"twin hummingbird {strategy} vs lightgbm"] = float(np.abs(margin - reference).max())
        compiled[strategy] = ops
    return compiled


def _hb_margin(out: Any) -> Any:
    """hummingbird compiles a raw LightGBM ``Booster`` to a module that returns its margins, ``(n, 1)``."""
    return out.reshape(-1)


def _hb_case(model: Any, rows: Any) -> Callable[[], object]:
    import torch

    def run() -> object:
        with torch.no_grad():
            return model(rows)

    return run


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _gpu_flops(
    prepared: dict[str, Any], student: Any, z_test: Any, cuda: Any, sync: Callable[[], None], *, rows: int, gemm: int
) -> Any:
    """The student's achieved float32 FLOP/s at ``rows`` rows vs bmm at the same shapes and a square GEMM."""
    import numpy as np
    import torch

    z = torch.from_numpy(_tile(z_test, rows)).to(cuda)
    bmm = [
        (torch.randn(k, rows, i, device=cuda), torch.randn(k, i, o, device=cuda))
        for k, i, o in prepared["group_linear_shapes"]
    ]
    size = gemm
    a, b = torch.randn(size, size, device=cuda), torch.randn(size, size, device=cuda)

    def forward() -> torch.Tensor:
        with torch.no_grad():
            margins: torch.Tensor = student(z)
            return margins

    def run_bmm() -> object:
        return [torch.bmm(x, w) for x, w in bmm]

    samples = time_cases({"student": forward, "bmm": run_bmm, "gemm": lambda: a @ b}, repeats=REPEATS, sync=sync)
    work = {"student": 2 * rows * prepared["macs_per_row"], "bmm": 2 * rows * prepared["macs_per_row"]}
    work["gemm"] = 2 * size**3
    rate = {name: work[name] / statistics.median(times) for name, times in samples.items()}
    bmm.clear()  # gigabytes on the device at 1M rows
    _empty_cache()
    return {
        "rows": rows,
        "flops_per_s": rate,
        "student_fraction_of_bmm": rate["student"] / rate["bmm"],
        "student_fraction_of_gemm": rate["student"] / rate["gemm"],
        "finite": bool(np.isfinite(forward().cpu().numpy()).all()),
    }


# ------------------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "measure"))
    parser.add_argument("--dir", type=Path, default=Path(".gpubench"), help="where prepare writes, measure reads")
    parser.add_argument("--json", type=Path, default=None, help="measure: write the record here (default: stdout)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="measure: cpu = smoke test")
    parser.add_argument("--quick", action="store_true", help="prepare: toy sizes, a smoke test")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="measure: comma-separated row counts")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.dir, quick=args.quick)
        return 0
    record = measure(args.dir, device=args.device, batches=[int(b) for b in args.batches.split(",")])
    record["generated"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = json.dumps(record, indent=2)
    if args.json is None:
        print(text)
    else:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
