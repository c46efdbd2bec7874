"""How a backbone wants its pixels: mean, std, resize kernel and native input size.

A model is only fed correctly with the statistics it was trained with: CLIP uses OpenAI's mean/std
(0.4815.../0.2686...), SigLIP and most augreg ViTs 0.5/0.5, DINOv2/DeiT-3/MAE ImageNet's. The numbers come,
in this order of precedence, from an explicit override (``SPEC?mean=..&std=..``), the checkpoint's own
metadata (our exports record them), or timm's ``pretrained_cfg`` of the architecture and tag, resolved with
``timm.data.resolve_data_config`` exactly as timm's own transforms do. They are stored as JSON under the
``preprocess`` key of every exported student / teacher safetensors and in a ``local-dir`` export's config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from timm.data import resolve_data_config
from torch import nn

from splatdistill.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Interpolation = Literal["bilinear", "bicubic", "nearest"]
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
METADATA_KEY = "preprocess"


@dataclass(frozen=True)
class Preprocessing:
    """What ``Backbone.prepare`` does to RGB in [0, 1]: resize with ``interpolation`` to a multiple of the
    patch size, then ``(x - mean) / std``. ``input_size`` (H, W) is the resolution the weights were trained
    at (informative: the backbones take any size); ``source`` says where the numbers came from."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: Interpolation = "bicubic"
    input_size: tuple[int, int] = (224, 224)
    source: str = "default"

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UserError(f"preprocessing needs 3 mean and 3 std values, got {self.mean} / {self.std}")
        if min(self.std) <= 0:
            raise UserError(f"preprocessing std must be positive, got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"unknown interpolation {self.interpolation!r} (one of {', '.join(INTERPOLATIONS)})")

    def key(self) -> str:
        """The numbers that change features (not ``source``), for cache keys and comparisons."""
        return json.dumps([list(self.mean), list(self.std), self.interpolation])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def timm_data_config(self) -> dict[str, Any]:
        """The fields of a timm ``pretrained_cfg`` / data config (``mean``, ``std``, ``interpolation``,
        ``input_size``, ``crop_pct`` 1: the backbones see the whole image)."""
        return {
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "interpolation": self.interpolation,
            "input_size": (3, *self.input_size),
            "crop_pct": 1.0,
            "crop_mode": "center",
        }


def _floats3(value: Any, what: str) -> tuple[float, float, float]:
    if isinstance(value, str):
        value = [v for v in value.replace("/", ",").split(",") if v.strip()]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"preprocessing {what} must be 3 numbers, got {value!r}") from None
    if len(out) == 1:
        out = out * 3
    if len(out) != 3:
        raise UserError(f"preprocessing {what} must be 3 numbers, got {value!r}")
    return out  # type: ignore[return-value]


def from_mapping(cfg: Mapping[str, Any], source: str) -> Preprocessing:
    """From a timm data config / ``pretrained_cfg``-like mapping (``input_size`` (C, H, W) or (H, W))."""
    size = tuple(int(v) for v in cfg.get("input_size", (224, 224)))[-2:]
    interp = str(cfg.get("interpolation", "bicubic"))
    if interp not in INTERPOLATIONS:  # timm also knows 'random' / 'lanczos' for training-time transforms
        interp = "bicubic"
    return Preprocessing(
        _floats3(cfg.get("mean", IMAGENET_MEAN), "mean"),
        _floats3(cfg.get("std", IMAGENET_STD), "std"),
        interp,
        size,
        source,
    )  # type: ignore[arg-type]


def from_timm(model: nn.Module) -> Preprocessing:
    """timm's resolved data config for ``model`` (its architecture and pretrained tag)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture", type(model).__name__)
    tag = cfg.get("tag")
    return from_mapping(resolve_data_config({}, model=model), f"timm pretrained_cfg {name}{'.' + tag if tag else ''}")


def from_metadata(meta: Mapping[str, str]) -> Preprocessing | None:
    """The preprocessing a safetensors file records (None when it records none)."""
    raw = meta.get(METADATA_KEY)
    if not raw:
        return None
    try:
        d = json.loads(raw)
        return replace(from_mapping(d, d.get("source", "checkpoint")), source=f"checkpoint ({d.get('source', '?')})")
    except (ValueError, TypeError, AttributeError) as exc:
        raise UserError(f"the file's '{METADATA_KEY}' metadata is not valid preprocessing JSON ({exc})") from None


def split_override(spec: str) -> tuple[str, dict[str, str]]:
    """``SPEC?mean=0.5,0.5,0.5&std=0.5&interpolation=bilinear&size=224`` -> (SPEC, overrides)."""
    if "?" not in spec:
        return spec, {}
    base, _, query = spec.rpartition("?")
    out: dict[str, str] = {}
    for part in query.split("&"):
        k, eq, v = part.partition("=")
        if not eq or k not in ("mean", "std", "interpolation", "size"):
            raise UserError(
                f"bad preprocessing override {part!r} in {spec!r}: expected mean=, std=, "
                "interpolation= or size= (e.g. SPEC?mean=0.5,0.5,0.5&std=0.5,0.5,0.5)"
            )
        out[k] = v
    return base, out


def apply_override(pre: Preprocessing, over: Mapping[str, str]) -> Preprocessing:
    if not over:
        return pre
    fields: dict[str, Any] = {"source": f"override of {pre.source}"}
    if "mean" in over:
        fields["mean"] = _floats3(over["mean"], "mean")
    if "std" in over:
        fields["std"] = _floats3(over["std"], "std")
    if "interpolation" in over:
        fields["interpolation"] = over["interpolation"]
    if "size" in over:
        try:
            hw = [int(v) for v in over["size"].lower().split("x")]
        except ValueError:
            raise UserError(f"preprocessing size must be N or HxW, got {over['size']!r}") from None
        fields["input_size"] = (hw[0], hw[-1])
    return replace(pre, **fields)
