"""Reading and writing a teacher's model file with one-line errors, for :class:`~gbdt2nn_core.host.interfaces.Teacher`
plugins: :meth:`Teacher.save <gbdt2nn_core.host.interfaces.Teacher.save>` should write atomically, and a factory's
``model=path`` should say plainly when the file is missing or unreadable.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gbdt2nn_core.errors import ConfigError, ModelFileError

__all__ = ["current_umask", "read_model_file", "staged_folder", "sweep_temporaries", "write_atomic"]

#: Temporaries of a writer that left no process id in their name (older versions) are swept after this long.
STALE_AFTER_S = 24 * 3600


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


def _temporary_prefix(target: Path) -> str:
    """``.NAME.PID.``: the writer's process id in a temporary's name tells a later writer whether it is alive."""
    return f".{target.name}.{os.getpid()}."


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_temporaries(folder: Path, prefix: str, suffix: str) -> list[Path]:
    """Remove the temporaries ``prefix*suffix`` in ``folder`` that no live writer owns; returns what was removed.

    A temporary named ``PREFIX<pid>.<random>SUFFIX`` belongs to process ``pid``: it is removed when that process
    is gone (killed before it could clean up). One without a process id (written by an older version) is removed
    once it is :data:`STALE_AFTER_S` old. Temporaries of live writers, this process included, are left alone.
    """
    import glob
    import time

    removed = []
    for path in folder.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        # the middle is "<pid>.<random>", or "<random>" (older versions); anything else belongs to another name
        middle = path.name[len(prefix) : len(path.name) - len(suffix)]
        owned = re.fullmatch(r"(\d+)\.\w+", middle)
        if owned:
            stale = not _writer_alive(int(owned.group(1)))
        elif re.fullmatch(r"\w+", middle):
            try:
                stale = time.time() - path.lstat().st_mtime > STALE_AFTER_S
            except OSError:
                continue
        else:
            continue
        if stale:
            _remove(path)
            removed.append(path)
    return removed


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so no half-written file remains.

    The target is replaced in one step (``os.replace``) after the data reach the disk; on any failure the
    temporary file is removed, and one left by a killed writer is swept by the next write (see
    :func:`sweep_temporaries`). A folder that cannot be written to is a :class:`ConfigError` on ``path``.
    """
    target = Path(path)
    sweep_temporaries(target.parent, f".{target.name}.", ".tmp")
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=_temporary_prefix(target), suffix=".tmp")
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
    staging folder is removed, so nothing half-written is ever left behind. A process killed meanwhile
    (``kill -9``) cannot clean up: its staging folder, named with its process id, is swept by the next write of
    ``out``, as is a ``.NAME.old`` left by a swap it did not finish. A symbolic link ``out`` is written through:
    the folder it points to is replaced, the link stays.
    """
    out = Path(os.path.realpath(out)) if out.is_symlink() else out
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(out.parent, f".{out.name}.", ".partial")
    trash = out.with_name(f".{out.name}.old")
    if trash.exists() or trash.is_symlink():
        _remove(trash)
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(out), suffix=".partial", dir=out.parent))
    try:
        yield staging
        mask = current_umask()
        os.chmod(staging, 0o777 & ~mask)
        for path in staging.rglob("*"):
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        if out.exists():
            shutil.rmtree(trash, ignore_errors=True)
            out.rename(trash)
            staging.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
