"""A process's command line as a person typed it: ``python -m pytest -n 2``, not a site-packages path.

``sys.argv[0]`` of ``python -m pytest`` is ``.../site-packages/pytest/__main__.py``
and that of the ``pytest`` console script its absolute path in the venv's
``bin``; ``sys.orig_argv`` (Python 3.10+) keeps ``-m pytest``.  Pure: the
caller passes the argument vector and the directories of ``PATH``.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

#: the options of the interpreter that take a value (``python -X dev -m pytest``)
_TAKES_VALUE = frozenset({"-X", "-W", "-Q"})


def as_typed(argv: Sequence[str], path_dirs: Sequence[str] = ()) -> str:
    """``argv`` of a Python process (its ``/proc/PID/cmdline`` or ``sys.orig_argv``) as typed.

    The interpreter and a console script found in ``path_dirs`` (or next to the
    interpreter) are shown by their base names; everything else as it was given.
    """
    if not argv:
        return ""
    words = list(argv)
    first = os.path.basename(words[0])
    if not first.startswith("python"):
        return shlex.join([_short(words[0], path_dirs), *words[1:]])
    i = 1
    while i < len(words) and words[i].startswith("-") and words[i] not in ("-m", "-c", "-"):
        i += 2 if words[i] in _TAKES_VALUE else 1
    if i < len(words) and words[i] == "-m":
        return shlex.join(["python", *words[1:]])
    if i < len(words) and not words[i].startswith("-"):
        script = words[i]
        if os.path.isabs(script) and os.path.dirname(script) in {*path_dirs, os.path.dirname(words[0])}:
            return shlex.join([os.path.basename(script), *words[i + 1 :]])  # a console script: `pytest`
    return shlex.join(["python", *words[1:]])


def _short(program: str, path_dirs: Sequence[str]) -> str:
    return os.path.basename(program) if os.path.dirname(program) in path_dirs else program


def path_dirs(env: dict[str, str] | None = None) -> tuple[str, ...]:
    environ = os.environ if env is None else env
    return tuple(d for d in environ.get("PATH", "").split(os.pathsep) if d)


def this_command() -> str:
    """This process's command line as typed (falls back to ``sys.argv`` before 3.10)."""
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return as_typed(argv, path_dirs()) or sys.executable
