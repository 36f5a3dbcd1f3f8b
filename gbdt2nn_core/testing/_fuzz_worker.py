"""The worker process of :func:`gbdt2nn_core.testing.fuzz_model_file`: loads one model file per stdin line.

Run as ``python -m gbdt2nn_core.testing._fuzz_worker FACTORY DATASET ROWS TASK``. It prints ``READY`` once
set up, then for each path one ``MUTANT {"outcome": ..., "detail": ...}`` line. A native crash ends it; the
parent notices and records the crash.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def _classify(factory: Any, path: str, X: Any, y: Any, task: str) -> tuple[str, str]:
    import numpy as np

    from gbdt2nn_core.errors import Gbdt2nnError

    try:
        teacher = factory(model=path)
        teacher.fit(X, y, task=task)
        arrays = [teacher.predict_margin(X), teacher.leaf_indices(X)]
        shap = teacher.shap_values(X)
        arrays += [shap.values, shap.expected_value]
        ensemble = teacher.structure()
        arrays += [ensemble.base_margin] + [tree.leaf_values for tree in ensemble.trees]
    except Gbdt2nnError as exc:
        text = str(exc)
        if "\n" in text:
            return "exception", f"a {type(exc).__name__} of several lines: {text[:200]!r}"
        return "error", text[:300]
    except Exception as exc:  # the promise is a gbdt2nn error: anything else is an internal error
        return "exception", f"{type(exc).__name__}: {str(exc)[:300]}"
    if not all(np.isfinite(np.asarray(array, dtype=np.float64)).all() for array in arrays):
        return "nonfinite", "margins, leaves, TreeSHAP or leaf values are not finite"
    return "ok", ""


def _worker(factory_name: str, dataset: str, rows: int, task: str) -> None:
    try:
        from gbdt2nn_core.data import TabularSchema, load_bundled, split_features_target

        module, _, attribute = factory_name.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
        bundled = load_bundled(dataset)
        features, target = split_features_target(bundled.frame.head(rows), bundled.target)
        X = TabularSchema.infer(features).to_frame(features)
        y = target.to_numpy()
    except Exception as exc:
        print(f"FUZZ-SETUP {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(2)
    print("READY", flush=True)
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        outcome, detail = _classify(factory, path, X, y, task)
        print("MUTANT " + json.dumps({"outcome": outcome, "detail": detail}), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
