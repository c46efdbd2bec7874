"""The registry of dataset formats: each loader module registers its name, how to recognise its layout
and how to load it (nerfstudio's dataparsers, as one table instead of an if-chain).

:func:`splatdistill.data.detect_format` tries the registered formats by ``order`` (lowest first), so
the order that settles ambiguous folders is written beside each format. The paper's benchmark layouts
register here too, from :mod:`splatdistill.eval.benchmarks`, when that package is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from splatdistill.data.scene import Scene
from splatdistill.registry import Registry

#: (path, split or None, skip_bad) -> scenes; a loader that has no splits of its own ignores ``split``
Loader = Callable[[Path, "str | None", bool], list[Scene]]


@dataclass(frozen=True)
class Format:
    """One on-disk layout that ``load_dataset`` reads."""

    name: str
    detect: Callable[[Path], bool]  # does ``path`` (a file or a folder) hold this layout?
    load: Loader
    order: int  # detection order: lower is tried first
    looks_for: str = ""  # what detect looks for, in the "no dataset found" message
    file_hint: str = ""  # the single file this format accepts as a path, if any (e.g. "transforms.json")
    benchmark: bool = False  # one of the paper's benchmarks (listed apart in messages)


FORMATS: Registry[Format] = Registry("dataset format")


def register_format(
    name: str,
    detect: Callable[[Path], bool],
    load: Loader,
    order: int,
    looks_for: str = "",
    file_hint: str = "",
    benchmark: bool = False,
) -> Format:
    """Make ``name`` a dataset format (``format=NAME``) that :func:`detect_order` tries at ``order``."""
    taken = {f.order: f.name for f in FORMATS.values()}
    if order in taken and taken[order] != name:
        raise ValueError(f"dataset formats {taken[order]!r} and {name!r} both have detection order {order}")
    return FORMATS.register(name, Format(name, detect, load, order, looks_for, file_hint, benchmark))


def detect_order() -> list[Format]:
    """The registered formats in the order detection tries them."""
    return sorted(FORMATS.values(), key=lambda f: f.order)
