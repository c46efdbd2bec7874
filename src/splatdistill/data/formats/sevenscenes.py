"""Microsoft 7-Scenes (its own layout)::

    ROOT/<scene>/TrainSplit.txt, TestSplit.txt     optional: 'sequenceN' per line
    ROOT/<scene>/seq-NN/frame-NNNNNN.color.png      8-bit RGB 640x480
    ROOT/<scene>/seq-NN/frame-NNNNNN.depth.png      16-bit millimetres, 65535 = no depth
    ROOT/<scene>/seq-NN/frame-NNNNNN.pose.txt       4x4 camera-to-world (OpenCV axes)

``ROOT`` may also be one scene folder or one ``seq-NN`` folder. Every sequence is one scene named
``<scene>-seq-NN``, in the test split when its scene's TestSplit.txt lists it. The dataset gives no
calibration beyond the nominal intrinsics (585, 585, 320, 240) and does not register depth to colour;
like most users of the dataset we take the two as aligned. ``every`` keeps one frame in N (the
sequences are 30 Hz video; default 10).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from splatdistill.data.formats.base import register_format
from splatdistill.data.scene import Scene
from splatdistill.errors import UserError

from .rgbd import RGBDFrame, RGBDSequence, parse_transform, sequence_scene

K_NOMINAL = np.array([[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1.0]])  # principal point at the image centre
DEPTH_INVALID = 65535


def sequence_dirs(root: Path) -> list[Path]:
    if any(root.glob("frame-*.color.png")):
        return [root]
    dirs = sorted(p for p in root.glob("seq-*") if p.is_dir())
    if not dirs:
        dirs = sorted(p for p in root.glob("*/seq-*") if p.is_dir())
    return [d for d in dirs if any(d.glob("frame-*.color.png"))]


def is_sevenscenes(root: Path) -> bool:
    return bool(sequence_dirs(root))


def _test_sequences(scene_dir: Path) -> set[int]:
    f = scene_dir / "TestSplit.txt"
    if not f.is_file():
        return set()
    return {int(n) for n in re.findall(r"sequence(\d+)", f.read_text(errors="replace"))}


def load_sevenscenes_sequence(seq_dir: Path, every: int = 10, require_poses: bool = True) -> RGBDSequence:
    colors = sorted(seq_dir.glob("frame-*.color.png"))[:: max(every, 1)]
    frames = []
    for c in colors:
        stem = c.name[: -len(".color.png")]
        depth = c.with_name(f"{stem}.depth.png")
        if not depth.is_file():
            raise UserError(f"{c.name} has no {depth.name}", seq_dir)
        pose_file = c.with_name(f"{stem}.pose.txt")
        if pose_file.is_file():
            pose = parse_transform(pose_file)
        elif require_poses:
            raise UserError(
                f"{c.name} has no {pose_file.name}; estimate poses with "
                f"'splatdistill data from-rgbd {seq_dir} --out DATASET'",
                seq_dir,
            )
        else:
            pose = None
        frames.append(RGBDFrame(stem.removeprefix("frame-"), c, depth, pose))
    m = re.search(r"(\d+)$", seq_dir.name)
    split = "test" if m and int(m.group(1)) in _test_sequences(seq_dir.parent) else "train"
    return RGBDSequence(
        f"{seq_dir.parent.name}-{seq_dir.name}",
        frames,
        K_NOMINAL.copy(),
        K_NOMINAL.copy(),
        depth_scale=0.001,
        depth_invalid=DEPTH_INVALID,
        split=split,
        root=seq_dir,
    )


def load_sevenscenes(root: str | Path, every: int = 10) -> list[Scene]:
    root = Path(root)
    dirs = sequence_dirs(root)
    if not dirs:
        raise UserError("no 7-Scenes sequences (seq-*/frame-*.color.png) found", root)
    return [sequence_scene(load_sevenscenes_sequence(d, every)) for d in dirs]


register_format(
    "7scenes",
    lambda path: path.is_dir() and is_sevenscenes(path),
    lambda path, split, skip_bad: load_sevenscenes(path),
    order=60,
    looks_for="7-Scenes sequences (seq-*/frame-*.color.png)",
)
