"""One small registry for every "name -> thing" table: dataset formats, backbones (teacher families and
released weights), lifter specs and the paper's benchmarks.

Like timm's ``register_model`` / ``create_model``: a module registers what it provides when it is
imported, and the code that looks a name up gets a one-line :class:`UserError` with a "did you mean"
for a typo instead of a ``KeyError``. Entries keep the order they were registered in (the order a
listing or a detection loop walks them).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from splatdistill.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order; ``kind`` names them in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str, *, replace: bool = False) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, value: T, *, replace: bool = False) -> T: ...

    def register(self, name, value=None, *, replace=False):  # type: ignore[no-untyped-def]
        """``register(name, value)``, or ``@register(name)`` above a function or class. A name is taken
        once (two modules claiming one name is a bug), unless ``replace`` says a later entry wins."""
        if value is None:
            return lambda v: self.register(name, v, replace=replace)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        if not replace and name in self._entries and self._entries[name] is not value:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = value
        return value

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises a UserError listing the names (and the closest)."""
        if name not in self:
            raise UserError(self.unknown_message(name))
        return self._entries[name]

    __getitem__ = get

    def find(self, name: str) -> T | None:
        """The entry called ``name``, or None."""
        return self._entries[name] if name in self else None

    def unknown_message(self, name: str, also: tuple[str, ...] = ()) -> str:
        """The one-line refusal of an unknown name: the choices (``also``, names accepted beside the
        entries such as ``auto``, first) and the closest one, if any."""
        choices = [*also, *self._entries]
        close = self.suggest(name, also)
        hint = f"; did you mean {close!r}?" if close else ""
        return f"unknown {self.kind} {name!r} (choose from {', '.join(choices)}){hint}"

    def suggest(self, name: str, also: tuple[str, ...] = ()) -> str | None:
        """The registered name (or one of ``also``) closest to a mistyped ``name``, if one is close."""
        close = difflib.get_close_matches(str(name), [*also, *self._entries], n=1, cutoff=0.6)
        return close[0] if close else None

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
