"""Reading CatBoost models with one-line errors: ``.cbm`` files (untrusted) and in-memory models (trusted).

A file must start with CatBoost's magic, survive a trial in a child process (:mod:`gbdt2nn_catboost._sandbox`:
CatBoost itself segfaults on some damaged files) and describe consistent, finite trees in its JSON export;
only then is it loaded here. Loader exceptions (``CatBoostError``, but also ``UnicodeDecodeError`` and
``JSONDecodeError`` from a damaged metadata section) become a ``ModelFileError``.
"""

from __future__ import annotations

import os
from typing import Any

import catboost as cb

from gbdt2nn_catboost._sandbox import try_in_child
from gbdt2nn_catboost._structure import StructureError, ensemble_from_json, model_json
from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.model_files import read_model_file

__all__ = ["MAGIC", "copy_model", "load_model_file"]

#: The first bytes of every ``.cbm`` file.
MAGIC = b"CBM1"
_FIX = "save the model again (CatBoost.save_model or teacher.save), or pass model=None to train a new one"


def load_model_file(path: str | os.PathLike[str]) -> tuple[cb.CatBoost, dict[str, Any]]:
    """The model in a ``.cbm`` file and its JSON export, both checked; ``ModelFileError`` otherwise."""
    where = str(path)
    data = read_model_file(path)
    if not data.startswith(MAGIC):
        problem = "the file is empty" if not data else "not a CatBoost model (.cbm files start with 'CBM1')"
        raise ModelFileError(path=where, problem=problem, fix=_FIX)
    document = try_in_child(data, where=where)
    features = document.get("features_info", {})
    n_features = len(features.get("float_features", [])) + len(features.get("categorical_features", []))
    try:
        ensemble_from_json(document, n_features)
    except (StructureError, KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path=where, problem=f"corrupt: {exc}", fix=_FIX) from None
    model = _load(data, where)
    if len(model.feature_names_ or []) != n_features:
        raise ModelFileError(path=where, problem="corrupt: the feature lists disagree", fix=_FIX)
    return model, document


def copy_model(model: cb.CatBoost, *, where: str) -> tuple[cb.CatBoost, dict[str, Any]]:
    """A private copy of a model CatBoost already holds in memory (trained here or by the user), and its JSON
    export; the copy goes through the ``.cbm`` bytes, the form a saved-and-loaded model has."""
    copy = _load(model._serialize_model(), where)
    return copy, model_json(copy)


def _load(data: bytes, where: str) -> cb.CatBoost:
    model = cb.CatBoost()
    try:
        model.load_model(blob=data)
    except (cb.CatBoostError, ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path=where, problem=f"not a readable CatBoost model ({text})", fix=_FIX) from None
    return model
