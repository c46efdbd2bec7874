"""Real captures for the tests, fetched from the package registries at test time and cached.

None is committed: ViSP's images are GPL-2 (Debian package ``visp-images-data``), the openMVG
Maupertuis photos (BSD-3) ship inside the ``kapture`` source distribution, the OAK-D pairs (CC BY 4.0)
inside the ``stereodemo`` wheel, and Middlebury's Motorcycle pair inside scikit-image (Middlebury's
terms: research use, cite the paper). A test that needs one is skipped, with the reason, when the
registry or the tool to fetch it is unreachable.

- ``castel()``: ``ViSP-images/mbt-depth/castel/``: 30 SR300 frames (8-bit gray PGM, raw depth
  ``.bin``), colour/depth intrinsics ``chateau.xml``/``chateau_depth.xml``, ``depth_M_color.txt``.
- ``motorcycle(dest)``: Middlebury 2014 Motorcycle (scikit-image) written as a two-view dataset with
  metric depth (``splatdistill.data.formats.middlebury``).
- ``oakd()``: ``stereodemo/datasets/oak-d/``: 12 rectified gray stereo pairs 640x480 (OAK-D, 7.5 cm
  baseline, ``stereodemo_calibration.json``), no ground truth; ``oakd_dataset(dest)`` writes them as
  two-view scenes.
- ``maupertuis()``: ``samples/maupertuis_openMVG/``: 4 photos 1600x1200 and openMVG's global
  reconstruction (``ChateauMaupertuisTest/reconstruction_global/sfm_data.json``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

CACHE = Path(os.environ.get("SPLATDISTILL_TEST_DATA", Path.home() / ".cache" / "splatdistill-test-data"))
CASTEL_DEPTH_SCALE = 0.000124986647  # metres per raw unit of the SR300 depth in this set (ViSP's tutorial)
VISP_PACKAGE = "visp-images-data"
KAPTURE = "kapture==1.1.12"
STEREODEMO = "stereodemo==0.7.0"


def _run(cmd: list[str], cwd: Path, timeout: int = 600) -> None:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot fetch test data with {cmd[0]}: {exc}")
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        pytest.skip(f"cannot fetch test data ({' '.join(cmd[:3])} ...): {tail[0][:200]}")


def _install(staged: Path, dest: Path) -> None:
    """Copy a fetched folder into the cache through a partial folder, so an interrupted fetch leaves no half set."""
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staged, partial)
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)


def castel() -> Path:
    """The castel folder (cached); skips the test when the Debian package cannot be fetched."""
    dest = CACHE / "visp-castel"
    if (dest / "castel" / "depth_image_0029.bin").is_file():
        return dest
    for tool in ("apt-get", "dpkg-deb", "tar"):
        if shutil.which(tool) is None:
            pytest.skip(f"the ViSP castel frames come as a Debian package; {tool} is not available here")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run(["apt-get", "download", VISP_PACKAGE], cwd=t)
        deb = next(t.glob("*.deb"), None)
        if deb is None:
            pytest.skip(f"apt-get download {VISP_PACKAGE} wrote no package")
        member = "./usr/share/visp-images-data/ViSP-images/mbt-depth/castel"
        fs = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(t), member], stdin=fs.stdout, check=True)
        fs.wait()
        _install(t / member, dest)
    return dest


def maupertuis() -> Path:
    """The maupertuis_openMVG folder (cached); skips when the source distribution cannot be fetched."""
    dest = CACHE / "maupertuis_openMVG"
    if (dest / "images" / "MaupertuisTest_04.jpg").is_file():
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                "-q",
                KAPTURE,
                "-d",
                str(t),
            ],
            cwd=t,
        )
        sdist = next(t.glob("kapture-*.tar.gz"), None)
        if sdist is None:
            pytest.skip(f"pip download {KAPTURE} wrote no source distribution")
        prefix = f"{sdist.name.removesuffix('.tar.gz')}/samples/maupertuis_openMVG/"
        with tarfile.open(sdist) as tar:
            members = [
                m
                for m in tar.getmembers()
                if m.name.startswith(prefix)
                and ("/images/" in m.name or m.name.endswith("reconstruction_global/sfm_data.json"))
            ]
            tar.extractall(t, members=members, filter="data")
        _install(t / prefix, dest)
    return dest


def motorcycle(dest: Path, width: int | None = None, split: str = "test") -> Path:
    """Middlebury's Motorcycle pair as a native two-view dataset at ``dest`` (skips without scikit-image's copy)."""
    pytest.importorskip("skimage", reason="the Motorcycle pair ships in scikit-image")
    from splatdistill.data.formats.middlebury import load_middlebury
    from splatdistill.data.formats.native import save_scene

    try:
        scene = load_middlebury(width)
    except (OSError, ValueError) as exc:  # an install without its data files
        pytest.skip(f"scikit-image's Motorcycle pair is not readable here: {exc}")
    scene.split = split
    save_scene(scene, dest / "motorcycle")
    return dest


def oakd() -> Path:
    """The OAK-D pairs folder of the stereodemo wheel (cached); skips when the wheel cannot be fetched."""
    dest = CACHE / "oak-d"
    if (dest / "stereodemo_calibration.json").is_file():
        return dest
    import zipfile

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                STEREODEMO,
                "-d",
                str(t),
            ],
            cwd=t,
        )
        wheel = next(t.glob("stereodemo-*.whl"), None)
        if wheel is None:
            pytest.skip(f"pip download {STEREODEMO} wrote no wheel")
        with zipfile.ZipFile(wheel) as z:
            members = [m for m in z.namelist() if m.startswith("stereodemo/datasets/oak-d/")]
            z.extractall(t, members=members)
        _install(t / "stereodemo" / "datasets" / "oak-d", dest)
    return dest


def oakd_dataset(dest: Path, names: list[str] | None = None) -> Path:
    """The OAK-D pairs as native two-view scenes (no depth): the left camera at the origin, the right one
    ``baseline_meters`` along its x axis (rectified pairs)."""
    import json

    from PIL import Image

    from splatdistill.data.formats.native import write_scene

    src = oakd()
    cal = json.loads((src / "stereodemo_calibration.json").read_text())
    pairs = sorted(p.name.removesuffix("_left.png") for p in src.glob("*_left.png"))
    for name in names or pairs:
        scene_dir = dest / name
        (scene_dir / "rgb").mkdir(parents=True, exist_ok=True)
        views = []
        for side, cx in (("left", cal["cx0"]), ("right", cal["cx1"])):
            rgb = Image.open(src / f"{name}_{side}.png").convert("RGB")
            rgb.save(scene_dir / "rgb" / f"{side}.png")
            c2w = np.eye(4)
            c2w[0, 3] = cal["baseline_meters"] if side == "right" else 0.0
            K = [[cal["fx"], 0.0, cx + 0.5], [0.0, cal["fy"], cal["cy"] + 0.5], [0.0, 0.0, 1.0]]
            views.append(
                {
                    "name": side,
                    "image": f"rgb/{side}.png",
                    "K": K,
                    "cam_to_world": c2w.tolist(),
                    "width": rgb.width,
                    "height": rgb.height,
                }
            )
        write_scene(scene_dir, name, "train", [], views)
    return dest


def openmvg_rotations(sfm_data: Path) -> dict[str, np.ndarray]:
    """World-to-camera rotations by image stem from an openMVG ``sfm_data.json`` (x_cam = R (X - C))."""
    import json

    doc = json.loads(sfm_data.read_text())
    rot = {e["key"]: np.array(e["value"]["rotation"], dtype=np.float64) for e in doc["extrinsics"]}
    out = {}
    for v in doc["views"]:
        d = v["value"]["ptr_wrapper"]["data"]
        if d["id_pose"] in rot:
            out[Path(d["filename"]).stem] = rot[d["id_pose"]]
    return out


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))
