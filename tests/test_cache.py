"""The TreeSHAP cache: LightGBM's own ``pred_contrib`` once, then hits; misses, corrupt entries, atomic writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.data.cache import CACHE_ENV, ExplanationCache, default_cache_dir
from gbdt2nn_core.host.interfaces import Teacher, TreeShap
from gbdt2nn_core.host.registry import Registry

if TYPE_CHECKING:
    from conftest import TeacherOnRows


class Counter:
    """Wraps ``teacher.shap_values(X)`` and counts how often the cache asks for it."""

    def __init__(self, teacher: Teacher, X: pd.DataFrame) -> None:
        self.teacher, self.X, self.calls = teacher, X, 0

    def __call__(self) -> TreeShap:
        self.calls += 1
        return self.teacher.shap_values(self.X)


def _never() -> TreeShap:
    raise AssertionError("compute() was called although the explanation is cached")


def _entries(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


def test_first_call_computes_lightgbms_own_pred_contrib(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    cache = ExplanationCache(tmp_path)
    compute = Counter(teacher, X)

    result = cache.get_or_compute(teacher, X, "path-dependent", compute)

    native = teacher.native_model.predict(X, pred_contrib=True)
    assert compute.calls == 1
    assert (cache.hits, cache.misses) == (0, 1)
    assert result.values.shape == (len(X), X.shape[1])
    np.testing.assert_allclose(result.values, native[:, :-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.expected_value, [native[0, -1]], rtol=0, atol=1e-12)
    # path-dependent TreeSHAP adds up to the raw margin
    margin = teacher.native_model.predict(X, raw_score=True)
    np.testing.assert_allclose(result.values.sum(axis=1) + result.expected_value[0], margin, atol=1e-9)
    assert [p.suffix for p in _entries(tmp_path)] == [".npz"]


def test_second_call_is_a_hit_with_identical_values(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    first = ExplanationCache(tmp_path).get_or_compute(teacher, X, "path-dependent", Counter(teacher, X))

    cache = ExplanationCache(tmp_path)  # a new process would see the same folder
    again = cache.get_or_compute(teacher, X, "path-dependent", _never)
    once_more = cache.get_or_compute(teacher, X.copy(), "path-dependent", _never)  # equal rows, another object

    assert (cache.hits, cache.misses) == (2, 0)
    np.testing.assert_array_equal(again.values, first.values)
    np.testing.assert_array_equal(again.expected_value, first.expected_value)
    assert again.method == first.method == "path-dependent"
    np.testing.assert_array_equal(once_more.values, first.values)
    assert len(_entries(tmp_path)) == 1


def test_another_teacher_misses(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X, y = adult_teacher
    cache = ExplanationCache(tmp_path)
    cache.get_or_compute(teacher, X, "path-dependent", Counter(teacher, X))
    other = Registry().teacher("lightgbm", n_estimators=5, num_leaves=7, num_threads=1).fit(X, y, task="binary")
    compute = Counter(other, X)

    result = cache.get_or_compute(other, X, "path-dependent", compute)

    assert compute.calls == 1
    np.testing.assert_allclose(result.values, other.native_model.predict(X, pred_contrib=True)[:, :-1], atol=1e-12)
    assert len(_entries(tmp_path)) == 2


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda X: X.iloc[:-1], id="fewer-rows"),
        pytest.param(lambda X: X.iloc[::-1], id="reordered-rows"),
        pytest.param(lambda X: X.assign(age=X["age"] + 1.0), id="changed-value"),
    ],
)
def test_other_rows_miss(
    adult_teacher: TeacherOnRows, tmp_path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]
) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    cache = ExplanationCache(tmp_path)
    cache.get_or_compute(teacher, X, "path-dependent", Counter(teacher, X))
    rows = change(X)
    compute = Counter(teacher, rows)

    result = cache.get_or_compute(teacher, rows, "path-dependent", compute)

    assert compute.calls == 1
    np.testing.assert_allclose(result.values, teacher.native_model.predict(rows, pred_contrib=True)[:, :-1], atol=1e-12)


def test_another_method_misses(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    cache = ExplanationCache(tmp_path)
    cache.get_or_compute(teacher, X, "path-dependent", Counter(teacher, X))
    compute = Counter(teacher, X)
    cache.get_or_compute(teacher, X, "interventional", compute)
    assert compute.calls == 1


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: b"not a zip file", id="garbage"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:-10], id="tail-cut"),
    ],
)
def test_corrupt_entry_is_recomputed(
    adult_teacher: TeacherOnRows, tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    first = ExplanationCache(tmp_path).get_or_compute(teacher, X, "path-dependent", Counter(teacher, X))
    (entry,) = _entries(tmp_path)
    entry.write_bytes(damage(entry.read_bytes()))
    cache = ExplanationCache(tmp_path)
    compute = Counter(teacher, X)

    result = cache.get_or_compute(teacher, X, "path-dependent", compute)

    assert compute.calls == 1
    np.testing.assert_array_equal(result.values, first.values)
    # the entry was rewritten whole: the next call is a hit again
    np.testing.assert_array_equal(cache.get_or_compute(teacher, X, "path-dependent", _never).values, first.values)
    assert len(_entries(tmp_path)) == 1


def test_an_entry_that_needs_pickle_is_not_trusted(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    ExplanationCache(tmp_path).get_or_compute(teacher, X, "path-dependent", Counter(teacher, X))
    (entry,) = _entries(tmp_path)
    with entry.open("wb") as handle:  # object arrays can only be read back through pickle
        np.savez(handle, values=np.array([{"evil": 1}], dtype=object), expected_value=np.zeros(1), method="x")
    compute = Counter(teacher, X)

    result = ExplanationCache(tmp_path).get_or_compute(teacher, X, "path-dependent", compute)

    assert compute.calls == 1
    assert result.values.dtype == np.float64


def test_nothing_half_written_when_compute_fails(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X

    def fail() -> TreeShap:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        ExplanationCache(tmp_path / "cache").get_or_compute(teacher, X, "path-dependent", fail)
    assert _entries(tmp_path / "cache") == []


def test_nothing_half_written_when_writing_fails(
    adult_teacher: TeacherOnRows, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X

    def savez_then_crash(file: object, **arrays: object) -> None:
        file.write(b"PK\x03\x04 partial")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(OSError, match="disk full"):
        ExplanationCache(tmp_path).get_or_compute(teacher, X, "path-dependent", Counter(teacher, X))
    assert _entries(tmp_path) == []  # neither an entry nor a *.tmp file


def test_no_temporary_files_remain_after_normal_use(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    cache = ExplanationCache(tmp_path)
    for rows in (X, X.iloc[:100], X.iloc[100:]):
        cache.get_or_compute(teacher, rows, "path-dependent", Counter(teacher, rows))
    names = [p.name for p in _entries(tmp_path)]
    assert len(names) == 3
    assert all(name.startswith("treeshap-") and name.endswith(".npz") for name in names)
    assert not list(tmp_path.rglob("*.tmp"))


def test_disabled_cache_always_computes(adult_teacher: TeacherOnRows) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    cache = ExplanationCache(None)
    compute = Counter(teacher, X)
    cache.get_or_compute(teacher, X, "path-dependent", compute)
    cache.get_or_compute(teacher, X, "path-dependent", compute)
    assert compute.calls == 2
    assert (cache.hits, cache.misses) == (0, 2)


def test_default_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "gbdt2nn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "gbdt2nn"
