"""Who owns a :class:`~gbdt2nn_core.data.rowfile.RowFolder`, and removing the folders of runs that died.

A run killed with ``SIGKILL`` (or by the out-of-memory killer, or a power cut) cannot remove its rows folder, which
may hold hundreds of MB. So every folder's name carries its owner — this host, the owning process's id and when
that process started — and creating a folder removes its siblings whose owner is provably gone
(:func:`remove_dead_folders`). The record is in the name rather than in a file inside the folder so that it exists
from the instant the folder does (no window in which a live folder looks ownerless) and can be read without
opening another user's private folder.

A folder is removed only if its owner is on this host and is no longer running: its pid is gone, is a zombie, or
now belongs to another process (its start time differs). A folder of a live process, of another host (a shared
file system) or in another pid namespace (a container sharing the folder) is kept, as is anything whose owner
cannot be read. A folder whose name carries no owner (made before owners were recorded) is removed once nothing
in it has changed for :data:`UNOWNED_MAX_AGE_S` (a day; why there).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["UNOWNED_MAX_AGE_S", "owner_tag", "remove_dead_folders"]

#: A rows folder without an owner in its name is removed when neither it nor any file in it has changed for this
#: long (a day). Such folders come only from versions that did not record owners (a folder gets its owner with its
#: name), so whether their run is alive cannot be told: a run still reading rows it wrote a day earlier is
#: unlikely, and waiting a day costs only disk space, while removing a live run's rows would fail it.
UNOWNED_MAX_AGE_S = 24 * 3600

#: Stands for a start time this system cannot tell (the pid alone is then checked: gone means dead).
_UNKNOWN = "x"


def owner_tag() -> str:
    """``HOST-PID-START`` for this process: a hash of the host name (with the pid namespace), the process id, and a
    hash of the process's start time; letters, digits and ``-`` only."""
    return _owner_tag(os.getpid())  # by pid: a forked child is another owner


@functools.cache
def _owner_tag(pid: int) -> str:
    """:func:`owner_tag` of process ``pid`` (this one), asked once (on macOS it runs ``ps``)."""
    return f"{_host_tag()}-{pid}-{_start_tag(pid) or _UNKNOWN}"


def remove_dead_folders(parent: Path, prefix: str, *, keep: Path | None = None) -> list[Path]:
    """Remove the folders ``parent/prefix*`` (except ``keep``) whose owner (:func:`owner_tag`) is dead; return them.

    Never raises for a folder: one that cannot be read or removed (permissions, another process removing it at
    the same time) is left alone. Does nothing on Windows, where no process's liveness is checked here.
    """
    if os.name == "nt":
        return []
    try:
        entries = [entry for entry in os.scandir(parent) if entry.name.startswith(prefix)]
    except OSError:
        return []
    removed = []
    for entry in entries:
        path = Path(entry.path)
        try:
            if path == keep or not entry.is_dir(follow_symlinks=False) or not _is_dead(path, prefix):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def _is_dead(folder: Path, prefix: str) -> bool:
    """Whether ``folder``'s owner is certainly not running (see the module's docstring)."""
    fields = folder.name[len(prefix) :].split("-")
    if len(fields) < 4 or not fields[1].isdigit():  # HOST-PID-START-<random>; anything else has no owner
        return _unchanged_for(folder, UNOWNED_MAX_AGE_S)
    host, pid, start = fields[0], int(fields[1]), fields[2]
    if host != _host_tag() or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: it exists
    except (OSError, OverflowError):  # OverflowError: a pid no process can have, in a name not made here
        return False
    now = _start_tag(pid)
    if now == "zombie":
        return True
    # a start time we cannot read (or could not record) proves nothing: keep the folder
    return start != _UNKNOWN and now is not None and now != start


def _unchanged_for(folder: Path, seconds: float) -> bool:
    """Whether neither ``folder`` nor anything directly in it was modified in the last ``seconds``."""
    newest = folder.stat().st_mtime
    for entry in os.scandir(folder):
        newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return time.time() - newest > seconds


@functools.cache
def _host_tag() -> str:
    """A short hash of this host's name and, on Linux, of the pid namespace (pids are only comparable inside it)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return _digest(f"{socket.gethostname()}\0{namespace}")


def _start_tag(pid: int) -> str | None:
    """A short hash of when process ``pid`` started (``"zombie"`` for one that has exited but is not yet reaped),
    or ``None`` when it cannot be read (no such process, no way to ask)."""
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():  # Linux: clock ticks since boot, and the boot they count from
        try:  # the fields after the command name (which may hold spaces or parentheses): the state first
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[-1].split()
        except OSError:
            return None
        if len(fields) < 20:
            return None
        # field 22 of proc_pid_stat(5), the start in clock ticks after boot, is the 20th from the state
        return "zombie" if fields[0] in ("Z", "X") else _digest(f"{_boot_id()}\0{fields[19]}")
    return _ps_start(pid)


def _ps_start(pid: int) -> str | None:
    """``_start_tag`` from ``ps`` (macOS and other systems without ``/proc``): the start time, to the second."""
    try:
        result = subprocess.run(
            ["ps", "-o", "stat=,lstart=", "-p", str(pid)],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    text = result.stdout.strip()
    if result.returncode != 0 or not text:
        return None
    state, _, started = text.partition(" ")
    return "zombie" if state.startswith("Z") else _digest(started.strip())


@functools.cache
def _boot_id() -> str:
    """This boot's id on Linux (start times count from the boot, so a reboot may repeat them)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def _digest(text: str) -> str:
    """8 hex digits of ``text``'s SHA-256: enough to tell hosts or start times apart, short in a folder name."""
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()[:8]
