"""Reading and writing a teacher's model file with one-line errors, for :class:`~gbdt2nn_core.interfaces.Teacher`
plugins: :meth:`Teacher.save <gbdt2nn_core.interfaces.Teacher.save>` should write atomically, and a factory's
``model=path`` should say plainly when the file is missing or unreadable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gbdt2nn_core.errors import ConfigError, ModelFileError

__all__ = ["current_umask", "read_model_file", "staged_folder", "write_atomic"]


def read_model_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the model file at ``path``; :class:`ModelFileError` when it is missing or cannot be read.

    Whether the content is a model is the backend's question: check it before handing it to the library,
    whose own loader may abort the process on a damaged file.
    """
    where = str(path)
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelFileError(path=where, problem="no such file", fix="check the path") from None
    except OSError as exc:
        raise ModelFileError(path=where, problem=exc.strerror or str(exc), fix="check the path") from None


def current_umask() -> int:
    """The process umask (read by setting and restoring it; there is no read-only call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so no half-written file remains.

    The target is replaced in one step (``os.replace``) after the data reach the disk; on any failure the
    temporary file is removed. A folder that cannot be written to is a :class:`ConfigError` on ``path``.
    """
    target = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(
            setting="path", value=str(target), fix=f"cannot write there ({exc.strerror}); pick a writable folder"
        ) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp's 0600 would hide the model from other users
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """Build a folder under a temporary name next to ``out`` and move it into place only when complete.

    Yields the staging folder. On success it gets the permissions a normal write would have (``mkdtemp`` makes
    it private) and replaces ``out`` (an existing ``out`` is swapped out, then removed); on any failure the
    staging folder is removed, so nothing half-written is ever left behind.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        mask = current_umask()
        os.chmod(staging, 0o777 & ~mask)
        for path in staging.rglob("*"):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        if out.exists():
            trash = out.with_name(f".{out.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            out.rename(trash)
            staging.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
