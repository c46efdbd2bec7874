"""MVSplat as a lifter (``lifter=mvsplat:CKPT[:NEAR:FAR]``), for users who have MVSplat's code and weights.

Why: the paper lifts its teacher's features with a frozen MVSplat (Chen et al., ECCV 2024). Its code
and checkpoints are not shipped here (they are the authors'); this adapter speaks MVSplat's own
encoder interface so that a user's checkout plugs in unchanged:

- ``encoder(context, global_step, deterministic=False)`` with ``context`` a dict of ``image``
  (B, V, 3, H, W) in [0, 1], ``intrinsics`` (B, V, 3, 3) *normalised* by the image size,
  ``extrinsics`` (B, V, 4, 4) camera-to-world (OpenCV axes, as here), ``near`` and ``far`` (B, V);
- it returns the Gaussians object itself (``means`` (B, N, 3), ``covariances`` (B, N, 3, 3),
  ``harmonics``, ``opacities`` (B, N)), N = V x H x W in view-major raster order (one Gaussian per
  pixel, one surface);
- H and W must be multiples of ``shim_patch_size x downscale_factor`` (16 for the released models).
  MVSplat's own data shim centre-crops; here the images are padded at the right and bottom instead
  (edge pixels repeated; pixel intrinsics unchanged) and the Gaussians of the padding are dropped, so
  every real pixel keeps its Gaussian and Gaussian ``i`` carries the teacher feature of its pixel.

``global_step`` only matters for MVSplat's opacity warm-up (``opacity_mapping``); a frozen model is
queried past the warm-up. ``near``/``far`` default to the RealEstate10K bounds MVSplat was trained
with (1, 100) in the checkpoint's scene units: give your data's bounds in the spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.safe_load import load_torch_file

DEFAULT_NEAR, DEFAULT_FAR = 1.0, 100.0
POST_WARMUP_STEP = 10 ** 9


class MVSplatLifter:
    """A :data:`~splatdistill.splat.lifter.Lifter` around an MVSplat encoder (or any module with its interface)."""

    def __init__(self, encoder: nn.Module, near: float = DEFAULT_NEAR, far: float = DEFAULT_FAR,
                 multiple: int | None = None):
        if not 0 < near < far:
            raise UserError(f"mvsplat lifter: need 0 < near < far, got near={near}, far={far}")
        self.encoder = encoder.eval()
        self.near, self.far = float(near), float(far)
        cfg = getattr(encoder, "cfg", None)
        self.multiple = int(multiple or (getattr(cfg, "shim_patch_size", 4) * getattr(cfg, "downscale_factor", 4)))

    def context(self, images: Tensor, cameras: Cameras) -> tuple[dict[str, Tensor], int, int]:
        """MVSplat's ``context`` dict for (V, 3, H, W) images, padded to the encoder's multiple: (dict, Hp, Wp)."""
        V, _, H, W = images.shape
        m = self.multiple
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        padded = F.pad(images.float(), (0, Wp - W, 0, Hp - H), mode="replicate") if (Hp, Wp) != (H, W) else images.float()
        K = cameras.Ks.float().clone()
        K[:, 0] /= Wp  # normalised by the padded size: pixel intrinsics are unchanged by padding at right/bottom
        K[:, 1] /= Hp
        ones = torch.ones(1, V, dtype=torch.float32, device=images.device)
        ctx = {"image": padded[None].clamp(0, 1), "intrinsics": K[None], "extrinsics": cameras.cam_to_world.float()[None],
               "near": ones * self.near, "far": ones * self.far}
        return ctx, Hp, Wp

    @torch.no_grad()
    def __call__(self, features: Tensor, depth: Tensor | None, images: Tensor, cameras: Cameras) -> Gaussians:
        if images is None:
            raise ValueError("the mvsplat lifter needs the context images")
        V, C, H, W = features.shape
        if images.shape[-2:] != (H, W):
            images = F.interpolate(images.float(), size=(H, W), mode="bilinear", align_corners=False, antialias=True)
        ctx, Hp, Wp = self.context(images, cameras)
        g = self.encoder(ctx, POST_WARMUP_STEP, deterministic=True)
        n = V * Hp * Wp
        if g.means.shape[:2] != (1, n):
            raise UserError(f"mvsplat lifter: the encoder returned {tuple(g.means.shape[:2])} Gaussians, expected "
                            f"(1, {n}) (one per pixel of {V} views at {Hp}x{Wp}: num_surfaces and gaussians_per_pixel "
                            "must be 1)")

        def real(x: Tensor) -> Tensor:  # drop the padding's Gaussians, keep view-major raster order
            return x[0].reshape(V, Hp, Wp, *x.shape[2:])[:, :H, :W].reshape(V * H * W, *x.shape[2:])

        dt = features.dtype
        feats = features.permute(0, 2, 3, 1).reshape(V * H * W, C)
        return Gaussians(real(g.means).to(dt), real(g.covariances).to(dt), real(g.opacities).to(dt), feats)


def load_mvsplat_encoder(checkpoint: str | Path, config: str | Path | None = None) -> nn.Module:
    """MVSplat's cost-volume encoder with a checkpoint's weights, built by MVSplat's own code (its repository
    root on ``PYTHONPATH``; its package is named ``src``). ``config`` defaults to the repository's
    ``config/model/encoder/costvolume.yaml``."""
    try:
        from omegaconf import OmegaConf  # MVSplat's own dependencies
        from src.config import load_typed_config
        from src.model.encoder import EncoderCostVolumeCfg, get_encoder
    except ImportError as exc:
        raise UserError(f"mvsplat lifter: MVSplat's code is not importable ({exc}); clone MVSplat, install its "
                        "requirements and put the repository root on PYTHONPATH (docs/lifters.md)") from None
    import src as mvsplat_src

    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise UserError("mvsplat lifter: no such checkpoint", ckpt)
    cfg_path = Path(config) if config else Path(mvsplat_src.__file__).parent.parent / "config/model/encoder/costvolume.yaml"
    if not cfg_path.is_file():
        raise UserError("mvsplat lifter: no encoder config (pass the costvolume.yaml of your MVSplat)", cfg_path)
    raw = OmegaConf.load(cfg_path)
    raw.unimatch_weights_path = None  # the checkpoint holds the backbone's weights
    encoder, _ = get_encoder(load_typed_config(raw, EncoderCostVolumeCfg))
    state = load_torch_file(ckpt, "MVSplat checkpoint", foreign=True)  # a Lightning file: only its tensors are used
    state = state.get("state_dict", state)
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc:
        raise UserError("mvsplat lifter: the checkpoint has no 'encoder.*' weights (not an MVSplat checkpoint?)", ckpt)
    missing, unexpected = encoder.load_state_dict(enc, strict=False)
    if missing:
        raise UserError(f"mvsplat lifter: the checkpoint does not match the encoder config: missing {missing[:3]}", ckpt)
    return encoder.eval()


def parse_mvsplat_spec(arg: str | None) -> tuple[str, float, float]:
    """``CKPT[:NEAR:FAR]`` -> (checkpoint, near, far)."""
    if not arg:
        raise UserError("mvsplat lifter needs a checkpoint: mvsplat:CKPT[:NEAR:FAR]")
    parts = arg.rsplit(":", 2)
    if len(parts) == 3:
        try:
            return parts[0], float(parts[1]), float(parts[2])
        except ValueError:
            pass
    return arg, DEFAULT_NEAR, DEFAULT_FAR


def build_mvsplat_lifter(arg: str | None, settings: Any = None, data: str | None = None) -> MVSplatLifter:
    ckpt, near, far = parse_mvsplat_spec(arg)
    return MVSplatLifter(load_mvsplat_encoder(ckpt), near, far)
