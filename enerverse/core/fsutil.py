"""Crash-safe file-system primitives shared by outputs, the episode store and checkpoints.

* :func:`fsync_path` / :func:`fsync_tree`: flush files and directories to stable storage.
* :func:`write_bytes_atomic` / :func:`write_json_atomic`: temp file in the same folder, fsync,
  ``os.replace``, fsync of the folder. Readers see the old file or the complete new one.
* :func:`replace_dir_atomic`: put a finished directory at a path that may already hold one, with
  no moment in which the path is missing (Linux ``renameat2(RENAME_EXCHANGE)``).
* :func:`rename_noreplace`: rename that never replaces an existing destination.

Standard library only (no numpy, no torch).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

_AT_FDCWD = -100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
# errno values meaning "this kernel / file system cannot do that renameat2 flag": fall back.
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP})
_renameat2_fn: Any = None


def fsync_path(path: str | os.PathLike) -> None:
    """fsync one file or directory.

    A directory on a file system that cannot fsync directories (EINVAL / ENOTSUP) is skipped:
    there is nothing more durable to be had there. Every other error is raised.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP) or not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and directory under ``root`` (children before their folder), then ``root``."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            fsync_path(os.path.join(dirpath, f))
        fsync_path(dirpath)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path``.

    The bytes go to a temp file ``.<name>.<random>.tmp`` in the same folder (created if needed),
    which is fsynced, renamed over ``path`` with ``os.replace``, and the folder fsynced
    (``durable=False`` skips both fsyncs). Readers see the old file or the complete new one; on any
    error the old file is untouched and the temp file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(path.parent)
    return path


def write_json_atomic(
    path: str | os.PathLike, obj: Any, *, indent: int | None = 2, allow_nan: bool = True, durable: bool = True
) -> Path:
    """Write plain-JSON ``obj`` (plus a final newline) with :func:`write_bytes_atomic`.

    ``obj`` must already be JSON-serialisable (see :func:`enerverse.core.outputs.write_json_atomic`
    for numpy / Path / dataclass conversion); a TypeError or ValueError leaves ``path`` untouched.
    """
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan) + "\n"
    return write_bytes_atomic(path, text.encode("utf-8"), durable=durable)


def _renameat2(src: str | os.PathLike, dst: str | os.PathLike, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the kernel, libc or file system lacks it."""
    global _renameat2_fn
    if _renameat2_fn is None:
        try:
            _renameat2_fn = ctypes.CDLL(None, use_errno=True).renameat2
        except (AttributeError, OSError):
            _renameat2_fn = False
    if _renameat2_fn is False:
        return False
    rc = _renameat2_fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags))
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), os.fspath(src), None, os.fspath(dst))


def rename_noreplace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists (never replaces it).

    Uses ``renameat2(RENAME_NOREPLACE)`` where available. Fallback: a plain ``os.rename``, which
    refuses a non-empty destination directory (ENOTEMPTY, reported as FileExistsError) but would
    replace an empty directory or a file that appeared after the existence check.
    """
    if _renameat2(src, dst, RENAME_NOREPLACE):
        return
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination exists", os.fspath(dst))
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, "destination exists", os.fspath(dst)) from e
        raise


def replace_dir_atomic(src: str | os.PathLike, dst: str | os.PathLike, *, durable: bool = True) -> bool:
    """Move the finished directory ``src`` to ``dst``, replacing whatever ``dst`` holds; True if atomic.

    * ``dst`` absent: one ``rename`` (atomic).
    * ``dst`` present: ``renameat2(RENAME_EXCHANGE)`` swaps the two in one step, so ``dst`` always
      names either the complete old or the complete new directory, also across a SIGKILL; the old
      one (now at ``src``) is then deleted. A crash before that deletion leaves it at ``src``.
    * Fallback where the exchange is unsupported (not Linux, kernel < 3.15, a file system without
      it): ``dst`` is renamed aside to ``.<name>.old-<hex>`` next to it, ``src`` renamed to
      ``dst``, and the old one deleted; the function returns False. A crash between the two renames
      leaves nothing at ``dst`` but the complete old directory at the ``.old-`` path; any error
      there puts the old directory back.

    With ``durable`` the parent folder of ``dst`` is fsynced after the rename (fsync the content of
    ``src`` before calling). The return value says whether the atomic path was taken.
    """
    src, dst = Path(src), Path(dst)
    for _ in range(3):
        if os.path.lexists(dst):
            return _replace_existing_dir(src, dst, durable)
        try:
            os.rename(src, dst)
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST):  # dst appeared meanwhile: replace it
                continue
            raise
        if durable:
            fsync_path(dst.parent)
        return True
    raise FileExistsError(errno.EEXIST, "destination keeps reappearing", os.fspath(dst))


def _replace_existing_dir(src: Path, dst: Path, durable: bool) -> bool:
    if _renameat2(src, dst, RENAME_EXCHANGE):  # src now holds the old directory
        if durable:
            fsync_path(dst.parent)
        shutil.rmtree(src, ignore_errors=True)
        return True
    old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(dst, old)
    try:
        os.rename(src, dst)
    except BaseException:
        if not os.path.lexists(dst):  # the new one did not get in: put the previous one back
            os.rename(old, dst)
        raise
    if durable:
        fsync_path(dst.parent)
    shutil.rmtree(old, ignore_errors=True)
    return False
