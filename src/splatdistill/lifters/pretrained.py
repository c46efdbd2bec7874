"""Predictors shipped inside the package, loadable offline by name (``predictor:NAME``, ``lifter=auto``).

Why: Splat-and-Distill lifts with a *feed-forward* reconstruction, so the default lifter must work on
any posed data without a depth sensor and without training first. Each entry is data, as timm's
pretrained configs are: where the weights live in the package, the exact command and data build that
trained them, and the held-out figures recorded when they were trained (``tests/test_pretrained.py``
reproduces them). The weights are the project's own (trained on its generated rooms data), so they
may be redistributed.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from splatdistill.errors import UserError
from splatdistill.registry import Registry

#: what ``lifter=auto`` uses
DEFAULT_PREDICTOR = "rooms-zncc"


@dataclass(frozen=True)
class PretrainedPredictor:
    """One shipped predictor: its folder under ``assets/predictors`` and how it was made."""

    name: str
    description: str
    command: str  # the exact command that trained it
    data: str  # the dataset build it was trained on; held-out figures are in its predictor.json


PRETRAINED: Registry[PretrainedPredictor] = Registry("shipped predictor")


def register_pretrained(entry: PretrainedPredictor) -> None:
    PRETRAINED.register(entry.name, entry)


register_pretrained(
    PretrainedPredictor(
        name="rooms-cnn",
        description="MVSplat-like predictor (own CNN matching features, 32 planes 0.5-12 m, 112 px), depth-supervised "
        "on the 24 training rooms",
        command="splatdistill lifter train --data rooms --out rooms-cnn --steps 2800 --threads 1",
        data="rooms-s32-v16-px256-seed0-e388a45222 (splatdistill data build-rooms, default settings)",
    )
)

register_pretrained(
    PretrainedPredictor(
        name="rooms-zncc",
        description="the same network with its depth planes placed per pair by focal x camera baseline (any scene "
        "units: castles at 0.3 m, stereo rigs, SfM models) and a ZNCC grayscale matching cost beside the "
        "learned one (holds on real photos); depth-supervised on the 24 training rooms; no teacher "
        "features, so it works with any backbone",
        command="splatdistill lifter train --data rooms --out rooms-zncc --steps 1000 --far 100 --threads 1 planes=baseline zncc=true",
        data="rooms-s32-v16-px256-seed0-e388a45222 (splatdistill data build-rooms, default settings)",
    )
)


def pretrained_folder(name: str) -> Path:
    """The package folder holding predictor ``name`` (``predictor.safetensors`` + ``predictor.json``)."""
    if name not in PRETRAINED:
        raise UserError(
            f"no shipped predictor named {name!r} (shipped: {', '.join(PRETRAINED)}; or pass a folder "
            "written by 'splatdistill lifter train')"
        )
    folder = Path(str(resources.files("splatdistill") / "assets" / "predictors" / name))
    if not (folder / "predictor.safetensors").is_file():
        raise UserError(
            f"the shipped predictor {name!r} is missing from this installation (reinstall splatdistill)", folder
        )
    return folder


def resolve_predictor(spec: str) -> Path:
    """A predictor folder for ``spec``: an existing path, or the name of a shipped predictor
    (``shipped`` = the default one)."""
    path = Path(spec).expanduser()
    if path.exists():
        return path
    name = DEFAULT_PREDICTOR if spec == "shipped" else spec
    if name in PRETRAINED:
        return pretrained_folder(name)
    raise UserError(f"no such predictor: not a path, and not a shipped name ({', '.join(PRETRAINED)}, shipped)", path)
