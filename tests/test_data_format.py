"""The splatdistill scene format: round trips, and clear errors (or skips) for broken files and poses."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from splatdistill.cli import main
from splatdistill.data import io, load_dataset
from splatdistill.data.checks.dataset import check_dataset
from splatdistill.data.formats.native import save_scene
from splatdistill.data.validate import DatasetWarning
from splatdistill.errors import UserError


@pytest.fixture()
def copy(rooms, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(rooms, dst)
    return dst


def _edit_scene(path, fn):
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))


def test_map_encodings_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 12.0, (20, 30)).astype(np.float32)
    depth[0, 0] = 0
    io.write_depth(tmp_path / "d.png", depth)
    back = io.read_depth(tmp_path / "d.png")
    assert np.abs(back - depth).max() <= 0.5 / io.DEPTH_SCALE + 1e-6 and back[0, 0] == 0
    n = rng.normal(size=(20, 30, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[1, 1] = 0
    io.write_normals(tmp_path / "n.png", n.astype(np.float32))
    nb = io.read_normals(tmp_path / "n.png")
    ang = np.degrees(np.arccos(np.clip(np.sum(nb * n, -1), -1, 1)))
    assert np.delete(ang.ravel(), 31).max() < 0.6 and np.all(nb[1, 1] == 0)
    sem = rng.integers(-1, 40, (20, 30))
    io.write_ids(tmp_path / "s.png", sem, offset=1)
    assert np.array_equal(io.read_ids(tmp_path / "s.png", offset=1), sem)


def test_save_and_reload_scene_exactly(rooms, tmp_path):
    scene = load_dataset(rooms)[0]
    save_scene(scene, tmp_path / "again")
    again = load_dataset(tmp_path / "again")[0]
    for a, b in zip(scene.views, again.views):
        assert np.array_equal(a.K, b.K) and np.array_equal(a.cam_to_world, b.cam_to_world)
    va, vb = scene.load_view(1), again.load_view(1)
    assert np.array_equal(va.image, vb.image) and np.array_equal(va.depth, vb.depth)
    assert np.array_equal(va.instance, vb.instance) and np.array_equal(va.semantic, vb.semantic)


def test_split_filter(rooms):
    test = load_dataset(rooms, split="test")
    assert len(test) == 1 and test[0].split == "test"


def test_broken_image_named_or_skipped(copy):
    bad = copy / "room_0000" / "rgb" / "0002.png"
    bad.write_bytes(bad.read_bytes()[:300])  # truncated
    with pytest.raises(UserError, match="room_0000/rgb/0002.png"):
        load_dataset(copy)
    with pytest.warns(DatasetWarning, match="room_0000/rgb/0002.png"):
        scenes = load_dataset(copy, skip_bad=True)
    names = [v.name for v in scenes[0].views]
    assert "0002" not in names and len(names) == 4


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda v: v["cam_to_world"][0].__setitem__(0, v["cam_to_world"][0][0] * 1.05), "not orthonormal"),
        (lambda v: v["cam_to_world"][1].__setitem__(2, float("nan")), "NaN"),
        (lambda v: [row.__setitem__(0, -row[0]) for row in v["cam_to_world"][:3]], "determinant -1"),
        (lambda v: v["K"].__setitem__(0, [0.0, 0.0, 0.0]), "not invertible"),
        (lambda v: v.pop("K"), "has no 'K'"),
    ],
)
def test_bad_pose_or_intrinsics_never_silently_used(copy, edit, message):
    sj = copy / "room_0001" / "scene.json"
    _edit_scene(sj, lambda d: edit(d["views"][3]))
    with pytest.raises(UserError, match=message) as err:
        load_dataset(copy)
    assert "room_0001/scene.json" in str(err.value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scenes = load_dataset(copy, skip_bad=True)
    assert any(message in str(w.message) for w in caught)
    s1 = next(s for s in scenes if s.name == "room_0001")
    assert len(s1) == 4 and all(
        np.allclose(v.cam_to_world[:3, :3].T @ v.cam_to_world[:3, :3], np.eye(3)) for v in s1.views
    )


def test_check_reports_every_problem_with_its_file(copy, capsys):
    (copy / "room_0000" / "normals" / "0001.png").unlink()
    Image.fromarray(np.zeros((10, 10), np.uint16)).save(copy / "room_0002" / "depth" / "0003.png")
    _edit_scene(copy / "room_0001" / "scene.json", lambda d: d["views"][0]["cam_to_world"][2].__setitem__(1, 3.0))
    np.save(copy / "room_0002" / "depth" / "0004.npy", np.full((80, 80), np.nan, np.float32))
    _edit_scene(copy / "room_0002" / "scene.json", lambda d: d["views"][4].__setitem__("depth", "depth/0004.npy"))
    report = check_dataset(copy)
    text = "\n".join(map(str, report.problems))
    assert "room_0000/normals/0001.png: file not found" in text
    assert "room_0002/depth/0003.png: depth is 10x10, the image is 80x80" in text
    assert "room_0001/scene.json: view 0000: rotation is not orthonormal" in text
    assert "room_0002/depth/0004.npy: depth contains NaN" in text
    assert len(report.problems) == 4
    assert main(["data", "check", str(copy)]) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 4 and "room_0000/normals/0001.png" in err
    assert main(["data", "check", str(copy), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: ") == 4 and "left out" in captured.out


def test_check_clean_dataset_with_geometry(rooms, capsys):
    assert main(["data", "check", str(rooms), "--geometry", "2"]) == 0
    out = capsys.readouterr().out
    assert "0 problems" in out and "depth reprojection median relative error" in out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "info", str(tmp_path / "empty")]) == 2
    assert "no dataset found" in capsys.readouterr().err
