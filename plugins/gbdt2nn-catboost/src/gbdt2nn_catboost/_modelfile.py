"""Reading CatBoost ``.cbm`` model files with one-line errors.

CatBoost's own loader checks its flatbuffers: fuzzing real ``.cbm`` files (``tests/test_fuzz.py``) gives
no native crash, but damaged files raise a mix of ``CatBoostError``, ``UnicodeDecodeError`` and
``JSONDecodeError`` while loading, and a flipped byte in a leaf value loads as a model that predicts NaN.
So a file must start with CatBoost's magic, every loader exception becomes a ``ModelFileError``, and the
loaded model's JSON export must describe consistent, finite trees before the teacher uses it.
"""

from __future__ import annotations

import os
from typing import Any

import catboost as cb

from gbdt2nn_catboost._structure import StructureError, ensemble_from_json, model_json
from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.model_files import read_model_file

__all__ = ["MAGIC", "load_model_bytes", "load_model_file"]

#: The first bytes of every ``.cbm`` file.
MAGIC = b"CBM1"
_FIX = "save the model again (CatBoost.save_model or teacher.save), or pass model=None to train a new one"


def load_model_file(path: str | os.PathLike[str]) -> tuple[cb.CatBoost, dict[str, Any]]:
    """The model in a ``.cbm`` file and its JSON export, both checked; ``ModelFileError`` otherwise."""
    return load_model_bytes(read_model_file(path), where=str(path))


def load_model_bytes(data: bytes, *, where: str) -> tuple[cb.CatBoost, dict[str, Any]]:
    """A private ``CatBoost`` model from ``.cbm`` bytes, and its JSON export, checked to be consistent."""
    if not data.startswith(MAGIC):
        problem = "the file is empty" if not data else "not a CatBoost model (.cbm files start with 'CBM1')"
        raise ModelFileError(path=where, problem=problem, fix=_FIX)
    model = cb.CatBoost()
    try:
        model.load_model(blob=data)
        document = model_json(model)
        n_features = len(model.feature_names_ or [])
        ensemble_from_json(document, n_features)
    except StructureError as exc:
        raise ModelFileError(path=where, problem=f"corrupt: {exc}", fix=_FIX) from None
    except (cb.CatBoostError, ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError) as exc:
        # UnicodeDecodeError and JSONDecodeError are ValueErrors: a damaged string or metadata section.
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(path=where, problem=f"not a readable CatBoost model ({text})", fix=_FIX) from None
    return model, document
