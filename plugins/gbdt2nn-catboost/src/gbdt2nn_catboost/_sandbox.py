"""Trying an untrusted ``.cbm`` file in a child process before CatBoost loads it into ours.

CatBoost does not check the arrays inside a ``.cbm`` file: fuzzing real files (``tests/test_fuzz.py``) gave
segmentation faults and endless loops (15 of 120 mutants) once such a model was used, from a single
overwritten split index, tree depth or byte. Its format (flatbuffers plus CTR tables) has no published verifier.
So a child Python process loads the bytes, exports the model as JSON, and predicts margins, leaves and
TreeSHAP (all finite) on probe rows that cross every border of every float feature; only when it ends cleanly does the
caller load the same bytes, and it uses the child's JSON export instead of exporting again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from gbdt2nn_core.errors import ModelFileError

__all__ = ["CHILD_TIMEOUT", "try_in_child"]

#: Seconds the child may take; a model file that keeps CatBoost busy longer is refused.
CHILD_TIMEOUT = 120.0
# The exception's class and CatBoost's C++ source location, before the words that matter.
_NOISE = re.compile(r"^(CHILD-REFUSED: |[\w.]*(Error|Exception): )*(\S+\.(cpp|h):\d+: )?")
_FIX = "save the model again (CatBoost.save_model or teacher.save), or pass model=None to train a new one"

_CHILD = r"""
import json, os, sys, tempfile
import numpy as np
import pandas as pd
import catboost as cb

model = cb.CatBoost()
model.load_model(blob=sys.stdin.buffer.read())
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "model.json")
    model.save_model(path, format="json")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
features = json.loads(text).get("features_info", {})
names = list(model.feature_names_ or [])
n = len(names)
columns = {}
for item in features.get("float_features", []):
    borders = [float(b) for b in item.get("borders", [])]
    values = [b + d for b in borders for d in (-0.5, 0.5)] + [float("nan"), 0.0]
    columns[int(item["flat_feature_index"])] = values
cats = [int(item["flat_feature_index"]) for item in features.get("categorical_features", [])]
for index in cats:
    columns[index] = ["a", "b", "<missing>"]
if sorted(columns) != list(range(n)):
    raise SystemExit("CHILD-REFUSED: the model has features that are neither numeric nor categorical")
rows = max(len(values) for values in columns.values()) if columns else 1
frame = pd.DataFrame({names[i]: [columns[i][r % len(columns[i])] for r in range(rows)] for i in range(n)})
pool = cb.Pool(frame, cat_features=cats)
margins = model.predict(pool, prediction_type="RawFormulaVal", thread_count=1)
model.calc_leaf_indexes(pool, thread_count=1)
shap = model.get_feature_importance(pool, type="ShapValues", thread_count=1)
if not (np.isfinite(margins).all() and np.isfinite(shap).all()):
    raise SystemExit("CHILD-REFUSED: it predicts NaN or infinite margins or TreeSHAP values")
sys.stdout.write(text)
"""


def try_in_child(data: bytes, *, where: str) -> dict[str, Any]:
    """The JSON export of the model in ``data``, made by a child process that also predicted with it;
    ``ModelFileError`` when the child crashes, hangs or fails."""
    try:
        result = subprocess.run(
            [sys.executable, "-c", _CHILD], input=data, capture_output=True, timeout=CHILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise ModelFileError(
            path=where, problem=f"corrupt: CatBoost did not finish reading it in {CHILD_TIMEOUT:g} s", fix=_FIX
        ) from None
    if result.returncode < 0:
        raise ModelFileError(
            path=where, problem=f"corrupt: CatBoost crashes reading it (signal {-result.returncode})", fix=_FIX
        )
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
        last = _NOISE.sub("", lines[-1]).strip()[:200] if lines else f"exit status {result.returncode}"
        raise ModelFileError(path=where, problem=f"not a readable CatBoost model ({last})", fix=_FIX)
    try:
        document: dict[str, Any] = json.loads(result.stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(
            path=where, problem="not a readable CatBoost model (its JSON export is damaged)", fix=_FIX
        ) from None
    return document
