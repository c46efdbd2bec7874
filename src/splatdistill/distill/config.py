"""The training configuration: one flat dataclass, loadable from YAML, overridable with ``key=value``.

Defaults follow the paper (DESIGN.md section 1) except where a CPU run needs smaller numbers; each such
difference is marked "CPU default" and the paper's value is given.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import yaml

from splatdistill.errors import UserError

LOSSES = ("dino", "cosine", "l1", "mse")


@dataclass
class TrainConfig:
    # --- data -------------------------------------------------------------------------------------
    data: str = "rooms"  # a dataset folder (see docs/data-format.md) or "rooms" (embedded, built on demand)
    split: str = "train"
    image_size: int = 224  # images are resized to image_size x image_size (a multiple of the patch size)
    render_size: int = 112  # resolution of the upsample / lift / splat / blend stage (CPU default)
    num_targets: int = 1  # target views per sample
    context_gap: int = 0  # frames between the two context views; 0 = the sampler's default
    mask: str = "auto"  # segments for upsampling/blending: auto | instance | slic | felzenszwalb
    # --- model ------------------------------------------------------------------------------------
    backbone: str = "dinov2_vits14"
    lora_r: int = 8
    lora_alpha: float = 8.0
    lora_dropout: float = 0.1
    # --- method -----------------------------------------------------------------------------------
    lifter: str = "depth"  # depth (dataset depth) | predictor:PATH | ply:DIR
    renderer: str = "auto"  # auto | torch | gsplat
    gaussian_scale: float = 1.0  # Gaussian footprint as a multiple of the pixel footprint at its depth
    gaussian_opacity: float = 0.95
    blend_alpha: float = 0.5  # f <- a f + (1 - a) segment mean; 1.0 = the "no blending" variant
    min_coverage: float = 0.5  # a target token is supervised if its rendered coverage reaches this
    loss: str = "dino"  # dino (prototype head, as the paper) | cosine | l1 | mse
    prototypes: int = 4096  # DINO head prototypes (CPU default; the paper uses 65536)
    head_hidden: int = 2048
    head_bottleneck: int = 256
    teacher_temp: float = 1.0
    student_temp: float = 1.0
    consistency_weight: float = 0.0  # cross-view term between target views (needs num_targets >= 2)
    ema_momentum: float = 0.999
    ema_every: int = 10
    # --- baseline (splatdistill.baselines.fit3d; docs/lifters.md) -----------------------------------
    method: str = "snd"  # snd (Splat-and-Distill) | fit3d (FiT3D-style per-scene optimised feature field, loss=l1)
    fit3d_feature_dim: int = 32  # per-Gaussian feature size of the field
    fit3d_iterations: int = 200  # Adam steps per scene
    fit3d_views: int = 16  # views of a scene the field is fitted to
    fit3d_lift_views: int = 8  # views whose depth places the field's Gaussians
    fit3d_stride: int = 2  # lift every stride-th pixel
    fit3d_cache: str = ""  # folder of fitted fields; "" = <out>/fit3d
    # --- optimisation -----------------------------------------------------------------------------
    steps: int = 1000
    batch_size: int = 1
    lr: float = 2e-5
    head_lr: float | None = None  # default: same as lr
    weight_decay: float = 0.0
    warmup_pct: float = 0.01
    grad_clip: float = 0.0  # 0 = off
    max_minutes: float = 0.0  # stop early (cleanly, with a checkpoint; --resume continues) after this wall time; 0 = off.
    # The LR schedule runs over `steps`, not over time: a run cut short by max_minutes ends before its decay.
    # --- held-out agreement (loss and teacher-student cosine on scenes not trained on) ----------------
    val_split: str = "val"
    val_samples: int = 16  # 0 = off
    val_every: int = 0  # steps between held-out measurements; 0 = only at the start and the end
    # --- run --------------------------------------------------------------------------------------
    out: str = "runs/snd"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 100
    log_every: int = 10
    num_workers: int = 0
    progress: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes stored with the run

    def validate(self) -> "TrainConfig":
        if self.loss not in LOSSES:
            raise UserError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if not 0.0 <= self.blend_alpha <= 1.0:
            raise UserError(f"blend_alpha must be in [0, 1], got {self.blend_alpha}")
        if not 0.0 <= self.ema_momentum <= 1.0:
            raise UserError(f"ema_momentum must be in [0, 1], got {self.ema_momentum}")
        for name in ("steps", "batch_size", "num_targets", "ema_every", "image_size", "render_size", "prototypes"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.consistency_weight > 0 and self.num_targets < 2:
            raise UserError("consistency_weight > 0 needs num_targets >= 2")
        if self.renderer not in ("auto", "torch", "gsplat"):
            raise UserError(f"renderer must be auto, torch or gsplat, got {self.renderer!r}")
        if self.method not in ("snd", "fit3d"):
            raise UserError(f"method must be snd or fit3d, got {self.method!r}")
        if self.method == "fit3d" and self.loss == "dino":
            raise UserError("method=fit3d distils with L1 to the field's renders (as FiT3D): pass loss=l1")
        return self

    # --- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UserError(f"{source}: unknown option(s) {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(k, v, hints[k], source) for k, v in values.items()}).validate()

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Sequence[str] = ()) -> "TrainConfig":
        """Defaults, then the YAML file (if any), then ``key=value`` overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise UserError("config file not found", p)
            try:
                loaded = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as exc:
                raise UserError(f"invalid YAML ({str(exc).splitlines()[0]})", p) from None
            if not isinstance(loaded, dict):
                raise UserError("config must be a mapping of option: value", p)
            values.update(loaded)
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise UserError(f"override {item!r} is not key=value")
            try:
                values[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                values[key.strip()] = raw
        return cls.from_dict(values, source=str(path) if path else "overrides")


def _coerce(name: str, value: Any, hint: Any, source: str) -> Any:
    """Check/convert one value to the field's annotated type (YAML gives ints for floats etc.)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
        if hint is dict or typing.get_origin(hint) is dict:
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise UserError(f"{source}: option {name} expects {getattr(hint, '__name__', hint)}, got {value!r}")
