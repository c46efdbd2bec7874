"""Shared tiny datasets for the data tests (built once per test session, whichever file asks first)."""

from __future__ import annotations

import functools
from pathlib import Path

TINY = dict(scenes=3, views=5, size=80, seed=3)


@functools.cache
def _build(root: str) -> Path:
    from splatdistill.data.rooms.build import RoomsParams, build_rooms

    return build_rooms(Path(root) / "rooms", RoomsParams(**TINY), workers=1, progress=False)


def tiny_rooms(tmp_path_factory) -> Path:
    base = getattr(tiny_rooms, "_base", None)
    if base is None:
        base = tiny_rooms._base = str(tmp_path_factory.mktemp("tiny_rooms"))
    return _build(base)
