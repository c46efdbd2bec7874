"""Standard 3DGS PLY files (the INRIA layout every splat viewer reads).

Writing: binary little endian, one vertex per Gaussian with ``x y z nx ny nz f_dc_0..2 opacity
scale_0..2 rot_0..3`` (no ``f_rest``: SH degree 0), opacity as a logit, scales as logs, rotation as a
unit wxyz quaternion from the covariance's eigendecomposition, and colour from a PCA of the features
(first three principal components, each mapped to [0, 1]) stored as the SH DC term
``f_dc = (rgb - 0.5) / C0`` with ``C0 = 0.28209479``. Feature vectors themselves do not fit the
format; :func:`save_ply` can keep them in a ``.npy`` next to the file.

Reading: any binary (either endianness) or ASCII PLY with that layout, extra properties ignored
(e.g. ``f_rest_*``), so Gaussians trained elsewhere load as a lifter's output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from splatdistill.atomic import atomic_write_bytes, atomic_write_stream
from splatdistill.errors import UserError
from splatdistill.geometry.gaussians import Gaussians, covariance_to_quat_scale, quat_scale_to_covariance

SH_C0 = 0.28209479177387814
_PROPS = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)
_PLY_TYPES = {
    "char": "i1",
    "int8": "i1",
    "uchar": "u1",
    "uint8": "u1",
    "short": "i2",
    "int16": "i2",
    "ushort": "u2",
    "uint16": "u2",
    "int": "i4",
    "int32": "i4",
    "uint": "u4",
    "uint32": "u4",
    "float": "f4",
    "float32": "f4",
    "double": "f8",
    "float64": "f8",
}
#: smallest scale written: log(0) would be -inf; 1e-7 of a metre is far below any pixel footprint.
MIN_SCALE = 1e-7


def features_to_rgb(features: Tensor, low: float = 0.01, high: float = 0.99) -> Tensor:
    """(N, C) features -> (N, 3) colours in [0, 1] from their first 3 principal components.

    Each component is mapped linearly so its ``low``..``high`` quantiles span [0, 1] (robust to
    outliers), then clipped; components beyond C stay at 0.5.
    """
    f = features.detach().double()
    N, C = f.shape
    rgb = torch.full((N, 3), 0.5, dtype=torch.float64, device=f.device)
    if N == 0 or C == 0:
        return rgb.float()
    x = f - f.mean(0, keepdim=True)
    # fit on a fixed subsample of large sets: PCA and quantiles need no more
    sub = (
        torch.randperm(N, generator=torch.Generator().manual_seed(0))[:100_000].to(f.device)
        if N > 100_000
        else slice(None)
    )
    k = min(3, C)
    _, _, vh = torch.linalg.svd(x[sub], full_matrices=False)
    comps = vh[:k]
    # sign convention: the largest-magnitude loading of each component is positive (stable output)
    signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    proj = x @ (comps * signs).T
    qs = torch.quantile(proj[sub], torch.tensor([low, high], dtype=torch.float64, device=f.device), dim=0)
    span = (qs[1] - qs[0]).clamp(min=1e-12)
    rgb[:, :k] = ((proj - qs[0]) / span).clamp(0, 1)
    return rgb.float()


def save_ply(path: str | Path, gaussians: Gaussians, colors: Tensor | None = None, save_features: bool = False) -> Path:
    """Write unbatched Gaussians as a standard 3DGS PLY; returns the path.

    ``colors`` (N, 3) in [0, 1] overrides the PCA colouring. With ``save_features`` the (N, C)
    features also go to ``<path>.features.npy`` (float32), which :func:`load_ply` picks up.
    """
    path = Path(path)
    if gaussians.batch_shape:
        raise ValueError("save_ply needs unbatched Gaussians (N, ...)")
    N = len(gaussians)
    rgb = features_to_rgb(gaussians.features) if colors is None else colors.detach().float()
    if rgb.shape != (N, 3):
        raise ValueError(f"colors must be ({N}, 3), got {tuple(rgb.shape)}")
    quats, scales = covariance_to_quat_scale(gaussians.covariances.detach().double(), min_scale=MIN_SCALE)
    opac = gaussians.opacities.detach().double().clamp(1e-6, 1 - 1e-6)
    data = np.zeros(N, dtype=[(p, "<f4") for p in _PROPS])
    means = gaussians.means.detach().cpu().double().numpy()
    for i, axis in enumerate("xyz"):
        data[axis] = means[:, i]
    dc = ((rgb.cpu().double() - 0.5) / SH_C0).numpy()
    for i in range(3):
        data[f"f_dc_{i}"] = dc[:, i]
    data["opacity"] = torch.logit(opac).cpu().numpy()
    log_scales = torch.log(scales).cpu().numpy()
    q = quats.cpu().numpy()
    for i in range(3):
        data[f"scale_{i}"] = log_scales[:, i]
    for i in range(4):
        data[f"rot_{i}"] = q[:, i]
    header = "ply\nformat binary_little_endian 1.0\n"
    header += "comment splatdistill feature Gaussians; colour = PCA of features\n"
    header += f"element vertex {N}\n" + "".join(f"property float {p}\n" for p in _PROPS)
    header += "end_header\n"
    atomic_write_bytes(path, header.encode("ascii") + data.tobytes())
    if save_features:
        features = gaussians.features.detach().cpu().float().numpy()
        atomic_write_stream(_features_path(path), lambda fh: np.save(fh, features))
    return path


def _features_path(path: Path) -> Path:
    return path.with_name(path.name + ".features.npy")


def read_ply_vertices(path: str | Path) -> dict[str, np.ndarray]:
    """All vertex properties of a PLY file as float/int NumPy columns."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read PLY file: {exc.strerror}", path) from exc
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise UserError("not a PLY file (missing 'ply' magic or 'end_header')", path)
    body_start = raw.index(b"\n", end) + 1
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    fmt, elements, current = None, [], None
    for line in lines[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1]
        elif parts[0] == "element":
            current = [parts[1], int(parts[2]), []]
            elements.append(current)
        elif parts[0] == "property":
            if current is None:
                raise UserError("PLY property before any element", path)
            if parts[1] == "list":
                raise UserError(f"list property in element {current[0]!r} is not supported in a 3DGS file", path)
            if parts[1] not in _PLY_TYPES:
                raise UserError(f"unknown PLY property type {parts[1]!r}", path)
            current[2].append((parts[2], _PLY_TYPES[parts[1]]))
    if fmt not in ("binary_little_endian", "binary_big_endian", "ascii"):
        raise UserError(f"unsupported PLY format {fmt!r}", path)
    if not elements or elements[0][0] != "vertex":
        raise UserError("PLY file has no leading 'vertex' element", path)
    _, count, props = elements[0]
    if fmt == "ascii":
        text = raw[body_start:].decode("ascii").split()
        width = len(props)
        if len(text) < count * width:
            raise UserError("PLY file is truncated", path)
        table = np.array(text[: count * width], dtype=np.float64).reshape(count, width)
        return {name: table[:, i].astype(np.dtype(t)) for i, (name, t) in enumerate(props)}
    endian = "<" if fmt == "binary_little_endian" else ">"
    dtype = np.dtype([(name, endian + t) for name, t in props])
    if len(raw) - body_start < count * dtype.itemsize:
        raise UserError(
            f"PLY file is truncated: {count} vertices need {count * dtype.itemsize} "
            f"bytes, found {len(raw) - body_start}",
            path,
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=body_start)
    return {name: data[name].astype(np.dtype(t).newbyteorder("=")) for name, t in props}


def load_ply(
    path: str | Path, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Gaussians:
    """Read a 3DGS PLY into Gaussians.

    Features are the saved ``.features.npy`` when present (see :func:`save_ply`), else the SH DC
    colour ``0.5 + C0 * f_dc`` (N, 3). Opacities are ``sigmoid(opacity)``, covariances
    ``R diag(exp(scale))^2 R^T``.
    """
    path = Path(path)
    cols = read_ply_vertices(path)
    missing = [p for p in _PROPS if p not in cols and not p.startswith("n")]
    if missing:
        raise UserError(f"not a 3DGS PLY: missing vertex properties {', '.join(missing)}", path)

    def stack(names):
        return torch.from_numpy(np.stack([cols[n].astype(np.float64) for n in names], 1))

    means = stack("xyz")
    quats = stack([f"rot_{i}" for i in range(4)])
    scales = torch.exp(stack([f"scale_{i}" for i in range(3)]))
    opac = torch.sigmoid(torch.from_numpy(cols["opacity"].astype(np.float64)))
    if not (torch.isfinite(means).all() and torch.isfinite(quats).all() and torch.isfinite(scales).all()):
        raise UserError("PLY file has non-finite positions, rotations or scales", path)
    if (quats.norm(dim=1) == 0).any():
        raise UserError("PLY file has zero rotation quaternions", path)
    covs = quat_scale_to_covariance(quats, scales)
    feat_path = _features_path(path)
    if feat_path.exists():
        feats = torch.from_numpy(np.load(feat_path)).double()
        if feats.shape[0] != means.shape[0]:
            raise UserError(f"{feat_path.name} has {feats.shape[0]} rows for {means.shape[0]} Gaussians", feat_path)
    else:
        feats = 0.5 + SH_C0 * stack([f"f_dc_{i}" for i in range(3)])
    g = Gaussians(means, covs, opac, feats)
    return g.to(device, dtype)
