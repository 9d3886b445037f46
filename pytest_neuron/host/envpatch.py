"""Setting environment variables for a while, and restoring them exactly."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping, MutableMapping


class EnvPatch:
    """Applies ``values`` to ``environ`` and restores every touched name exactly.

    A name that was unset is unset again; a name set to ``None`` in ``values``
    is removed for the duration.  Patches nest: restore them in reverse order.
    """

    def __init__(
        self, values: Mapping[str, str | None], environ: MutableMapping[str, str] | None = None
    ) -> None:
        self.environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self.values = dict(values)
        self._saved: dict[str, str | None] | None = None

    def apply(self) -> EnvPatch:
        if self._saved is not None:
            raise RuntimeError("EnvPatch applied twice")
        self._saved = {name: self.environ.get(name) for name in self.values}
        for name, value in self.values.items():
            if value is None:
                self.environ.pop(name, None)
            else:
                self.environ[name] = value
        return self

    def restore(self) -> None:
        if self._saved is None:
            return
        for name, value in self._saved.items():
            if value is None:
                self.environ.pop(name, None)
            else:
                self.environ[name] = value
        self._saved = None

    def __enter__(self) -> EnvPatch:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.restore()
