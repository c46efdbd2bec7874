"""One small registry for every "name -> thing" table: dataset formats, backbones (teacher families and
released weights), lifter specs and the paper's benchmarks.

Like timm's ``register_model`` / ``create_model``: a module registers what it provides when it is
imported, and the code that looks a name up gets a one-line :class:`UserError` with a "did you mean"
for a typo instead of a ``KeyError``. Entries keep the order they were registered in (the order a
listing or a detection loop walks them).
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar, overload

from splatdistill.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order; ``kind`` names them in error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, value: T) -> T: ...

    def register(self, name, value=None):  # type: ignore[no-untyped-def]
        """``register(name, value)``, or ``@register(name)`` above a function or class; a name is taken once."""
        if value is None:
            return lambda v: self.register(name, v)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} names are non-empty strings, got {name!r}")
        if name in self._entries and self._entries[name] is not value:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = value
        return value

    def get(self, name: str) -> T:
        """The entry called ``name``; an unknown name raises a UserError listing the names (and the closest)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UserError(self.unknown_message(name)) from None

    __getitem__ = get

    def find(self, name: str) -> T | None:
        """The entry called ``name``, or None."""
        return self._entries.get(name)

    def unknown_message(self, name: str, also: tuple[str, ...] = ()) -> str:
        """"unknown KIND 'name' (choose from ...); did you mean '...'?", with ``also`` (names accepted
        beside the entries, such as ``auto``) listed first."""
        choices = [*also, *self._entries]
        close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r} (choose from {', '.join(choices)}){hint}"

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return list(self._entries.items())

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
