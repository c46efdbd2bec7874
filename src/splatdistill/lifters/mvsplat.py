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

The encoder is built as MVSplat's ``+experiment=re10k`` run builds it: Hydra composes ``config/main.yaml``
with ``config/experiment/re10k.yaml`` (128 depth candidates, attention in both U-Nets, a 5-level depth
U-Net of width 32: building from ``costvolume.yaml`` alone gives an encoder the released weights do not
fit), MVSplat's global config is set before construction (the encoder reads ``mode`` and the number of
context views from it), and the checkpoint's ``encoder.*`` weights are loaded exactly.

``global_step`` only matters for MVSplat's opacity warm-up (``opacity_mapping``); a frozen model is
queried past the warm-up. ``near``/``far`` default to the RealEstate10K bounds MVSplat was trained
with (1, 100) in the checkpoint's scene units: give your data's bounds in the spec.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from splatdistill.data.views import Views
from splatdistill.errors import UserError, require_extra
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.safe_load import load_torch_file

DEFAULT_NEAR, DEFAULT_FAR = 1.0, 100.0
EXPERIMENT = "re10k"  # the released checkpoints' experiment (acid's encoder is the same)
POST_WARMUP_STEP = 10**9


class MVSplatLifter:
    """A :data:`~splatdistill.splat.lifter.Lifter` around an MVSplat encoder (or any module with its interface)."""

    def __init__(
        self,
        encoder: nn.Module,
        near: float = DEFAULT_NEAR,
        far: float = DEFAULT_FAR,
        multiple: int | None = None,
        build_for_views: Callable[[int], nn.Module] | None = None,
    ):
        """``encoder`` serves two context views; ``build_for_views(V)`` builds one for V views (MVSplat's U-Nets
        attend across a fixed number of views), else ``encoder`` serves any number."""
        if not 0 < near < far:
            raise UserError(f"mvsplat lifter: need 0 < near < far, got near={near}, far={far}")
        self.encoder = encoder.eval()
        self._build = build_for_views
        self._by_views: dict[int, nn.Module] = {2: self.encoder}
        self.near, self.far = float(near), float(far)
        cfg = getattr(encoder, "cfg", None)
        self.multiple = int(multiple or (getattr(cfg, "shim_patch_size", 4) * getattr(cfg, "downscale_factor", 4)))

    def context(self, images: Tensor, cameras: Cameras) -> tuple[dict[str, Tensor], int, int]:
        """MVSplat's ``context`` dict for (V, 3, H, W) images, padded to the encoder's multiple: (dict, Hp, Wp)."""
        V, _, H, W = images.shape
        m = self.multiple
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        padded = (
            F.pad(images.float(), (0, Wp - W, 0, Hp - H), mode="replicate") if (Hp, Wp) != (H, W) else images.float()
        )
        K = cameras.Ks.float().clone()
        K[:, 0] /= Wp  # normalised by the padded size: pixel intrinsics are unchanged by padding at right/bottom
        K[:, 1] /= Hp
        ones = torch.ones(1, V, dtype=torch.float32, device=images.device)
        ctx = {
            "image": padded[None].clamp(0, 1),
            "intrinsics": K[None],
            "extrinsics": cameras.cam_to_world.float()[None],
            "near": ones * self.near,
            "far": ones * self.far,
        }
        return ctx, Hp, Wp

    def encoder_for(self, views: int) -> nn.Module:
        if self._build is None:
            return self.encoder
        if views not in self._by_views:
            self._by_views[views] = self._build(views).eval()
        return self._by_views[views]

    @torch.no_grad()
    def __call__(self, views: Views) -> Gaussians:
        features, images, cameras = views.features, views.images, views.cameras
        V, C, H, W = features.shape
        if images.shape[-2:] != (H, W):
            images = F.interpolate(images.float(), size=(H, W), mode="bilinear", align_corners=False, antialias=True)
        ctx, Hp, Wp = self.context(images, cameras)
        encoder = self.encoder_for(V)
        param = next(encoder.parameters(), None)
        if param is not None and param.device != images.device:  # it follows its inputs (lifter check --device)
            encoder.to(images.device)
        g = encoder(ctx, POST_WARMUP_STEP, deterministic=True)
        n = V * Hp * Wp
        if g.means.shape[:2] != (1, n):
            raise UserError(
                f"mvsplat lifter: the encoder returned {tuple(g.means.shape[:2])} Gaussians, expected "
                f"(1, {n}) (one per pixel of {V} views at {Hp}x{Wp}: num_surfaces and gaussians_per_pixel "
                "must be 1)"
            )

        def real(x: Tensor) -> Tensor:  # drop the padding's Gaussians, keep view-major raster order
            return x[0].reshape(V, Hp, Wp, *x.shape[2:])[:, :H, :W].reshape(V * H * W, *x.shape[2:])

        dt = features.dtype
        feats = features.permute(0, 2, 3, 1).reshape(V * H * W, C)
        return Gaussians(real(g.means).to(dt), real(g.covariances).to(dt), real(g.opacities).to(dt), feats)


def read_checkpoint_state(checkpoint: Path) -> dict[str, Tensor]:
    """The checkpoint's state dict: a Lightning checkpoint's ``state_dict`` (or a bare state dict).
    One small function, so that the checkpoint's loading stays in one place."""
    state = load_torch_file(checkpoint, "MVSplat checkpoint", foreign=True)  # a Lightning file: only its tensors
    return state.get("state_dict", state) if isinstance(state, dict) else state


def encoder_state(state: dict[str, Tensor], checkpoint: Path) -> dict[str, Tensor]:
    """The encoder's weights of a Lightning checkpoint (keys ``encoder.*``, prefix removed)."""
    enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    if not enc:
        raise UserError(
            "mvsplat lifter: the checkpoint has no 'encoder.*' weights (not an MVSplat checkpoint?)", checkpoint
        )
    return enc


def mvsplat_root() -> Path:
    """The root of the user's MVSplat checkout (its package ``src`` is on PYTHONPATH; a namespace package)."""
    try:
        import src as mvsplat_src  # MVSplat's package
        from src.global_cfg import set_cfg  # noqa: F401 (proves it is MVSplat's src)
    except ImportError as exc:
        raise UserError(
            f"mvsplat lifter: MVSplat's code is not importable ({exc}); clone MVSplat, install its "
            "requirements and put the repository root on PYTHONPATH (docs/lifters.md)"
        ) from None
    for folder in getattr(mvsplat_src, "__path__", []):
        root = Path(folder).resolve().parent
        if (root / "config" / "main.yaml").is_file():
            return root
    raise UserError(
        "mvsplat lifter: the importable 'src' package is not an MVSplat checkout (no config/main.yaml beside it)",
        Path(list(getattr(mvsplat_src, "__path__", ["src"]))[0]),
    )


def compose_mvsplat_config(root: Path, experiment: str = EXPERIMENT, num_views: int = 2) -> Any:
    """MVSplat's config as ``python -m src.main +experiment=re10k mode=test`` composes it (Hydra: main.yaml and
    the experiment's overrides of the encoder: depth candidates, U-Net sizes, attention), for ``num_views``
    context views (its U-Nets attend across exactly that many views)."""
    hydra = require_extra("hydra", "mvsplat", "the mvsplat lifter (MVSplat's config system, Hydra)")
    compose, initialize_config_dir = hydra.compose, hydra.initialize_config_dir
    overrides = [f"+experiment={experiment}", "mode=test", f"dataset.view_sampler.num_context_views={num_views}"]
    with warnings.catch_warnings(), initialize_config_dir(config_dir=str(root / "config"), version_base=None):
        warnings.filterwarnings("ignore", message=".*_self_", category=UserWarning)  # MVSplat's main.yaml, as is
        return compose("main", overrides=overrides)


def build_mvsplat_encoder(cfg: Any) -> nn.Module:
    """MVSplat's encoder built by its own code from a composed config: the global config is set first (the
    encoder reads ``mode`` and the number of context views from it while it is built), then the encoder
    config is typed as MVSplat's ``load_typed_config`` does (dacite) and given to ``get_encoder``."""
    dacite = require_extra("dacite", "mvsplat", "the mvsplat lifter (MVSplat's typed configs, dacite)")
    Config, from_dict = dacite.Config, dacite.from_dict
    from omegaconf import OmegaConf
    from src.global_cfg import set_cfg
    from src.model.encoder import EncoderCostVolumeCfg, get_encoder

    set_cfg(cfg)
    typed = from_dict(
        EncoderCostVolumeCfg,
        OmegaConf.to_container(cfg.model.encoder, resolve=True),
        config=Config(type_hooks={Path: Path}),
    )
    encoder, _ = get_encoder(typed)
    return encoder


def load_encoder_weights(encoder: nn.Module, weights: dict[str, Tensor], checkpoint: Path) -> nn.Module:
    """Load exactly (every key, every shape), or stop with one line naming the first mismatches."""
    own = encoder.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and weights[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        detail = "; ".join(
            x
            for x in (
                f"size mismatch ({len(wrong)}): {', '.join(wrong[:2])}" if wrong else "",
                f"missing ({len(missing)}): {', '.join(missing[:2])}" if missing else "",
                f"unexpected ({len(unexpected)}): {', '.join(unexpected[:2])}" if unexpected else "",
            )
            if x
        )
        raise UserError(
            f"mvsplat lifter: the checkpoint does not fit MVSplat's {EXPERIMENT} encoder ({detail})", checkpoint
        )
    encoder.load_state_dict(weights, strict=True)
    return encoder.eval()


def load_mvsplat_encoder(checkpoint: str | Path, num_views: int = 2, experiment: str = EXPERIMENT) -> nn.Module:
    """MVSplat's cost-volume encoder with a checkpoint's weights, built as its ``+experiment=re10k`` run builds it
    (its repository root on ``PYTHONPATH``; its package is named ``src``)."""
    ckpt = Path(checkpoint).expanduser()
    root = mvsplat_root()
    if not ckpt.is_file():
        raise UserError("mvsplat lifter: no such checkpoint", ckpt)
    weights = encoder_state(read_checkpoint_state(ckpt), ckpt)
    encoder = build_mvsplat_encoder(compose_mvsplat_config(root, experiment, num_views))
    return load_encoder_weights(encoder, weights, ckpt)


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
    return MVSplatLifter(
        load_mvsplat_encoder(ckpt, 2), near, far, build_for_views=lambda views: load_mvsplat_encoder(ckpt, views)
    )
