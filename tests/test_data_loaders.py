"""Loaders for user data (nerfstudio, ScanNet++/FiT3D, COLMAP) round-trip rooms scenes; Middlebury is metric."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from splatdistill.data import detect_format, load_dataset
from splatdistill.data.checks.geometry import reprojection_error
from splatdistill.data.formats.colmap import load_colmap, write_colmap
from splatdistill.data.formats.middlebury import load_middlebury
from splatdistill.data.formats.nerfstudio import GL_TO_CV, load_nerfstudio, write_nerfstudio
from splatdistill.data.formats.scannetpp import write_scannetpp
from splatdistill.errors import UserError


def _same_cameras(a, b, tol=1e-9):
    assert [v.name for v in a.views] == [v.name for v in b.views]
    for va, vb in zip(a.views, b.views):
        assert (va.width, va.height) == (vb.width, vb.height)
        np.testing.assert_allclose(vb.K, va.K, rtol=0, atol=tol)
        np.testing.assert_allclose(vb.cam_to_world, va.cam_to_world, rtol=0, atol=tol)


def test_nerfstudio_round_trip(scenes, tmp_path):
    write_nerfstudio(scenes[0], tmp_path / "ns")
    assert detect_format(tmp_path / "ns") == "nerfstudio"
    back = load_dataset(tmp_path / "ns")[0]
    _same_cameras(scenes[0], back, tol=0)  # exact: the axis flip is a sign change
    v, w = scenes[0].load_view(2), back.load_view(2)
    assert np.array_equal(v.image, w.image)
    assert np.abs(v.depth - w.depth).max() <= 0.0005 + 1e-6  # millimetre depth PNGs
    doc = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    gl = np.array(doc["frames"][0]["transform_matrix"])
    # OpenGL camera: looks down its -z, so its +z axis is minus our viewing direction.
    np.testing.assert_allclose(gl[:3, 2], -scenes[0].views[0].cam_to_world[:3, 2])
    np.testing.assert_array_equal(gl @ GL_TO_CV, scenes[0].views[0].cam_to_world)


def test_nerfstudio_bad_pose_named(scenes, tmp_path):
    write_nerfstudio(scenes[0], tmp_path / "ns")
    tf = tmp_path / "ns" / "transforms.json"
    doc = json.loads(tf.read_text())
    doc["frames"][2]["transform_matrix"][0][1] += 0.2
    tf.write_text(json.dumps(doc))
    with pytest.raises(UserError, match=r"transforms.json: frame images/0002.png: rotation is not orthonormal"):
        load_nerfstudio(tmp_path / "ns")
    with pytest.warns(UserWarning, match="0002.png"):
        assert len(load_nerfstudio(tmp_path / "ns", skip_bad=True)) == len(scenes[0]) - 1


def test_nerfstudio_refuses_distortion_and_skips_is_bad(scenes, tmp_path):
    write_nerfstudio(scenes[0], tmp_path / "ns")
    tf = tmp_path / "ns" / "transforms.json"
    doc = json.loads(tf.read_text())
    doc["frames"][1]["is_bad"] = True
    tf.write_text(json.dumps(doc))
    assert len(load_nerfstudio(tmp_path / "ns")) == len(scenes[0]) - 1
    doc["k1"] = 0.1
    tf.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="undistort"):
        load_nerfstudio(tmp_path / "ns")


def test_scannetpp_fit3d_layout_round_trip(scenes, tmp_path):
    root = tmp_path / "scannetpp"
    write_scannetpp(scenes, root)
    assert (root / "scenes" / scenes[0].name / "images" / "0000.JPG").is_file()
    assert (root / "scenes" / scenes[0].name / "instance_segmentation" / "0000.png").is_file()
    assert detect_format(root) == "scannetpp"
    back = load_dataset(root)
    assert [s.name for s in back] == [s.name for s in scenes]
    by_name = {s.name: s for s in back}
    for s in scenes:
        _same_cameras(s, by_name[s.name], tol=0)
        expect = s.split if s.split in ("train", "val") else "val"
        assert by_name[s.name].split == expect
    v, w = scenes[0].load_view(1), by_name[scenes[0].name].load_view(1)
    assert np.array_equal(v.instance, w.instance)
    assert np.abs(v.image - w.image).mean() < 0.02  # JPEG
    # One scene folder alone loads too.
    assert len(load_dataset(root / "scenes" / scenes[1].name)[0]) == len(scenes[1])


@pytest.mark.parametrize("binary", [True, False])
def test_colmap_round_trip(scenes, tmp_path, binary):
    out = write_colmap(scenes[1], tmp_path / "colmap", binary=binary)
    assert detect_format(out) == "colmap"
    back = load_colmap(out)
    _same_cameras(scenes[1], back, tol=1e-9)
    assert np.array_equal(back.load_view(0).image, scenes[1].load_view(0).image)


def test_colmap_missing_image_is_named(scenes, tmp_path):
    out = write_colmap(scenes[1], tmp_path / "colmap")
    (out / "images" / "0003.png").unlink()
    with pytest.raises(UserError, match="images/0003.png: file not found"):
        load_colmap(out)
    with pytest.warns(UserWarning, match="0003.png"):
        assert len(load_colmap(out, skip_bad=True)) == len(scenes[1]) - 1


def test_middlebury_pair_is_metric_and_consistent():
    scene = load_middlebury(width=320)
    left, right = scene.load_view(0), scene.load_view(1)
    assert left.image.shape == (216, 320, 3) and scene.split == "test"
    assert np.allclose(right.cam_to_world[:3, 3], [0.193001, 0, 0]) and np.allclose(
        right.cam_to_world[:3, :3], np.eye(3)
    )
    d = left.depth[left.depth > 0]
    assert (left.depth > 0).mean() > 0.85 and d.min() > 2.0 and d.max() < 5.2  # metres
    assert reprojection_error(left, right).median_rel_error < 0.01
    # The GT geometry carries left pixels onto the same colours in the right image (and a wrong
    # baseline sign does not).
    from splatdistill.geometry.warp import warp_pixels_np

    def photo_err(dst_pose):
        ok = left.depth > 0
        rows, cols = np.nonzero(ok)
        uv, _ = warp_pixels_np(
            np.stack([cols + 0.5, rows + 0.5], 1), left.depth[ok], left.K, left.cam_to_world, right.K, dst_pose
        )
        c, r = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        inside = (c >= 0) & (c < right.width) & (r >= 0) & (r < right.height)
        return np.abs(left.image[ok][inside] - right.image[r[inside], c[inside]]).mean()

    flipped = right.cam_to_world.copy()
    flipped[0, 3] *= -1
    good = photo_err(right.cam_to_world)
    assert good < 0.06 and photo_err(flipped) > 2 * good


def test_scannetpp_official_mask_names_are_found_and_every_fallback_is_said_once(scenes, tmp_path):
    """ScanNet++'s official instance masks are named after the whole image file (DSC00001.JPG.png); a view
    that still falls back to superpixels is announced once per reason, with the reason."""
    import warnings

    from splatdistill.data import io as dio
    from splatdistill.data.masks import MaskFallbackWarning, _consecutive, reset_fallback_notes, segments_for_view
    from splatdistill.data.views import Views

    root = tmp_path / "scannetpp"
    write_scannetpp(scenes[:2], root)
    for scene in scenes[:2]:  # rename to the official layout: DSC0000k.JPG and DSC0000k.JPG.png
        sd = root / "scenes" / scene.name
        doc = json.loads((sd / "transforms_train.json").read_text())
        for fr in doc["frames"]:
            old = Path(fr["file_path"])
            new = f"DSC{int(old.stem):05d}.JPG"
            (sd / "images" / old.name).rename(sd / "images" / new)
            (sd / "instance_segmentation" / f"{old.stem}.png").rename(sd / "instance_segmentation" / f"{new}.png")
            fr["file_path"] = new
        (sd / "transforms_train.json").write_text(json.dumps(doc))
    s0 = root / "scenes" / scenes[0].name / "instance_segmentation"
    (s0 / "DSC00002.JPG.png").unlink()  # no mask for this image
    (s0 / "DSC00003.JPG.png").write_bytes(b"not a png")  # unreadable mask
    shutil.rmtree(root / "scenes" / scenes[1].name / "instance_segmentation")  # no masks folder

    back = {s.name: s for s in load_dataset(root)}
    a, b = back[scenes[0].name], back[scenes[1].name]
    official = a.load_view(1)
    assert official.name == "DSC00001" and np.array_equal(official.instance, scenes[0].load_view(1).instance)
    assert np.array_equal(dio.read_ids(s0 / "DSC00001.JPG.png"), official.instance)
    reset_fallback_notes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):  # every view of both scenes, twice: each reason is said once
            for scene in (a, b):
                views = [scene.load_view(i) for i in range(len(scene))]
                Views.from_view_data(views, list(range(len(views))), "auto", size=32, scene=scene.name)
    said = [str(w.message) for w in caught if issubclass(w.category, MaskFallbackWarning)]
    assert len(said) == 3, said
    assert "no mask for this image" in said[0] and "DSC00002.JPG.png" in said[0] and "view DSC00002" in said[0]
    assert "unreadable mask" in said[1] and "DSC00003.JPG.png" in said[1]
    assert "no masks folder" in said[2] and "instance_segmentation" in said[2]
    assert all("using SLIC superpixels instead" in m for m in said)
    # views with their official mask use it, not superpixels
    assert np.array_equal(segments_for_view(official, "auto"), _consecutive(official.instance))
    with pytest.raises(UserError, match="has no instance map \\(unreadable mask: .*DSC00003.JPG.png"):
        segments_for_view(a.load_view(3), "instance")
