"""Checking a saved student's ``student.json`` against its ``student.safetensors`` before anything is allocated.

Model files are untrusted input: a tampered ``student.json`` could declare a task that does not exist, more class
labels than the network has outputs, or layer widths that would allocate gigabytes before the weights are even
read. :func:`check_student_files` reads only the JSON and the tensor file's header (names and shapes, not the
tensors) and turns every disagreement into one :class:`~gbdt2nn_core.ModelFileError` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import torch

from gbdt2nn_core.errors import ConfigError, ModelFileError
from gbdt2nn_core.host.interfaces import TASKS
from gbdt2nn_core.validators import is_positive_number, is_whole_number

__all__ = ["check_loaded_student", "check_saved_student", "check_student_files", "check_student_weights"]

_FIX = "re-run the distillation"


#: The built-in student whose files these checks know in detail; other students get the checks every student
#: shares (a known task; finite weights once loaded).
_GBDT2NN = "gbdt2nn"


def check_saved_student(name: str, metadata: dict[str, Any], weights_path: Path) -> None:
    """Check the student ``name``'s part of ``student.json`` (flat: task, classes, encoder, ``config`` = its
    options, and its state description) against ``weights_path`` before anything is allocated."""
    if name == _GBDT2NN:
        check_student_files(metadata, weights_path)
    elif metadata.get("task") not in TASKS:
        raise ModelFileError(
            path=str(weights_path.parent),
            problem=f"the files do not fit together: student.json names an unknown task {metadata.get('task')!r} "
            f"(one of {', '.join(TASKS)} expected)",
            fix=_FIX,
        )


def check_loaded_student(name: str, module: torch.nn.Module, metadata: dict[str, Any], directory: Path) -> None:
    """After loading: the weights are finite (and, for GBDT2NN, its index buffer is the declared one)."""
    if name == _GBDT2NN:
        check_student_weights(module, metadata, directory)
    else:
        _check_finite_weights(module, directory)


def check_student_files(metadata: dict[str, Any], weights_path: Path) -> None:
    """Raise :class:`ModelFileError` unless ``metadata`` (``student.json``) describes the tensors in ``weights_path``.

    Checks the task, the class labels against the network's outputs, the settings, and every tensor's name and
    shape against the architecture the JSON declares (built on PyTorch's ``meta`` device, which allocates nothing).
    """
    where = str(weights_path.parent)

    def fail(problem: str) -> ModelFileError:
        return ModelFileError(path=where, problem=f"the files do not fit together: student.json {problem}", fix=_FIX)

    task = metadata.get("task")
    if task not in TASKS:
        raise fail(f"names an unknown task {task!r} (one of {', '.join(TASKS)} expected)")
    architecture = metadata.get("architecture")
    if not isinstance(architecture, dict):
        raise fail("has no 'architecture' section")
    n_outputs = _whole(architecture.get("n_outputs"), fail, "n_outputs")
    classes = metadata.get("classes")
    if not isinstance(classes, list):
        raise fail("has no list of 'classes'")
    expected = {"regression": (0, 1), "binary": (2, 1)}.get(task, (n_outputs, n_outputs))
    if task == "multiclass" and n_outputs < 3:
        raise fail(f"declares a multiclass network with {n_outputs} output(s); a multiclass student has 3 or more")
    if (len(classes), n_outputs) != expected:
        raise fail(
            f"lists {len(classes)} class label(s) for a {task} network with {n_outputs} output(s); "
            f"a {task} student has {expected[0]} label(s) and {expected[1]} output(s)"
        )
    _check_config(metadata.get("config"), fail)
    _check_online_settings(metadata, fail)
    shapes = _header_shapes(weights_path, where)
    module = _meta_module(architecture, n_outputs, fail)
    width = _encoded_width(metadata.get("encoder"), fail)
    largest = max(max(row) for row in architecture["group_input_index"])
    if largest > width:  # position `width` itself is the zero pad column
        raise fail(f"has a group_input_index that reads encoded column {largest} of the encoder's {width}")
    declared = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    missing = sorted(set(declared) - set(shapes))
    if missing:
        raise fail(f"declares tensors that student.safetensors lacks ({', '.join(missing[:3])})")
    for name, shape in declared.items():
        if shapes[name] != shape:
            raise fail(f"declares {name} of shape {list(shape)} but student.safetensors holds {list(shapes[name])}")


def check_student_weights(module: torch.nn.Module, metadata: dict[str, Any], directory: Path) -> None:
    """Raise :class:`ModelFileError` when the loaded tensors hold what no training writes.

    Infinite or NaN weights would turn every prediction into a non-finite margin; a ``group_input_index`` other
    than the one ``student.json`` declares would feed the groups other columns than those it was built for.
    Called once the weights are loaded into ``module`` (after :func:`check_student_files`).
    """
    _check_finite_weights(module, directory)
    declared = torch.as_tensor(metadata["architecture"]["group_input_index"])
    if not torch.equal(module.state_dict()["group_input_index"].cpu(), declared.to(torch.long)):
        raise ModelFileError(
            path=str(directory),
            problem="the files do not fit together: student.safetensors holds another group_input_index than "
            "student.json declares",
            fix=_FIX,
        )


def _check_finite_weights(module: torch.nn.Module, directory: Path) -> None:
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(
                path=str(directory), problem=f"student.safetensors holds infinite or NaN values in {name}", fix=_FIX
            )


def _whole(value: Any, fail: Any, name: str) -> int:
    if not is_whole_number(value, 1):
        raise fail(f"has an invalid {name}={value!r} (a whole number of at least 1 expected)")
    return value


def _check_online_settings(metadata: dict[str, Any], fail: Any) -> None:
    """The batch size and learning rate the fit resolved, which online updates reuse (absent from older files)."""
    rows = metadata.get("batch_size")
    if rows is not None and not is_whole_number(rows, 2):
        raise fail(f"has an invalid batch_size={rows!r} (a whole number of at least 2 expected)")
    rate = metadata.get("learning_rate")
    if rate is not None and not is_positive_number(rate):
        raise fail(f"has an invalid learning_rate={rate!r} (a finite number > 0 expected)")


def _check_config(config: Any, fail: Any) -> None:
    from gbdt2nn_core.student.gbdt2nn import GBDT2NNConfig

    if not isinstance(config, dict):
        raise fail("has no 'config' section")
    known = {field.name for field in attrs.fields(GBDT2NNConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise fail(f"has unknown student settings {unknown[:3]}")
    try:
        GBDT2NNConfig(**config)
    except (ConfigError, TypeError) as exc:
        raise fail(f"has an invalid setting ({exc})") from None


def _header_shapes(weights_path: Path, where: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, from the safetensors header alone (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(
            path=where, problem=f"student.safetensors is corrupt or truncated ({exc})", fix=_FIX
        ) from exc


def _meta_module(architecture: dict[str, Any], n_outputs: int, fail: Any) -> torch.nn.Module:
    """The network ``architecture`` declares, with every tensor on the ``meta`` device (shapes only)."""
    from gbdt2nn_core.student.module import GBDT2NNModule

    index, output = architecture.get("group_input_index"), architecture.get("group_output")
    if not (isinstance(index, list) and index and all(isinstance(row, list) and row for row in index)):
        raise fail("has no valid group_input_index (a non-empty list of column lists)")
    if len({len(row) for row in index}) != 1 or not all(is_whole_number(v, 0) for row in index for v in row):
        raise fail("has a group_input_index whose rows differ in length or hold other than column positions")
    if not (isinstance(output, list) and len(output) == len(index) and all(is_whole_number(v, 0) for v in output)):
        raise fail(f"has a group_output that does not list one output per group ({len(index)} groups)")
    if max(output) >= n_outputs:
        raise fail(f"sends a group to output {max(output)} of a network with {n_outputs} output(s)")
    hidden = architecture.get("hidden")
    if not (isinstance(hidden, list) and hidden and all(is_whole_number(h, 1) for h in hidden)):
        raise fail(f"has an invalid hidden={hidden!r} (positive layer widths expected)")
    embedding_dim = _whole(architecture.get("embedding_dim"), fail, "embedding_dim")
    # index tensors are small and read on the CPU; every parameter and buffer is created on `meta`
    index_t, output_t = torch.as_tensor(index), torch.as_tensor(output)
    with torch.device("meta"):
        return GBDT2NNModule(
            group_input_index=index_t,
            group_output=output_t,
            n_outputs=n_outputs,
            hidden=tuple(hidden),
            embedding_dim=embedding_dim,
        )


def _encoded_width(encoder: Any, fail: Any) -> int:
    from gbdt2nn_core.data.encoding import InputEncoder

    try:
        return InputEncoder.from_json(encoder).n_encoded
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise fail(f"has an unreadable encoder ({type(exc).__name__}: {str(exc)[:100]})") from None
