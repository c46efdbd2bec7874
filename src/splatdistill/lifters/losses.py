"""Training losses of the predictor: depth supervision (log L1 at three scales, opacity and footprint
proxies) and, optionally, the photometric self-supervision of :mod:`splatdistill.lifters.photometric`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from splatdistill.data.views import Views
from splatdistill.lifters.photometric import photometric_loss, warp_photometric_loss
from splatdistill.lifters.predictor import PredictorConfig, PredictorOutput


def _down_nearest(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x.flatten(0, 1)[:, None], size=size, mode="nearest-exact")[:, 0].unflatten(0, x.shape[:2])


def _log_l1(pred_depth: Tensor, gt: Tensor) -> Tensor:
    valid = gt > 0
    if not bool(valid.any()):
        return pred_depth.sum() * 0
    return (pred_depth[valid].log() - gt[valid].log()).abs().mean()


def depth_losses(out: PredictorOutput, batch: Views, cfg: PredictorConfig) -> dict[str, Tensor]:
    """Depth (log L1 at three scales) + opacity and scale proxy losses on the (B, V) views' depths (and
    normals, when loaded); ``total`` is their weighted sum."""
    gt = batch.depths
    H, W = gt.shape[-2:]
    losses = {
        "depth": _log_l1(out.depth, gt),
        "depth_half": _log_l1(out.depth_of(out.half_t, cfg), _down_nearest(gt, out.half_t.shape[-2:])),
        "depth_coarse": _log_l1(out.depth_of(out.coarse_t, cfg), _down_nearest(gt, out.coarse_t.shape[-2:])),
    }
    valid = gt > 0
    err = (out.depth.detach().clamp_min(1e-6).log() - gt.clamp_min(1e-6).log()).abs()
    target_o = torch.exp(-err / 0.1)
    o = out.opacity.clamp(1e-4, 1 - 1e-4)
    bce = -(target_o * o.log() + (1 - target_o) * (1 - o).log())
    losses["opacity"] = bce[valid].mean() if bool(valid.any()) else o.sum() * 0
    if batch.normals is not None:
        n = batch.normals  # (B, V, H, W, 3) camera frame
        Kinv = torch.linalg.inv(batch.cameras.Ks)  # (B, V, 3, 3)
        v, u = torch.meshgrid(
            torch.arange(H, device=gt.device) + 0.5, torch.arange(W, device=gt.device) + 0.5, indexing="ij"
        )
        pix = torch.stack([u, v, torch.ones_like(u)], -1).to(gt.dtype)
        rays = F.normalize(torch.einsum("bvij,hwj->bvhwi", Kinv, pix), dim=-1)
        cos = (rays * n).sum(-1).abs()
        nvalid = valid & (n.norm(dim=-1) > 0.5)
        target_s = (1.0 / cos.clamp_min(1e-3)).clamp(1.0, cfg.max_scale)
        diff = (out.scale.log() - target_s.log()).abs()
        losses["scale"] = diff[nvalid].mean() if bool(nvalid.any()) else out.scale.sum() * 0
    else:
        losses["scale"] = out.scale.sum() * 0
    losses["total"] = (
        losses["depth"]
        + 0.5 * losses["depth_half"]
        + 0.5 * losses["depth_coarse"]
        + 0.1 * losses["opacity"]
        + 0.05 * losses["scale"]
    )
    return losses


def self_supervised_losses(
    out: PredictorOutput, batch: Views, cfg: PredictorConfig, splat_weight: float = 1.0
) -> dict[str, Tensor]:
    """Losses from posed images alone: the inverse-warp photometric loss on the depth of all three
    output scales (each upsampled to full resolution, as Monodepth2 does) with edge-aware smoothness,
    plus ``splat_weight`` times the splat photometric loss, which also trains opacity and footprint."""
    H, W = batch.height, batch.width
    B, V = out.depth.shape[:2]

    def full(t: Tensor) -> Tensor:
        return out.depth_of(
            F.interpolate(t.flatten(0, 1)[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0].unflatten(
                0, (B, V)
            ),
            cfg,
        )

    terms = [warp_photometric_loss(d, batch) for d in (out.depth, full(out.half_t), full(out.coarse_t))]
    losses = {
        "warp": sum(t["warp"] for t in terms) / len(terms),
        "smooth": terms[0]["smooth"],
        "warp_kept": terms[0]["warp_kept"],
    }
    total = losses["warp"] + 1e-3 * losses["smooth"]
    if splat_weight > 0:
        photo = photometric_loss(out.depth, out.opacity, out.scale, batch)
        losses["photometric"], losses["photo_coverage"] = photo["photometric"], photo["coverage"]
        total = total + splat_weight * photo["photometric"]
    losses["total"] = total
    return losses


def predictor_losses(
    out: PredictorOutput,
    batch: Views,
    cfg: PredictorConfig,
    depth: bool = True,
    photometric_weight: float = 0.0,
    splat_weight: float = 1.0,
) -> dict[str, Tensor]:
    """The training loss: :func:`depth_losses` (when ``depth``) plus ``photometric_weight`` times the
    self-supervised losses (:func:`self_supervised_losses`); ``total`` is the sum."""
    losses = depth_losses(out, batch, cfg) if depth else {"total": out.depth.sum() * 0}
    if photometric_weight > 0:
        photo = self_supervised_losses(out, batch, cfg, splat_weight)
        total = losses["total"] + photometric_weight * photo.pop("total")
        losses.update(photo)
        losses["total"] = total
    return losses
