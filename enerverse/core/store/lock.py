"""Writer locks on temp episode folders, so cleanup never deletes an episode that is being written.

Protocol (``fcntl.flock`` on ``<temp folder>/.writer.lock``; the kernel drops the lock when its
holder's process dies, also on SIGKILL):

* a writer creates its temp folder, then takes the lock with :func:`lock_dir` and keeps it open
  until after the commit rename or the abort;
* a cleaner deletes a temp folder only while holding that folder's lock itself (also via
  :func:`lock_dir`, which creates the lock file of a folder that has none), so it can never take a
  live writer's folder, and a writer can never lock a folder that is being deleted;
* :func:`lock_dir` checks after locking that the lock file is still the one at the path (it may
  have been deleted by a cleaner the caller was waiting on), so holding its fd really means owning
  the folder.

flock locks belong to the open file description: a second ``open`` in the same process conflicts
just like another process. A forked child shares its parent's descriptions and so its locks.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = ".writer.lock"


def lock_dir(folder: str | os.PathLike) -> int | None:
    """Take the writer lock of ``folder`` without waiting; the open fd, or None if not possible.

    None when another open file holds the lock, the folder no longer exists, or the lock file
    was replaced while locking. NotADirectoryError if ``folder`` is a file.
    """
    lock_path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not os.path.samestat(os.fstat(fd), os.stat(lock_path)):
            raise FileNotFoundError(lock_path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_locked(folder: str | os.PathLike) -> bool:
    """Whether a live writer holds the lock of ``folder`` (False where there is no lock file)."""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the probe lock
    return False
