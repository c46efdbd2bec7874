"""3DGS PLY export/import."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatdistill.errors import UserError
from splatdistill.geometry import Cameras, Gaussians, intrinsics, quat_scale_to_covariance
from splatdistill.render import render_gaussians
from splatdistill.render.ply import SH_C0, features_to_rgb, load_ply, read_ply_vertices, save_ply

HEADER_PROPS = [
    "x",
    "y",
    "z",
    "nx",
    "ny",
    "nz",
    "f_dc_0",
    "f_dc_1",
    "f_dc_2",
    "opacity",
    "scale_0",
    "scale_1",
    "scale_2",
    "rot_0",
    "rot_1",
    "rot_2",
    "rot_3",
]


def _gaussians(n=500, channels=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g)
    s = torch.exp(torch.randn(n, 3, generator=g) - 3)
    means = torch.randn(n, 3, generator=g) + torch.tensor([0.0, 0.0, 4.0])
    return Gaussians(
        means,
        quat_scale_to_covariance(q, s),
        torch.rand(n, generator=g) * 0.98 + 0.01,
        torch.randn(n, channels, generator=g),
    )


def test_round_trip(tmp_path):
    g = _gaussians()
    path = save_ply(tmp_path / "splat.ply", g)
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n") + len(b"end_header\n")].decode()
    lines = header.splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    assert "element vertex 500" in lines
    assert [ln.split()[2] for ln in lines if ln.startswith("property")] == HEADER_PROPS
    assert all(ln.split()[1] == "float" for ln in lines if ln.startswith("property"))
    assert len(raw) == len(header) + 500 * 17 * 4

    cols = read_ply_vertices(path)
    rgb = features_to_rgb(g.features)
    np.testing.assert_allclose(cols["f_dc_1"], (rgb[:, 1].numpy() - 0.5) / SH_C0, rtol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-cols["opacity"])), g.opacities.numpy(), rtol=1e-5)
    q = np.stack([cols[f"rot_{i}"] for i in range(4)], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, rtol=1e-6)

    h = load_ply(path)
    assert h.means.dtype == torch.float32 and len(h) == 500
    torch.testing.assert_close(h.means, g.means)
    scale = g.covariances.abs().amax((-1, -2), keepdim=True)
    torch.testing.assert_close(h.covariances / scale, g.covariances / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(h.opacities, g.opacities, atol=1e-6, rtol=0)
    torch.testing.assert_close(h.features, rgb, atol=1e-6, rtol=0)


def test_round_trip_renders_the_same(tmp_path):
    g = _gaussians(2000, 5, seed=1)
    g = g.with_features(features_to_rgb(g.features))
    h = load_ply(save_ply(tmp_path / "a.ply", g, colors=g.features))
    cam = Cameras(intrinsics(40.0, 40.0, 24.0, 16.0), torch.eye(4), 48, 32)
    a, alpha_a = render_gaussians(g, cam, backend="torch")
    b, alpha_b = render_gaussians(h, cam, backend="torch")
    assert alpha_a.max() > 0.5
    torch.testing.assert_close(b, a, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha_b, alpha_a, atol=1e-4, rtol=0)


def test_features_sidecar_and_explicit_colors(tmp_path):
    g = _gaussians(50, 7)
    colors = torch.rand(50, 3)
    path = save_ply(tmp_path / "f.ply", g, colors=colors, save_features=True)
    assert (tmp_path / "f.ply.features.npy").exists()
    h = load_ply(path)
    torch.testing.assert_close(h.features, g.features)
    cols = read_ply_vertices(path)
    np.testing.assert_allclose(0.5 + SH_C0 * cols["f_dc_2"], colors[:, 2].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="colors"):
        save_ply(tmp_path / "g.ply", g, colors=torch.rand(49, 3))


def test_pca_colours():
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 40, generator=g)
    coef = torch.rand(1000, 3, generator=g) * torch.tensor([10.0, 3.0, 1.0])
    feats = coef @ basis + 5.0
    rgb = features_to_rgb(feats)
    assert rgb.shape == (1000, 3) and rgb.min() >= 0 and rgb.max() <= 1
    # the first colour channel follows the dominant direction of variation
    corr = np.corrcoef(rgb[:, 0].numpy(), coef[:, 0].numpy())[0, 1]
    assert abs(corr) > 0.98
    assert torch.equal(features_to_rgb(feats), rgb)  # deterministic
    assert torch.allclose(features_to_rgb(torch.zeros(4, 0)), torch.full((4, 3), 0.5))
    assert features_to_rgb(torch.randn(10, 2)).shape == (10, 3)


def _write(path, fmt, rows, props, extra=b""):
    header = f"ply\nformat {fmt} 1.0\nelement vertex {len(rows)}\n"
    header += "".join(f"property {t} {n}\n" for n, t in props) + "end_header\n"
    if fmt == "ascii":
        body = "".join(" ".join(repr(float(v)) for v in r) + "\n" for r in rows).encode()
    else:
        endian = "<" if fmt == "binary_little_endian" else ">"
        dtype = np.dtype([(n, endian + {"float": "f4", "double": "f8", "uchar": "u1"}[t]) for n, t in props])
        body = np.array([tuple(r) for r in rows], dtype=dtype).tobytes()
    path.write_bytes(header.encode() + body + extra)


def test_reads_other_layouts(tmp_path):
    props = [
        ("x", "double"),
        ("y", "double"),
        ("z", "double"),
        ("f_dc_0", "float"),
        ("f_dc_1", "float"),
        ("f_dc_2", "float"),
        ("f_rest_0", "float"),
        ("opacity", "float"),
        ("scale_0", "float"),
        ("scale_1", "float"),
        ("scale_2", "float"),
        ("rot_0", "float"),
        ("rot_1", "float"),
        ("rot_2", "float"),
        ("rot_3", "float"),
        ("red", "uchar"),
    ]
    rows = [[1.0, 2.0, 3.0, 0.0, 1.0, -1.0, 9.0, 0.0, np.log(0.1), np.log(0.2), np.log(0.3), 2.0, 0.0, 0.0, 0.0, 200]]
    for fmt in ("binary_big_endian", "ascii", "binary_little_endian"):
        path = tmp_path / f"{fmt}.ply"
        _write(path, fmt, rows, props)
        g = load_ply(path, dtype=torch.float64)
        torch.testing.assert_close(g.means[0], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        torch.testing.assert_close(g.opacities, torch.tensor([0.5], dtype=torch.float64))
        torch.testing.assert_close(
            g.covariances[0], torch.diag(torch.tensor([0.01, 0.04, 0.09], dtype=torch.float64)), rtol=1e-6, atol=1e-9
        )
        torch.testing.assert_close(
            g.features[0], torch.tensor([0.5, 0.5 + SH_C0, 0.5 - SH_C0], dtype=torch.float64), rtol=1e-6, atol=1e-7
        )


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="cannot read"):
        load_ply(tmp_path / "missing.ply")
    (tmp_path / "junk.ply").write_bytes(b"hello")
    with pytest.raises(UserError, match="not a PLY"):
        load_ply(tmp_path / "junk.ply")
    path = save_ply(tmp_path / "t.ply", _gaussians(10, 3))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated"):
        load_ply(path)
    _write(
        tmp_path / "m.ply", "binary_little_endian", [[0.0, 0.0, 0.0]], [("x", "float"), ("y", "float"), ("z", "float")]
    )
    with pytest.raises(UserError, match="missing vertex properties"):
        load_ply(tmp_path / "m.ply")
