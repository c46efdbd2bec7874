"""The embedded rooms dataset: build, cache, splits, layout validity and geometric ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _data_helpers import TINY
from splatdistill.data.checks.geometry import (
    boundary_contrast,
    label_transfer_agreement,
    normal_agreement,
    reprojection_error,
)
from splatdistill.data.rooms.build import RoomsParams, build_rooms, split_of
from splatdistill.data.rooms.camera_paths import PathLimits, _eye_clear
from splatdistill.data.rooms.layout import CLASS_NAMES, compose_room, placements_intersect
from splatdistill.data.scene import ViewData
from splatdistill.geometry.cameras import rotation_angle_deg


def _rot(axis: np.ndarray, deg: float) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.from_rotvec(np.radians(deg) * axis / np.linalg.norm(axis)).as_matrix()


def test_build_layout_and_splits(rooms, scenes):
    manifest = json.loads((rooms / "dataset.json").read_text())
    assert manifest["complete"] and manifest["params"]["scenes"] == TINY["scenes"]
    assert len(scenes) == TINY["scenes"]
    assert {s.split for s in scenes} == {"train", "val", "test"}  # no scene shared between splits
    assert (rooms / "contact_sheet.png").stat().st_size > 1000
    for s in scenes:
        assert len(s) == TINY["views"] and s.class_names == CLASS_NAMES
        v = s.load_view(0)
        n = TINY["size"]
        assert v.image.shape == (n, n, 3) and v.image.dtype == np.float32
        assert v.depth.shape == (n, n) and (v.depth > 0).all()  # closed room: every ray hits
        assert v.normals.shape == (n, n, 3)
        np.testing.assert_allclose(np.linalg.norm(v.normals, axis=-1), 1, atol=0.01)
        assert v.semantic.min() >= 0 and v.semantic.max() < len(CLASS_NAMES)
        assert (v.instance > 0).all()
        # An instance belongs to one semantic class.
        for iid in np.unique(v.instance):
            assert len(np.unique(v.semantic[v.instance == iid])) == 1
        assert v.image.std() > 0.05  # not a flat image


def test_default_splits_have_24_train_and_8_held_out():
    p = RoomsParams()
    splits = [split_of(i, p.scenes, p.seed) for i in range(p.scenes)]
    assert splits.count("train") >= 24 and splits.count("val") + splits.count("test") >= 8
    assert p.views >= 12 and p.size == 256


def test_neighbouring_views_10_to_25_degrees_and_cameras_clear(scenes, rooms):
    for s in scenes:
        steps = [rotation_angle_deg(s.views[i - 1].cam_to_world, s.views[i].cam_to_world) for i in range(1, len(s))]
        assert all(10 <= a <= 25 for a in steps), steps
        meta = json.loads((rooms / s.name / "scene.json").read_text())["meta"]
        spec = compose_room(meta["seed"])
        for v in s.views:
            assert _eye_clear(v.cam_to_world[:3, 3], spec, PathLimits())


@pytest.mark.parametrize("seed", range(12))
def test_furniture_never_interpenetrates(seed):
    spec = compose_room(seed)
    assert 4 <= len(spec.placements) <= 10
    ps = spec.placements
    for i in range(len(ps)):
        c = ps[i].corners()
        assert np.all(np.abs(c[:, 0]) <= spec.width / 2) and np.all(np.abs(c[:, 1]) <= spec.depth / 2)
        for j in range(i + 1, len(ps)):
            assert not placements_intersect(ps[i], ps[j], margin=0.0)


@pytest.mark.parametrize("wall", range(4))
def test_wall_furniture_faces_into_the_room(wall):
    from splatdistill.data.rooms.layout import _front_dir, _wall_pose

    x, y, yaw = _wall_pose(wall, 0.3, 0.25, 5.0, 4.0)
    inward = -np.array([x, y]) / np.linalg.norm([x, y])
    assert _front_dir(yaw) @ inward > 0.9


def test_same_seed_same_room():
    a, b = compose_room(5), compose_room(5)
    assert [(p.key, p.x, p.y, p.yaw) for p in a.placements] == [(p.key, p.x, p.y, p.yaw) for p in b.placements]


def test_cache_hit_and_resume(rooms, tmp_path, monkeypatch):
    import splatdistill.data.rooms.build as build

    with monkeypatch.context() as m:  # complete folder: nothing to do (no scene is rendered again)
        m.setattr(build, "build_scene", lambda *a, **k: pytest.fail("rebuilt a scene of a complete folder"))
        build_rooms(rooms, RoomsParams(**TINY), workers=1, progress=False)
    # A copy with one scene removed resumes that scene only, reproducing it bit for bit.
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(rooms, copy)
    manifest = json.loads((copy / "dataset.json").read_text())
    manifest["complete"] = False
    (copy / "dataset.json").write_text(json.dumps(manifest))
    (copy / "room_0001" / "scene.json").unlink()
    before = (copy / "room_0000" / "rgb" / "0000.png").stat().st_mtime_ns
    build_rooms(copy, RoomsParams(**TINY), workers=1, progress=False)
    assert (copy / "room_0000" / "rgb" / "0000.png").stat().st_mtime_ns == before
    for name in ("scene.json", "rgb/0002.png", "depth/0002.png", "semantic/0002.png"):
        assert (copy / "room_0001" / name).read_bytes() == (rooms / "room_0001" / name).read_bytes(), name


def _pairs(scenes):
    for s in scenes:
        for i in range(len(s) - 1):
            yield s.load_view(i), s.load_view(i + 1)


def test_depth_reprojects_consistently(scenes):
    meds = []
    for a, b in _pairs(scenes):
        r = reprojection_error(a, b)
        assert r.visible_fraction > 0.3
        meds.append(r.median_rel_error)
    assert max(meds) <= 0.01, meds


def test_reprojection_check_fails_on_a_perturbed_pose(scenes):
    a, b = next(_pairs(scenes))
    bad = ViewData(b.image, b.K, b.cam_to_world.copy(), b.depth)
    bad.cam_to_world[:3, :3] = bad.cam_to_world[:3, :3] @ _rot(np.array([0.3, 1.0, 0.1]), 3.0)
    assert reprojection_error(a, bad).median_rel_error > 0.01
    shifted = ViewData(b.image, b.K, b.cam_to_world.copy(), b.depth)
    shifted.cam_to_world[:3, 3] += np.array([0.1, 0.0, 0.05])
    assert reprojection_error(a, shifted).median_rel_error > 0.01


def test_normals_agree_with_depth_on_planes(scenes):
    for s in scenes:
        v = s.load_view(0)
        med, n = normal_agreement(v)
        assert n > 200 and med <= 5.0, (med, n)
    tilted = ViewData(
        v.image, v.K, v.cam_to_world, v.depth, v.normals @ _rot(np.array([1.0, 0.0, 0.0]), 10).T, v.instance
    )
    assert normal_agreement(tilted)[0] > 5.0


def test_labels_follow_geometry_and_image(scenes):
    for a, b in _pairs(scenes):
        agree, n = label_transfer_agreement(a, b)
        assert n > 100 and agree >= 0.95
    v = scenes[0].load_view(0)
    good = boundary_contrast(v.image, v.instance)
    assert good > 1.5
    assert boundary_contrast(v.image, np.roll(v.instance, 4, axis=1)) < good


def test_cli_build_rooms_then_up_to_date(tmp_path, capsys, monkeypatch):
    from splatdistill.cli import main
    from splatdistill.data import ensure_rooms

    out = tmp_path / "r"
    args = [
        "data",
        "build-rooms",
        "--out",
        str(out),
        "--scenes",
        "2",
        "--views",
        "3",
        "--size",
        "40",
        "--seed",
        "9",
        "--workers",
        "1",
    ]
    assert main(args) == 0
    assert "built 2 scenes x 3 views" in capsys.readouterr().out
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(args[:-4] + ["--seed", "10"]) == 2  # same folder, other parameters: refused
    assert "other parameters" in capsys.readouterr().err
    monkeypatch.setenv("SPLATDISTILL_CACHE", str(tmp_path / "cache"))
    p = ensure_rooms(scenes=2, views=3, size=40, seed=9, workers=1, progress=False)
    assert p.parent == tmp_path / "cache" / "data" and (p / "dataset.json").is_file()
    assert (p / "room_0000" / "scene.json").read_bytes() == (out / "room_0000" / "scene.json").read_bytes()
