"""Claims: how several workers sharing one OUT keep out of each other's runs.

A run directory is claimed with an advisory lock (flock) on path/.claim rather than by the file's
mere presence: the kernel drops the lock when its process ends, kill -9 included, so a crashed
worker never leaves a run blocked. The file records the holder (host, pid, since) for people; it
is not what is checked. Locks span machines where the shared filesystem supports them (NFS with
its lock manager, most cluster filesystems).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

CLAIM = ".claim"  # in a run directory: its lock, and who holds it
_unlocked_warned = False  # the lock fallback is announced once per process, not once per run


@contextlib.contextmanager
def claim(path: Path):
    """Hold a run directory against other workers; yields False when another worker holds it.

    Where flock is missing (Windows) runs are not claimed, and workers must be given disjoint grids.
    """
    try:
        import fcntl  # noqa: F401  (its absence is the test)
    except ImportError:
        yield True
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / CLAIM, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _lock(fd, path)
        if not locked:  # None: this filesystem has no locks; go on unclaimed, as warned
            yield locked is None
            return
        holder = f"{os.uname().nodename} pid {os.getpid()} since {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        try:
            yield True
        finally:
            os.ftruncate(fd, 0)  # unlocked below; an empty file means nobody holds the run
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int, path: Path) -> bool | None:
    """Take the claim's lock: True, False when another worker holds it, None when the filesystem
    has no locks (some NFS, FUSE and cluster mounts)."""
    import fcntl
    for _ in range(5):  # a moment's retry: held() takes the lock briefly to look
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.02)
        except OSError as e:
            global _unlocked_warned
            if not _unlocked_warned:
                logging.getLogger("gsau").warning(
                    "%s cannot be locked (%s); runs are not claimed, so run only one worker on it",
                    path.parent, e.strerror)
                _unlocked_warned = True
            return None
    return False


def held(path: Path) -> str | None:
    """Who holds a run directory (the claim's text), or None if no live worker does. Read-only:
    creates nothing, so a dry run leaves no trace."""
    try:
        import fcntl
        fd = os.open(path / CLAIM, os.O_RDONLY)
    except (ImportError, FileNotFoundError):
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another worker"
    except OSError:  # no locks on this filesystem: nobody can be seen holding anything
        return None
    finally:
        os.close(fd)
