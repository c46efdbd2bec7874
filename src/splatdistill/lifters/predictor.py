"""A small learned feed-forward Gaussian predictor (MVSplat-like) that trains on a CPU.

Why it exists: Splat-and-Distill's teacher lifts its features with a *feed-forward* reconstruction
(no per-scene optimisation), and users without depth sensors need one. MVSplat is too big to train
here, so this is the same idea at CPU scale. For every context view (the *reference*), with every
other context view as a *source*:

1. **Matching features** at 1/4 resolution: the predictor's own CNN (``features="cnn"``), the
   teacher's patch features projected by a 1x1 conv and resized (``"backbone"``), or both fused
   (``"cnn+backbone"``). With backbone features the matching improves when the teacher's features do,
   which is the "dynamic teacher" argument of the paper.
2. **Plane sweep**: D fronto-parallel planes in the reference frustum, uniform in inverse depth
   between ``near`` and ``far``. The points of each plane are projected into the source camera and the
   source features sampled there (``grid_sample``); correlation ``<f_ref, f_src> / sqrt(C)``, averaged
   over sources, gives a cost volume (D, h, w).
3. **Cost regularisation**: a small 2D CNN over ``[cost, f_ref]`` predicts D logits (plus the raw cost,
   so an untrained net starts as winner-take-all matching); softmax -> expected normalised inverse depth.
4. **Refinement** at 1/2 and full resolution from the image, the upsampled estimate and its confidence:
   a residual inverse depth, an opacity (sigmoid) and a footprint scale factor in [0.5, 15] (MVSplat's
   range), giving one pixel-aligned Gaussian per pixel through :func:`~splatdistill.geometry.lift_depth`.

Depth is parametrised by ``t`` in [0, 1] (normalised inverse depth: 0 = far, 1 = near) so that the
planes, the softmax expectation and the residuals all live in one bounded space.

Checkpoints are a ``predictor.safetensors`` (weights) plus a ``predictor.json`` (config and training
metadata) in one folder; :func:`load_predictor` reads them back with clear errors.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from splatdistill.atomic import atomic_write, atomic_write_text
from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.geometry.lifting import lift_depth
from splatdistill.lifters.plane_sweep import cost_volume, plane_sweep_grid, zncc_volume

FEATURE_SOURCES = ("cnn", "backbone", "cnn+backbone")
PLANE_MODES = ("fixed", "baseline")
FORMAT = "splatdistill.predictor"
FORMAT_VERSION = 1
WEIGHTS_NAME = "predictor.safetensors"
CONFIG_NAME = "predictor.json"
_IMAGE_MEAN, _IMAGE_STD = 0.45, 0.225


@dataclass
class PredictorConfig:
    """Architecture of a :class:`GaussianPredictor` (saved with its weights)."""

    features: str = "cnn"  # matching features: cnn | backbone | cnn+backbone
    backbone: str = ""  # backbone spec whose patch features it was trained on ("backbone" sources)
    backbone_dim: int = 0  # channels of those features
    backbone_size: int = 224  # image side the backbone saw during training
    num_depths: int = 32  # plane-sweep depth candidates
    near: float = 0.5  # metres; planes are uniform in inverse depth between near and far
    far: float = 12.0
    channels: int = 48  # matching-feature channels (multiple of 8)
    image_size: int = 112  # training resolution; lifters resize their inputs to it (multiple of 4)
    min_scale: float = 0.5  # footprint scale factor range (MVSplat: 0.5 - 15)
    max_scale: float = 15.0
    # where the planes go: "fixed" = near..far in the scene's units; "baseline" = each sample's world is
    # first scaled so that focal (px at image_size) x mean camera baseline equals ref_focal_baseline, so the
    # planes cover the disparities its cameras can see whatever the scene's units (a castle at 0.3 m, a
    # street at 30 m, an SfM model of arbitrary scale), and depth is scaled back afterwards
    planes: str = "fixed"
    ref_focal_baseline: float = 45.0  # px x units: the rooms' median training pair (88 px x 0.51 m)
    # a domain-free matching cost beside the learned one: ZNCC of grayscale 5x5 windows at 1/2 resolution,
    # pooled to the cost volume's 1/4 (no learned features: it means the same on a photo as on a render)
    zncc: bool = False

    def validate(self) -> PredictorConfig:
        if self.features not in FEATURE_SOURCES:
            raise UserError(f"predictor features must be one of {', '.join(FEATURE_SOURCES)}, got {self.features!r}")
        if self.uses_backbone and self.backbone_dim < 1:
            raise UserError(f"features={self.features!r} needs backbone_dim >= 1")
        if not 0 < self.near < self.far:
            raise UserError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if self.num_depths < 2:
            raise UserError(f"num_depths must be >= 2, got {self.num_depths}")
        if self.channels < 8 or self.channels % 8:
            raise UserError(f"channels must be a positive multiple of 8, got {self.channels}")
        if self.image_size < 16 or self.image_size % 4:
            raise UserError(f"image_size must be a multiple of 4 and >= 16, got {self.image_size}")
        if self.planes not in PLANE_MODES:
            raise UserError(f"predictor planes must be one of {', '.join(PLANE_MODES)}, got {self.planes!r}")
        if self.ref_focal_baseline <= 0:
            raise UserError(f"ref_focal_baseline must be > 0, got {self.ref_focal_baseline}")
        if not 0 < self.min_scale < self.max_scale:
            raise UserError(f"need 0 < min_scale < max_scale, got {self.min_scale}, {self.max_scale}")
        return self

    @property
    def uses_backbone(self) -> bool:
        return "backbone" in self.features

    @property
    def uses_cnn(self) -> bool:
        return "cnn" in self.features

    # t (normalised inverse depth) <-> depth ------------------------------------------------------
    def t_to_depth(self, t: Tensor) -> Tensor:
        """Depth of normalised inverse depth ``t`` (0 = far, 1 = near); finite for any t."""
        inv_far, inv_near = 1.0 / self.far, 1.0 / self.near
        inv = (inv_far + t * (inv_near - inv_far)).clamp_min(0.5 * inv_far)
        return 1.0 / inv

    def depth_to_t(self, depth: Tensor) -> Tensor:
        inv_far, inv_near = 1.0 / self.far, 1.0 / self.near
        return (1.0 / depth.clamp_min(1e-6) - inv_far) / (inv_near - inv_far)

    def plane_t(self, device=None, dtype=torch.float32) -> Tensor:
        return torch.linspace(0.0, 1.0, self.num_depths, device=device, dtype=dtype)

    def world_scale(self, Ks: Tensor, viewmats: Tensor) -> Tensor:
        """(B,) factor the predictor multiplies each sample's world by before the plane sweep
        (Ks (B, V, 3, 3) at the predictor's input size, viewmats (B, V, 4, 4)); 1 with fixed planes.
        With ``planes="baseline"`` it is ``ref_focal_baseline / (mean focal x mean camera distance)``:
        a rig with a 7.5 cm baseline and one with 50 cm then see the same plane disparities."""
        B, V = viewmats.shape[:2]
        if self.planes == "fixed":
            return torch.ones(B, dtype=viewmats.dtype, device=viewmats.device)
        centres = torch.linalg.inv(viewmats)[..., :3, 3]  # (B, V, 3)
        i, j = torch.triu_indices(V, V, 1, device=viewmats.device)
        baseline = (centres[:, i] - centres[:, j]).norm(dim=-1).mean(1)
        focal = 0.5 * (Ks[..., 0, 0] + Ks[..., 1, 1]).mean(1)
        # a pair without baseline has no parallax: keep its units rather than divide by ~0
        return torch.where(
            baseline * focal > 1e-9,
            self.ref_focal_baseline / (baseline * focal).clamp_min(1e-9),
            torch.ones_like(baseline),
        )


@dataclass
class PredictorOutput:
    """Per-pixel predictions for every context view, (B, V, H, W) unless noted."""

    depth: Tensor  # z-depth in metres
    opacity: Tensor  # in (0, 1)
    scale: Tensor  # footprint scale factor in [min_scale, max_scale]
    t: Tensor  # normalised inverse depth of ``depth``
    coarse_t: Tensor  # (B, V, H/4, W/4) softmax expectation over the planes
    half_t: Tensor  # (B, V, H/2, W/2) after the first refinement
    confidence: Tensor  # (B, V, H/4, W/4) max plane probability
    unit: Tensor  # (B,) depth = t_to_depth(t) * unit: 1 / world_scale (1 with fixed planes)

    def depth_of(self, t: Tensor, cfg: PredictorConfig) -> Tensor:
        """Depth in the scene's units of normalised inverse depth ``t`` (B, V, ...) of this output."""
        return cfg.t_to_depth(t) * self.unit.reshape(-1, *([1] * (t.dim() - 1))).to(t.dtype)


# ---- the network ------------------------------------------------------------------------------------


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1, norm: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=not norm)]
    if norm:
        layers.append(nn.GroupNorm(max(1, cout // 8), cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _up(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _scaled_viewmats(viewmats: Tensor, world: Tensor) -> Tensor:
    """World-to-camera matrices (B, V, 4, 4) with their translations multiplied by ``world`` (B,)."""
    vm = torch.cat([viewmats[..., :3, :3], viewmats[..., :3, 3:] * world[:, None, None, None]], -1)
    vm = torch.cat([vm, torch.zeros_like(vm[..., :1, :])], -2)
    vm[..., 3, 3] = 1.0
    return vm


def _zncc_cost(
    images: Tensor, Ks: Tensor, viewmats: Tensor, depths: Tensor, size: tuple[int, int], refs: list, srcs: list
) -> Tensor:
    """ZNCC of the grayscale images at half resolution ``size`` for every (reference, source) pair, averaged
    over the sources and pooled to quarter resolution: (B*V, D, h, w)."""
    B, V, _, H, W = images.shape
    hh, ww = size
    Kh = Ks * torch.tensor([ww / W, hh / H, 1.0], dtype=Ks.dtype, device=Ks.device)[:, None]
    gh, zh = plane_sweep_grid(Kh[:, refs], viewmats[:, refs], Kh[:, srcs], viewmats[:, srcs], depths, hh, ww)
    gray = F.avg_pool2d(
        (images * images.new_tensor([0.299, 0.587, 0.114])[:, None, None]).sum(2, keepdim=True).flatten(0, 1), 2
    )  # (B*V, 1, H/2, W/2)
    gray = gray.unflatten(0, (B, V))
    zc = zncc_volume(
        gray[:, refs].flatten(0, 1), gray[:, srcs].flatten(0, 1), gh.flatten(0, 1).to(images.dtype), zh.flatten(0, 1)
    )
    return F.avg_pool2d(zc, 2).unflatten(0, (B, V, V - 1)).mean(2).flatten(0, 1)


class GaussianPredictor(nn.Module):
    """Two (or more) posed context images -> per-pixel depth, opacity and scale for each of them."""

    def __init__(self, config: PredictorConfig | None = None):
        super().__init__()
        self.config = cfg = (config or PredictorConfig()).validate()
        c, D = cfg.channels, cfg.num_depths
        self.enc_half = nn.Sequential(_conv(3, 32, stride=2), _conv(32, 32))  # 1/2
        self.enc_quarter = nn.Sequential(_conv(32, 48, stride=2), _conv(48, 48), _conv(48, 48))  # 1/4
        self.match_cnn = nn.Conv2d(48, c, 1) if cfg.uses_cnn else None
        self.match_backbone = (
            nn.Sequential(nn.Conv2d(cfg.backbone_dim, c, 1), nn.GroupNorm(c // 8, c)) if cfg.uses_backbone else None
        )
        self.fuse = nn.Conv2d(2 * c, c, 1) if cfg.features == "cnn+backbone" else None
        self.cost_net = nn.Sequential(
            _conv(D * (2 if cfg.zncc else 1) + c, 48),
            _conv(48, 48, dilation=2),
            _conv(48, 48, dilation=4),
            nn.Conv2d(48, D, 3, padding=1),
        )
        self.cost_gain = nn.Parameter(torch.tensor(4.0))  # raw-cost skip: starts as soft winner-take-all
        self.zncc_gain = nn.Parameter(torch.tensor(4.0)) if cfg.zncc else None
        self.refine_half = nn.Sequential(_conv(32 + 3, 32, norm=False), _conv(32, 32, norm=False))
        self.refine_half_out = nn.Conv2d(32, 1, 3, padding=1)
        self.refine_full = nn.Sequential(nn.Conv2d(32, 13, 1), nn.ReLU(inplace=True))  # 1/2 context, 13 channels
        self.refine_full_conv = nn.Sequential(_conv(3 + 1 + 13, 16, norm=False), _conv(16, 16, norm=False))
        self.refine_full_out = nn.Conv2d(16, 3, 3, padding=1)
        for head in (self.refine_half_out, self.refine_full_out):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        with torch.no_grad():  # start at opacity 0.9 and a scale factor of 1 (the pixel footprint)
            self.refine_full_out.bias[1] = math.log(0.9 / 0.1)
            frac = (1.0 - cfg.min_scale) / (cfg.max_scale - cfg.min_scale)
            self.refine_full_out.bias[2] = math.log(frac / (1 - frac))

    # -------------------------------------------------------------------------------------------
    def matching_features(self, quarter: Tensor, guide: Tensor | None) -> Tensor:
        """(N, c, h, w) matching features: the CNN's, the projected guide (backbone) features, or both fused."""
        h, w = quarter.shape[-2:]
        parts = []
        if self.match_cnn is not None:
            parts.append(self.match_cnn(quarter))
        if self.match_backbone is not None:
            if guide is None:
                raise ValueError(
                    f"this predictor matches on backbone features ({self.config.backbone or 'a backbone'}, "
                    f"{self.config.backbone_dim} channels): pass guide features"
                )
            if guide.shape[1] != self.config.backbone_dim:
                raise ValueError(
                    f"guide features have {guide.shape[1]} channels; the predictor was trained on "
                    f"{self.config.backbone_dim}-channel features of {self.config.backbone or 'its backbone'}"
                )
            g = F.interpolate(
                guide.to(quarter.dtype),
                size=(h, w),
                mode="bilinear",
                align_corners=False,
                antialias=guide.shape[-1] > w or guide.shape[-2] > h,
            )
            parts.append(self.match_backbone(g))
        return self.fuse(torch.cat(parts, 1)) if self.fuse is not None else parts[0]

    def forward(self, views: Views) -> PredictorOutput:
        """(B, V) views: images in [0, 1] with H, W multiples of 4, cameras for that size, and (when the
        predictor matches on backbone features) their :attr:`~Views.guide` (B, V, C, h, w), any h, w.
        V >= 2: each view is matched against all the others."""
        cfg = self.config
        images, Ks, viewmats, guide = views.images, views.cameras.Ks, views.cameras.viewmats, views.guide
        B, V, _, H, W = images.shape
        if V < 2:
            raise ValueError(f"the predictor needs at least 2 context views, got {V}")
        if H % 4 or W % 4:
            raise ValueError(f"image size must be a multiple of 4, got {H}x{W}")
        dt = images.dtype
        world = cfg.world_scale(Ks, viewmats)  # scene units -> the planes' units
        viewmats = _scaled_viewmats(viewmats, world)
        x = ((images - _IMAGE_MEAN) / _IMAGE_STD).flatten(0, 1)
        half = self.enc_half(x)
        quarter = self.enc_quarter(half)
        h, w = quarter.shape[-2:]
        feats = self.matching_features(quarter, None if guide is None else guide.flatten(0, 1))
        feats = feats.unflatten(0, (B, V))
        # plane sweep for every ordered (reference, source) pair, batched
        scale = torch.tensor([w / W, h / H, 1.0], dtype=Ks.dtype, device=Ks.device)
        Kq = Ks * scale[:, None]
        planes_t = cfg.plane_t(images.device, dt)
        depths = cfg.t_to_depth(planes_t)
        refs = [r for r in range(V) for s in range(V) if s != r]
        srcs = [s for r in range(V) for s in range(V) if s != r]
        grid, z = plane_sweep_grid(Kq[:, refs], viewmats[:, refs], Kq[:, srcs], viewmats[:, srcs], depths, h, w)
        cost = cost_volume(
            feats[:, refs].flatten(0, 1), feats[:, srcs].flatten(0, 1), grid.flatten(0, 1).to(dt), z.flatten(0, 1)
        )
        cost = cost.unflatten(0, (B, V, V - 1)).mean(2).flatten(0, 1)  # (B*V, D, h, w)
        f_ref = feats.flatten(0, 1)
        if self.zncc_gain is not None:
            zc = _zncc_cost(images, Ks, viewmats, depths, half.shape[-2:], refs, srcs)  # (B*V, D, h, w)
            logits = self.cost_net(torch.cat([cost, zc, f_ref], 1)) + self.cost_gain * cost + self.zncc_gain * zc
        else:
            logits = self.cost_net(torch.cat([cost, f_ref], 1)) + self.cost_gain * cost
        prob = logits.softmax(1)
        coarse_t = (prob * planes_t[None, :, None, None]).sum(1, keepdim=True)
        conf = prob.max(1, keepdim=True).values
        entropy = -(prob * prob.clamp_min(1e-8).log()).sum(1, keepdim=True) / math.log(cfg.num_depths)
        # refinement at 1/2
        hh, ww = half.shape[-2:]
        hid = self.refine_half(
            torch.cat([half, _up(coarse_t, (hh, ww)), _up(conf, (hh, ww)), _up(entropy, (hh, ww))], 1)
        )
        half_t = _up(coarse_t, (hh, ww)) + self.refine_half_out(hid)
        # full resolution: residual, opacity, scale
        up_t = _up(half_t, (H, W))
        ctx = _up(self.refine_full(hid), (H, W))
        out = self.refine_full_out(self.refine_full_conv(torch.cat([x, up_t, ctx], 1)))
        t = up_t + out[:, :1]
        opacity = torch.sigmoid(out[:, 1:2])
        sf = cfg.min_scale + (cfg.max_scale - cfg.min_scale) * torch.sigmoid(out[:, 2:3])

        def bv(a: Tensor) -> Tensor:
            return a[:, 0].unflatten(0, (B, V))

        unit = 1.0 / world
        return PredictorOutput(
            depth=bv(cfg.t_to_depth(t)) * unit[:, None, None, None].to(dt),
            opacity=bv(opacity),
            scale=bv(sf),
            t=bv(t),
            coarse_t=bv(coarse_t),
            half_t=bv(half_t),
            confidence=bv(conf),
            unit=unit,
        )


# ---- checkpoints ------------------------------------------------------------------------------------


def save_predictor(model: GaussianPredictor, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``predictor.safetensors`` + ``predictor.json`` into ``folder`` (atomically each); returns it."""
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(
        folder / WEIGHTS_NAME,
        lambda tmp: save_file(state, tmp, metadata={"format": FORMAT, "version": str(FORMAT_VERSION)}),
    )
    doc = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": asdict(model.config),
        "meta": meta or {},
        "preprocess": {"mean": [_IMAGE_MEAN] * 3, "std": [_IMAGE_STD] * 3, "note": "the predictor's own CNN input"},
    }
    atomic_write_text(folder / CONFIG_NAME, json.dumps(doc, indent=1, default=str))
    return folder


def _predictor_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / WEIGHTS_NAME, path / CONFIG_NAME
    if path.suffix == ".json":
        return path.with_name(WEIGHTS_NAME), path
    return path, path.with_name(CONFIG_NAME)


def read_predictor_meta(path: str | Path) -> dict[str, Any]:
    """The ``predictor.json`` document of a saved predictor (config + training metadata)."""
    _, cfg_path = _predictor_files(Path(path).expanduser())
    if not cfg_path.is_file():
        raise UserError(
            f"no {CONFIG_NAME} next to the predictor weights (train one with 'splatdistill lifter train')", cfg_path
        )
    try:
        doc = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable predictor config ({type(exc).__name__}: {exc})", cfg_path) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"not a splatdistill predictor config (expected format {FORMAT!r})", cfg_path)
    if int(doc.get("version", -1)) > FORMAT_VERSION:
        raise UserError(
            f"predictor format version {doc.get('version')} is newer than this splatdistill "
            f"understands ({FORMAT_VERSION}); upgrade splatdistill",
            cfg_path,
        )
    return doc


def load_predictor(path: str | Path, device: torch.device | str = "cpu") -> GaussianPredictor:
    """A trained :class:`GaussianPredictor` from a folder (or its ``.safetensors`` / ``.json`` file), in eval mode."""

    path = Path(path).expanduser()
    if not path.exists():
        raise UserError("no such predictor (expected a folder written by 'splatdistill lifter train')", path)
    weights_path, _ = _predictor_files(path)
    doc = read_predictor_meta(path)
    known = {f.name for f in fields(PredictorConfig)}
    raw = doc.get("config", {})
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"predictor config has unknown keys {', '.join(unknown)}", path)
    model = GaussianPredictor(PredictorConfig(**raw))
    if not weights_path.is_file():
        raise UserError(f"missing {WEIGHTS_NAME}", weights_path)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"unreadable predictor weights ({exc})", weights_path) from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise UserError(
            f"predictor weights do not match its config: missing {missing[:3]}, unexpected {extra[:3]}", weights_path
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise UserError(
                f"predictor weight {k} has shape {tuple(state[k].shape)}, config expects {tuple(v.shape)}", weights_path
            )
    model.load_state_dict(state)
    return model.to(device).eval()


# ---- as a lifter ------------------------------------------------------------------------------------


def predictor_input_size(height: int, width: int, image_size: int) -> tuple[int, int]:
    """(H, W) the predictor runs at: shorter side ``image_size``, both sides multiples of 4."""
    s = image_size / min(height, width)
    return max(4, int(round(height * s / 4)) * 4), max(4, int(round(width * s / 4)) * 4)


class PredictorLifter:
    """A :data:`~splatdistill.splat.lifter.Lifter` backed by a trained :class:`GaussianPredictor`.

    The predictor runs on the context images at its training resolution (images resized, intrinsics
    scaled to match); depth, opacity and scale come back to the cameras' size (nearest for depth, so
    no Gaussians float between a foreground edge and the background) and each pixel becomes one
    Gaussian carrying its feature. The dataset's depth is ignored: that is the point of a learned lifter.
    The footprint is ``settings.gaussian_scale`` times the predicted scale factor; the opacity is the
    predicted one.
    """

    def __init__(self, model: GaussianPredictor, settings: Any = None):
        self.model = model.eval()
        self.gaussian_scale = float(getattr(settings, "gaussian_scale", 1.0))

    @property
    def config(self) -> PredictorConfig:
        return self.model.config

    @torch.no_grad()
    def predict(self, views: Views) -> tuple[Tensor, Tensor, Tensor]:
        """(depth, opacity, scale), each (V, H, W) at the cameras' size, for V views (images in [0, 1]; their
        teacher ``features`` guide a predictor that matches on them)."""
        cfg = self.model.config
        images, cameras, features = views.images, views.cameras, views.features
        dev = images.device
        if next(self.model.parameters()).device != dev:
            self.model.to(dev)
        V, _, H, W = images.shape
        if (cameras.height, cameras.width) != (H, W):
            raise ValueError(f"images are {H}x{W} but the cameras are {cameras.height}x{cameras.width}")
        h, w = predictor_input_size(H, W, cfg.image_size)
        x = images.float()
        if (h, w) != (H, W):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        scale = torch.tensor([w / W, h / H, 1.0], dtype=torch.float32, device=dev)
        cams = Cameras(cameras.Ks.float() * scale[:, None], cameras.viewmats.float(), w, h)
        guide = features.float() if (cfg.uses_backbone and features is not None) else None
        out = self.model(Views(x.clamp(0, 1), cams, features=guide)[None])
        depth, opacity, sf = out.depth[0], out.opacity[0], out.scale[0]
        if (h, w) != (H, W):
            depth = F.interpolate(depth[:, None], size=(H, W), mode="nearest-exact")[:, 0]
            opacity = F.interpolate(opacity[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            sf = F.interpolate(sf[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
        return depth, opacity.clamp(0, 1), sf

    def __call__(self, views: Views) -> Gaussians:
        d, o, s = self.predict(views)
        dt = views.features.dtype
        return lift_depth(
            d.to(dt), views.cameras, views.features, scale_factor=(self.gaussian_scale * s).to(dt), opacity=o.to(dt)
        )
