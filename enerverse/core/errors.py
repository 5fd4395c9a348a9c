"""The project's error base class and the one way entry points report it.

A :class:`EnerVerseError` is a user's mistake or an unusable input (a bad setting, a folder that is
not a checkpoint, a store of another format): its message says what was expected. Entry points run
their body under :func:`user_errors`, which prints ``error: <message>`` on one line and exits with
code 2. Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

USER_ERROR_EXIT = 2


class EnerVerseError(Exception):
    """Base of every error a user can cause; the message names what was expected."""


@contextmanager
def user_errors(*also: type[BaseException]) -> Iterator[None]:
    """Turn project errors (and the exception types in ``also``) into one line on stderr + exit 2.

    ``also`` is for foreign exception types that always mean a user's mistake; never a builtin such as
    ValueError, which bugs raise too (raise a project error where the input is checked instead)."""
    try:
        yield
    except (EnerVerseError, *also) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr, flush=True)
        raise SystemExit(USER_ERROR_EXIT) from None
