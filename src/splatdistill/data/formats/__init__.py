"""Dataset formats: one module per on-disk layout, each registering its name, detection and loader in
:data:`~splatdistill.data.formats.base.FORMATS` when imported (importing this package registers them all);
:func:`detect_format` and :func:`read_dataset` choose a loader by looking the registry up.

- ``splatdistill`` (:mod:`.native`): folders with ``scene.json`` (docs/data-format.md)
- ``scannetpp`` (:mod:`.scannetpp`): ScanNet++ as preprocessed by FiT3D
- ``nerfstudio`` (:mod:`.nerfstudio`): a folder with ``transforms.json``
- ``colmap`` (:mod:`.colmap`): a COLMAP sparse model plus images
- ``tum`` (:mod:`.tum`), ``7scenes`` (:mod:`.sevenscenes`): RGB-D sequences, read through :mod:`.rgbd`

:mod:`.middlebury` reads the bundled Middlebury pair (no path to detect). The paper's benchmarks
register from :mod:`splatdistill.eval.benchmarks`.
"""

from __future__ import annotations

from pathlib import Path

from splatdistill.data.formats import colmap, native, nerfstudio, scannetpp, sevenscenes, tum
from splatdistill.data.formats.base import FORMATS, Format, detect_order, register_format
from splatdistill.data.scene import Scene
from splatdistill.errors import UserError

__all__ = [
    "FORMATS",
    "Format",
    "colmap",
    "detect_format",
    "detect_order",
    "format_names",
    "native",
    "nerfstudio",
    "read_dataset",
    "register_format",
    "scannetpp",
    "sevenscenes",
    "tum",
]


def format_names() -> tuple[str, ...]:
    """What ``format=`` accepts: ``auto`` and every registered format, in detection order."""
    return ("auto", *(f.name for f in detect_order()))


def detect_format(path: Path) -> str:
    """Name of the layout found at ``path``: the first registered format, in detection order, that
    recognises it (raises a UserError listing what was looked for)."""
    path = Path(path)
    if not path.exists():
        raise UserError("no such file or directory", path)
    for fmt in detect_order():
        if fmt.detect(path):
            return fmt.name
    if path.is_file():
        files = " / ".join(f.file_hint for f in detect_order() if f.file_hint)
        raise UserError(f"expected a dataset folder (or a {files})", path)
    hint = ""
    if any(p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in path.iterdir() if p.is_file()):
        hint = f"; for a folder of photos run 'splatdistill data from-images {path} --out DATASET' first"
    layouts = [f.looks_for for f in detect_order() if f.looks_for and not f.benchmark]
    benchmarks = [f.looks_for for f in detect_order() if f.looks_for and f.benchmark]
    expected = ", ".join(layouts[:-1]) + f", or {layouts[-1]}" if not benchmarks else ", ".join(layouts)
    if benchmarks:
        expected += ", or a benchmark: " + ", ".join(benchmarks)
    raise UserError(f"no dataset found: expected {expected}{hint}", path)


def read_dataset(path: Path, split: str | None = None, skip_bad: bool = False, format: str = "auto") -> list[Scene]:
    """Every scene of the dataset at ``path`` (a path on disk; :func:`splatdistill.data.load_dataset`
    also accepts ``rooms``), read by the format named or detected, optionally one split."""
    path = Path(path)
    if format != "auto" and format not in FORMATS:
        close = FORMATS.suggest(format, ("auto",))
        raise UserError(
            f"unknown dataset format {format!r} (choose from {', '.join(format_names())})"
            + (f"; did you mean {close!r}?" if close else "")
        )
    fmt = detect_format(path) if format == "auto" else format
    if split is not None and split not in ("train", "val", "test"):
        raise UserError(f"unknown split '{split}' (choose from train, val, test)")
    scenes = FORMATS.get(fmt).load(path, split, skip_bad)
    if split is not None:
        scenes = [s for s in scenes if s.split == split]
    if not scenes:
        raise UserError(f"no scenes{f' in split {split}' if split else ''}", path)
    return scenes
