"""Reading LightGBM text models safely.

LightGBM's own loader aborts the whole process (``terminate called...``) on a file cut inside a tree, and
silently drops the categorical mapping of a file cut after its trees, so a file is checked here first.
"""

from __future__ import annotations

import os
import re

from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.model_files import read_model_file

__all__ = ["read_model_text"]

_FIX = "save the model again (Booster.save_model or teacher.save), or pass model=None to train a new one"


def read_model_text(path: str | os.PathLike[str]) -> str:
    """The text of a LightGBM model file, checked to be complete; ``ModelFileError`` otherwise."""
    where = str(path)
    data = read_model_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(path=where, problem="not a LightGBM text model (binary content)", fix=_FIX) from None
    problem = _incomplete(text)
    if problem:
        raise ModelFileError(path=where, problem=problem, fix=_FIX)
    return text


def _incomplete(text: str) -> str | None:
    """Why ``text`` is not a complete LightGBM model, or ``None`` when it looks whole."""
    if not text.startswith("tree\n"):
        return "not a LightGBM text model (it does not start with 'tree')"
    end = text.find("\nend of trees\n")
    if end < 0:
        return "truncated or corrupt: the 'end of trees' marker is missing"
    sizes = re.search(r"^tree_sizes=(.*)$", text[:end], flags=re.MULTILINE)
    if sizes:
        # LightGBM itself cuts the tree section by these byte counts; a mismatch means a damaged tree.
        try:
            lengths = [int(size) for size in sizes.group(1).split()]
        except ValueError:
            return "corrupt header: tree_sizes is not a list of numbers"
        start = text.find("\nTree=0\n") + 1 if lengths else end + 1
        section = text[start : end + 1].encode("utf-8") if start > 0 else b""
        if sum(lengths) != len(section):
            return "truncated or corrupt: the trees do not add up to the sizes in the header"
        offset = 0
        for index, length in enumerate(lengths):
            if not section.startswith(f"Tree={index}\n".encode(), offset):
                return f"corrupt: tree {index} is not where the header says"
            offset += length
    if "\nparameters:\n" in text and "\nend of parameters\n" not in text:
        return "truncated: the parameter section does not end"
    return None
