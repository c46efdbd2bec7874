"""Posed multi-view scenes: the on-disk format, the embedded ``rooms`` dataset, loaders for user data.

``load_dataset(path)`` reads any registered layout, detected from the files present. The package is
split by concern:

- :mod:`.formats`: one module per layout (``splatdistill``, ``scannetpp``, ``nerfstudio``, ``colmap``,
  ``tum``, ``7scenes``), each registering its name, detection and loader;
- :mod:`.rooms`: the generator of the embedded ``rooms`` dataset;
- :mod:`.checks`: ``splatdistill data check`` (files, geometry, contact sheet);
- :mod:`.scene`, :mod:`.io`, :mod:`.validate`, :mod:`.masks`: what every format shares;
  :mod:`.views` and :mod:`.sampler`: batches for training and evaluation.

Turning captures into datasets (SfM, RGB-D odometry) is :mod:`splatdistill.captures`; the paper's
benchmark layouts (``nyuv2``, ``scannet1500``, ``ade20k``, ``kitti``, ``scannetpp_probe``,
``scannet_probe``; docs/evaluation.md) live beside the evaluation in :mod:`splatdistill.eval.benchmarks`
and are known to ``load_dataset`` once that package is imported.
"""

from __future__ import annotations

from pathlib import Path

from splatdistill.data.formats import detect_format, format_names, read_dataset
from splatdistill.data.rooms.build import ensure_rooms as _ensure
from splatdistill.data.scene import Scene, ViewData, ViewRecord
from splatdistill.errors import UserError

#: the name of the embedded dataset, accepted wherever a dataset path is
ROOMS = "rooms"

__all__ = [
    "ROOMS",
    "Scene",
    "ViewData",
    "ViewRecord",
    "detect_format",
    "ensure_rooms",
    "format_names",
    "load_dataset",
    "load_splits",
    "resolve_root",
]


def resolve_root(data: str | Path, progress: bool = False) -> Path:
    """The folder behind a dataset argument: ``"rooms"`` is the embedded dataset (built on first use)."""
    if str(data) == ROOMS:
        return ensure_rooms(progress=progress)
    return Path(data).expanduser()


def load_dataset(
    path: str | Path, split: str | None = None, skip_bad: bool = False, format: str = "auto"
) -> list[Scene]:
    """Load every scene at ``path`` (``"rooms"``: the embedded dataset, built on first use; optionally one split).

    A bad view (missing or broken file, non-orthonormal rotation, singular K, ...) raises a
    :class:`UserError` naming the file; with ``skip_bad=True`` it is left out with a
    :class:`~splatdistill.data.validate.DatasetWarning` instead. Pixels are read lazily by
    ``Scene.load_view`` (which also raises a UserError naming a file that fails to decode).
    """
    return read_dataset(resolve_root(path), split=split, skip_bad=skip_bad, format=format)


def load_splits(data: str | Path, splits: tuple[str, ...] | list[str]) -> tuple[Path, dict[str, list[Scene]]]:
    """(root, scenes by split) of a dataset; a split it does not have is empty (one capture has no
    held-out scenes), but a dataset without train scenes is refused."""
    root = resolve_root(data)
    scenes = load_dataset(root)
    by_split = {s: [sc for sc in scenes if sc.split == s] for s in splits}
    if "train" in by_split and not by_split["train"]:
        raise UserError(
            f"no scenes in split train (the dataset's splits: {', '.join(sorted({sc.split for sc in scenes}))})", root
        )
    return root, by_split


def ensure_rooms(root: str | Path | None = None, **params) -> Path:
    """Path of the built ``rooms`` dataset (built on first use); see :func:`splatdistill.data.rooms.ensure_rooms`."""

    return _ensure(root, **params)
