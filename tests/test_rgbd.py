"""RGB-D sequences: registration against analytic geometry, the TUM and 7-Scenes layouts on fixtures in
their exact formats, from-rgbd's errors, and the whole path on ViSP's real castel frames."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from _real_data import CASTEL_DEPTH_SCALE, castel
from splatdistill.captures.from_rgbd import Calibration, from_rgbd, read_sequence
from splatdistill.data import detect_format, load_dataset
from splatdistill.data.formats.rgbd import intrinsics_matrix, parse_intrinsics, read_visp_depth, register_depth
from splatdistill.data.formats.sevenscenes import load_sevenscenes
from splatdistill.data.formats.tum import load_tum_sequence
from splatdistill.errors import UserError

# -- registration: two planes seen by two cameras, depth computed analytically --------------------

BOX = (-0.3, 0.3, -0.2, 0.2)  # the near plane's extent in the colour frame (x, y), at z = 1; background z = 2


def _cast(K: np.ndarray, cam_to_color: np.ndarray, w: int, h: int) -> np.ndarray:
    """z-depth in a camera at ``cam_to_color`` of the two-plane scene (float64 ray casting)."""
    u, v = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T  # camera frame, z = 1
    R, t = cam_to_color[:3, :3], cam_to_color[:3, 3]
    d = rays @ R.T  # directions in the colour frame
    depth = np.full((h, w), np.inf)
    for z_plane, bounded in ((1.0, True), (2.0, False)):
        s = (z_plane - t[2]) / d[..., 2]  # ray parameter = z-depth in the camera (its rays have z = 1)
        p = t + s[..., None] * d
        hit = s > 0
        if bounded:
            hit &= (p[..., 0] > BOX[0]) & (p[..., 0] < BOX[1]) & (p[..., 1] > BOX[2]) & (p[..., 1] < BOX[3])
        depth = np.where(hit & (s < depth), s, depth)
    return np.where(np.isfinite(depth), depth, 0.0)


def _rot_y(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_registered_depth_matches_the_colour_cameras_own_depth():
    K_c = intrinsics_matrix(130.0, 130.0, 39.5, 29.5)  # 80 x 60, the longer focal length (as the castel's)
    K_d = intrinsics_matrix(80.0, 81.0, 31.0, 24.5)  # 64 x 48, a wider field than the colour camera
    depth_in_color = np.eye(4)
    depth_in_color[:3, :3] = _rot_y(2.0)
    depth_in_color[:3, 3] = [0.05, -0.01, 0.0]  # the depth camera 5 cm to the right
    d_depth = _cast(K_d, depth_in_color, 64, 48)
    truth = _cast(K_c, np.eye(4), 80, 60)
    reg = register_depth(d_depth.astype(np.float32), K_d, K_c, np.linalg.inv(depth_in_color), 80, 60)

    # Away from the box outline (occlusion shadows and the footprint's width live there) the
    # depth equals the colour camera's, and nearly every pixel is filled.
    near_edge = np.zeros_like(truth, bool)
    jump = np.abs(np.diff(truth, axis=1)) > 0.1
    near_edge[:, :-1] |= jump
    near_edge[:, 1:] |= jump
    jump = np.abs(np.diff(truth, axis=0)) > 0.1
    near_edge[:-1] |= jump
    near_edge[1:] |= jump
    from scipy.ndimage import binary_dilation

    band = binary_dilation(near_edge, iterations=3)
    inside = (truth > 0) & ~band
    inside[:4] = inside[-4:] = False
    inside[:, :4] = inside[:, -4:] = False  # the depth camera sees a slightly different field
    filled = reg[inside] > 0
    assert filled.mean() > 0.99, filled.mean()
    rel = np.abs(reg[inside][filled] - truth[inside][filled]) / truth[inside][filled]
    assert rel.max() < 0.02, rel.max()  # a plane at an angle varies across one pixel's footprint
    assert np.median(rel) < 1e-3
    # The box's outline lands where the colour camera sees it: compare the near-plane masks.
    near_truth, near_reg = (truth > 0) & (truth < 1.5), (reg > 0) & (reg < 1.5)
    assert (near_truth ^ near_reg).sum() <= 2 * (near_truth.sum() ** 0.5) * 2  # within ~1 px of the outline
    # The raw depth, taken as if it were already in the colour camera, is far off the same test.
    naive = np.array(Image.fromarray(d_depth.astype(np.float32)).resize((80, 60), Image.NEAREST))
    assert ((naive > 0) & (naive < 1.5) ^ near_truth).sum() > 3 * (near_truth ^ near_reg).sum()


def test_the_same_camera_needs_no_registration(tmp_path):
    K = intrinsics_matrix(50, 50, 15.5, 11.5)
    d = _cast(K, np.eye(4), 32, 24).astype(np.float32)
    reg = register_depth(d, K, K, np.eye(4), 32, 24)
    np.testing.assert_allclose(reg, d, rtol=1e-6)


# -- calibration and depth files ----------------------------------------------------------------

VISP_XML = """<?xml version="1.0"?>
<conf>
  <camera>
    <px>615.1674804688</px>
    <py>615.1675415039</py>
    <u0>312.1889953613</u0>
    <v0>243.4373779297</v0>
  </camera>
</conf>
"""


def test_intrinsics_from_each_spelling(tmp_path):
    xml = tmp_path / "chateau.xml"
    xml.write_text(VISP_XML)
    K = parse_intrinsics(str(xml))
    np.testing.assert_allclose(K, [[615.1674804688, 0, 312.6889953613], [0, 615.1675415039, 243.9373779297], [0, 0, 1]])
    np.testing.assert_allclose(parse_intrinsics("525,526,319.5,239.5"), [[525, 0, 320], [0, 526, 240], [0, 0, 1]])
    mat = tmp_path / "K.txt"
    mat.write_text("500 0 100\n0 501 80\n0 0 1\n")
    np.testing.assert_allclose(parse_intrinsics(str(mat)), [[500, 0, 100.5], [0, 501, 80.5], [0, 0, 1]])
    bad = tmp_path / "bad.xml"
    bad.write_text("<conf><camera><px>1</px></camera></conf>")
    with pytest.raises(UserError, match="bad.xml: no <camera> with <px>"):
        parse_intrinsics(str(bad))
    with pytest.raises(UserError, match="no such file"):
        parse_intrinsics(str(tmp_path / "missing.xml"))


def test_visp_depth_bin_is_read_by_value_and_a_truncated_one_is_named(tmp_path):
    raw = (np.arange(12, dtype=np.uint16) * 1000).reshape(3, 4)
    f = tmp_path / "depth_image_0000.bin"
    f.write_bytes(np.array([3, 4], "<u4").tobytes() + raw.astype("<u2").tobytes())
    np.testing.assert_array_equal(read_visp_depth(f), raw)
    f.write_bytes(f.read_bytes()[:-2])
    with pytest.raises(
        UserError, match=r"depth_image_0000.bin: depth .bin header says 4x3 \(32 bytes\) but the file has 30"
    ):
        read_visp_depth(f)


# -- TUM ---------------------------------------------------------------------------------------


def _png16(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint16)).save(path)


def _rgb(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 8, 3), value, np.uint8)).save(path)


def make_tum(root, with_gt=True):
    """Three colour frames, four depth frames, a pose stream; headers as the benchmark writes them."""
    root.mkdir(parents=True)
    rgb_t = [1305031102.175304, 1305031102.211214, 1305031102.243211]
    depth_t = [1305031102.160407, 1305031102.194330, 1305031102.226738, 1305031102.262886]
    lines = ["# color images", "# file: 'rgbd_dataset_freiburg1_xyz.bag'", "# timestamp filename"]
    for i, t in enumerate(rgb_t):
        lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        _rgb(root / f"rgb/{t:.6f}.png", 40 * i)
    (root / "rgb.txt").write_text("\n".join(lines) + "\n")
    lines = ["# depth maps", "# file: 'rgbd_dataset_freiburg1_xyz.bag'", "# timestamp filename"]
    for i, t in enumerate(depth_t):
        lines.append(f"{t:.6f} depth/{t:.6f}.png")
        _png16(root / f"depth/{t:.6f}.png", np.full((6, 8), 5000 * (i + 1)))  # i + 1 metres
    (root / "depth.txt").write_text("\n".join(lines) + "\n")
    if with_gt:
        # Two samples around each colour frame: the camera moves along x and turns about z.
        lines = [
            "# ground truth trajectory",
            "# file: 'rgbd_dataset_freiburg1_xyz.bag'",
            "# timestamp tx ty tz qx qy qz qw",
        ]
        for t, x, ang in (
            (1305031102.17, 0.0, 0.0),
            (1305031102.18, 0.1, 20.0),
            (1305031102.21, 0.2, 0.0),
            (1305031102.22, 0.3, 0.0),
            (1305031102.24, 0.4, 0.0),
            (1305031102.25, 0.5, 0.0),
        ):
            h = np.radians(ang) / 2
            lines.append(f"{t:.4f} {x:.4f} 1.0000 2.0000 0.0000 0.0000 {np.sin(h):.6f} {np.cos(h):.6f}")
        (root / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    return root, rgb_t


def test_tum_sequence_associates_depth_and_interpolates_poses(tmp_path):
    root, rgb_t = make_tum(tmp_path / "rgbd_dataset_freiburg1_xyz")
    assert detect_format(root) == "tum"
    seq = load_tum_sequence(root)
    assert len(seq.frames) == 3
    # nearest depth in time: 0.175 -> 0.160 (15 ms) vs 0.194 (19 ms); 0.211 -> 0.194 (17) vs 0.227 (16)
    assert [f.depth.name for f in seq.frames] == [
        "1305031102.160407.png",
        "1305031102.226738.png",
        "1305031102.226738.png",
    ]
    np.testing.assert_allclose(seq.K_color, [[517.3, 0, 319.1], [0, 516.5, 255.8], [0, 0, 1]])  # freiburg1, +0.5
    # frame 0 at .175304 lies between .17 (x 0, 0 deg) and .18 (x 0.1, 20 deg): w = 0.5304
    w = (1305031102.175304 - 1305031102.17) / 0.01
    c2w = seq.frames[0].cam_to_world
    np.testing.assert_allclose(c2w[:3, 3], [0.1 * w, 1.0, 2.0], atol=1e-6)
    a = np.radians(20.0 * w)
    np.testing.assert_allclose(
        c2w[:3, :3], [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], atol=1e-6
    )
    scene = load_dataset(root)[0]
    v = scene.load_view(1)
    np.testing.assert_allclose(v.depth, 3.0, rtol=1e-6)  # 15000 / 5000
    assert v.image.shape == (6, 8, 3)


def test_tum_errors_name_the_file(tmp_path):
    root, _ = make_tum(tmp_path / "seq", with_gt=False)
    with pytest.raises(UserError, match="no groundtruth.txt; estimate poses with 'splatdistill data from-rgbd"):
        load_dataset(root)
    (root / "rgb.txt").write_text("1305031102.175304 rgb/a.png extra\n")
    with pytest.raises(UserError, match=r"rgb.txt: line 1: expected 2 columns, found 3"):
        load_tum_sequence(root, require_poses=False)
    root2, _ = make_tum(tmp_path / "seq2")
    text = (root2 / "groundtruth.txt").read_text().replace("0.000000 1.000000", "0.500000 1.000000", 1)
    (root2 / "groundtruth.txt").write_text(text)
    with pytest.raises(
        UserError, match="groundtruth.txt: the quaternion at timestamp 1305031102.170000 is not of unit length"
    ):
        load_tum_sequence(root2)
    root3, rgb_t = make_tum(tmp_path / "seq3")
    (root3 / f"rgb/{rgb_t[0]:.6f}.png").unlink()
    with pytest.raises(UserError, match=r"1305031102.175304.png: file listed in rgb.txt/depth.txt not found"):
        load_tum_sequence(root3)


# -- 7-Scenes ----------------------------------------------------------------------------------


def make_sevenscenes(root, frames=3, pose=True):
    seq = root / "chess" / "seq-01"
    seq.mkdir(parents=True)
    (root / "chess" / "TestSplit.txt").write_text("sequence1\n")
    (root / "chess" / "TrainSplit.txt").write_text("sequence2\n")
    for i in range(frames):
        Image.fromarray(np.full((48, 64, 3), 30 * i, np.uint8)).save(seq / f"frame-{i:06d}.color.png")
        d = np.full((48, 64), 1500 + i)
        d[0, 0] = 65535  # the dataset's "no depth"
        _png16(seq / f"frame-{i:06d}.depth.png", d)
        if pose:
            T = np.eye(4)
            T[:3, 3] = [0.1 * i, 0, 0]
            np.savetxt(seq / f"frame-{i:06d}.pose.txt", T, fmt="%.7e", delimiter="\t")
    return seq


def test_sevenscenes_reads_depth_poses_and_the_test_split(tmp_path):
    seq = make_sevenscenes(tmp_path / "7scenes")
    assert detect_format(tmp_path / "7scenes") == "7scenes"
    scenes = load_sevenscenes(tmp_path / "7scenes", every=1)
    assert [s.name for s in scenes] == ["chess-seq-01"] and scenes[0].split == "test"
    v = scenes[0].load_view(2)
    assert v.depth[0, 0] == 0 and np.isclose(v.depth[1, 1], 1.502)
    np.testing.assert_allclose(v.cam_to_world[:3, 3], [0.2, 0, 0])
    np.testing.assert_allclose(v.K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert len(load_sevenscenes(seq, every=2)[0]) == 2
    (seq / "frame-000001.pose.txt").unlink()
    with pytest.raises(UserError, match="frame-000001.color.png has no frame-000001.pose.txt; estimate poses"):
        load_sevenscenes(seq, every=1)
    assert len(read_sequence(seq, Calibration()).frames) == 3  # from-rgbd reads it without the poses
    (seq.parent / "seq-02").mkdir()
    Image.open(seq / "frame-000000.color.png").save(seq.parent / "seq-02" / "frame-000000.color.png")
    with pytest.raises(UserError, match="holds 2 7-Scenes sequences; run from-rgbd on one of them"):
        read_sequence(seq.parent, Calibration())


# -- from-rgbd: input errors ---------------------------------------------------------------------


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "splatdistill", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_from_rgbd_input_errors_are_one_line(tmp_path):
    plain = tmp_path / "frames"
    plain.mkdir()
    for i in range(2):
        _rgb(plain / f"image_{i:04d}.png", 10)
        _png16(plain / f"depth_{i:04d}.png", np.full((6, 8), 1000))
    r = _cli("data", "from-rgbd", plain, "--out", tmp_path / "o")
    assert r.returncode == 2 and "frames: a plain folder of frames needs --color-intrinsics" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    _rgb(plain / "image_0002.png", 10)
    with pytest.raises(
        UserError, match="1 frame numbers have only a colour image or only a depth file, e.g. image_0002.png"
    ):
        read_sequence(plain, Calibration("8,8,3.5,2.5"))
    (plain / "image_0002.png").unlink()
    with pytest.raises(UserError, match="--depth-scale must be a number > 0"):
        read_sequence(plain, Calibration("8,8,3.5,2.5", depth_scale=-1.0))
    with pytest.raises(UserError, match="at least 2 frames, found 1"):
        read_sequence(plain, Calibration("8,8,3.5,2.5"), every=2)
    _png16(plain / "depth_0001.png", np.zeros((6, 8)))
    with pytest.raises(UserError, match="depth_0001.png: depth has no valid pixel in the colour camera"):
        from_rgbd(read_sequence(plain, Calibration("8,8,3.5,2.5")), tmp_path / "o", progress=False)
    r = _cli("data", "from-rgbd", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert r.returncode == 2 and "nowhere: no such folder (expected an RGB-D sequence)" in r.stderr


# -- the real castel frames ----------------------------------------------------------------------


@pytest.mark.slow
def test_castel_poses_from_odometry_make_depth_agree_across_frames(tmp_path):
    pytest.importorskip("open3d", reason="from-rgbd needs Open3D (the [captures] extra)")
    c = castel()
    r = _cli(
        "data",
        "from-rgbd",
        c / "castel",
        "--out",
        tmp_path / "ds",
        "--color-intrinsics",
        c / "chateau.xml",
        "--depth-intrinsics",
        c / "chateau_depth.xml",
        "--color-to-depth",
        c / "depth_M_color.txt",
        "--depth-scale",
        CASTEL_DEPTH_SCALE,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp_path / "ds" / "castel" / "from_rgbd.json").read_text())
    assert summary["frames"] == 30 and summary["depth_registered_to_color"] and not summary["failed_alignments"]
    for k in ("10", "20"):
        chk = summary["self_check"][k]
        # Under 5 mm, and under what leaving the camera still gives. The camera moves 3 mm by frame 10
        # and 4 cm by frame 20, so at 20 no motion estimate at all would be 4x off (the test fails).
        assert chk["median_abs_mm"] < 5.0, chk
        assert chk["median_abs_mm"] < (0.5 if k == "20" else 0.9) * chk["zero_motion_median_abs_mm"], chk
        assert chk["visible_fraction"] > 0.5, chk
    assert (tmp_path / "ds" / "castel" / "registration.png").stat().st_size > 10_000
    scenes = load_dataset(tmp_path / "ds")
    assert len(scenes[0]) == 30 and scenes[0].load_view(5).depth.max() < 1.0  # a table-top scene, metres
    r = _cli("data", "check", tmp_path / "ds")
    assert r.returncode == 0 and "0 problems" in r.stdout, r.stdout + r.stderr


def test_a_tum_sequence_without_ground_truth_is_read_for_from_rgbd(tmp_path):
    root, rgb_t = make_tum(tmp_path / "rgbd_dataset_freiburg3_office", with_gt=False)
    seq = read_sequence(root, Calibration())
    assert len(seq.frames) == 3 and all(f.cam_to_world is None for f in seq.frames)
    assert seq.registered and np.isclose(seq.depth_scale, 1 / 5000)
    np.testing.assert_allclose(seq.K_color[0, 0], 535.4)  # freiburg3 from the folder name
    seq = read_sequence(root, Calibration(color_intrinsics="500,500,3.5,2.5"), every=2)
    assert len(seq.frames) == 2 and seq.K_color[0, 2] == 4.0


def test_load_splits_gives_a_single_capture_no_held_out_scenes_and_refuses_no_train(tmp_path):
    from splatdistill.data import load_splits

    seq = make_sevenscenes(tmp_path / "7s")  # its TestSplit.txt puts sequence 1 in test
    root, by = load_splits(seq, ("test", "val"))
    assert [s.name for s in by["test"]] == ["chess-seq-01"] and by["val"] == []
    with pytest.raises(UserError, match=r"no scenes in split train \(the dataset's splits: test\)"):
        load_splits(seq, ("train", "val"))
