"""Reading ViT state dicts in the formats users have, normalised to timm's key names.

Supported: timm state dicts; the official DINOv2 torch.hub checkpoints (timm names plus ``mask_token``,
optionally chunked blocks ``blocks.0.3.``); the Splat-and-Distill release (``dinov2_small_snd.pth``:
a timm state dict with LoRA merged, possibly wrapped in ``{"model": ...}`` / prefixed); Hugging Face
``Dinov2Model`` names; un-merged peft LoRA checkpoints (merged here); our own exports.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from splatdistill.backbones.dinov2_onnx import fuse_qkv, hf_to_timm_key
from splatdistill.errors import UserError
from splatdistill.safe_load import load_torch_file

WRAPPER_KEYS = ("state_dict", "model", "student", "teacher", "module", "backbone", "model_state_dict")
PREFIXES = ("module.", "_orig_mod.", "base_model.model.", "backbone.", "model.", "encoder.", "student.", "teacher.")
HEADS_BY_DIM = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1536: 24}
DINOV2_ARCH_BY_DIM = {
    384: "vit_small_patch14_dinov2",
    768: "vit_base_patch14_dinov2",
    1024: "vit_large_patch14_dinov2",
    1536: "vit_giant_patch14_dinov2",
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth``/``.pt``/``.bin``/``.safetensors`` file as a flat tensor dict, with clear errors."""
    path = Path(path)
    if not path.exists():
        raise UserError("weights file not found", path)
    if path.is_dir():
        raise UserError("expected a weights file, got a directory", path)
    if path.stat().st_size == 0:
        raise UserError("weights file is empty", path)
    if path.suffix == ".safetensors":
        try:
            return require_finite(load_file(str(path)), path)
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"corrupt safetensors file ({str(exc).splitlines()[0]})", path) from None
    hint = _run_file_hint(path)
    try:
        obj = load_torch_file(path, "weights file")
    except UserError:
        if hint:
            raise UserError(hint, path) from None
        raise
    if hint and isinstance(obj, Mapping) and {"optimizer", "step"} <= obj.keys():
        raise UserError(hint, path)
    return require_finite(unwrap_state_dict(obj, path), path)


def _run_file_hint(path: Path) -> str | None:
    """What to load instead when ``path`` is a run's resume state rather than weights."""
    if path.name == "checkpoint.pt" or (path.parent / "student.safetensors").exists():
        student = path.parent / "student.safetensors"
        where = str(student) if student.exists() else "student.safetensors (written when the run finishes)"
        return (
            f"this is a training run's resume state (optimizer, adapters, RNG), not a backbone; load the "
            f"exported student instead: {where}"
        )
    if path.name == "train_state.pt":
        return f"this is a predictor run's resume state; use the folder itself as lifter=predictor:{path.parent}"
    return None


def require_finite(state: dict[str, torch.Tensor], path: Path | str) -> dict[str, torch.Tensor]:
    """Refuse weights with NaN/inf entries (a diverged run's export must not evaluate as a model)."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(
            f"the weights hold non-finite values (NaN/inf) in {len(bad)} tensor(s), e.g. {bad[0]}; "
            "the run that wrote them diverged",
            path,
        )
    return state


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for other formats or on error)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception:
        return {}


def unwrap_state_dict(obj: object, path: Path | str = "<state dict>") -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common checkpoint wrappers."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise UserError(f"checkpoint holds a {type(obj).__name__}, not a state dict", path)
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserError("checkpoint holds no tensors", path)
    return tensors


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if state and all(k.startswith(p) for k in state):
                state = {k[len(p) :]: v for k, v in state.items()}
                changed = True
    return state


def _merge_lora(state: dict[str, torch.Tensor], scaling: float | None) -> dict[str, torch.Tensor]:
    """Merge un-merged peft LoRA weights (``x.base_layer.weight`` + ``x.lora_B @ x.lora_A``)."""
    if not any(".lora_A." in k for k in state):
        return {k.replace(".base_layer.", "."): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    for k in [k for k in state if ".lora_A." in k and k.endswith(".weight")]:
        module, adapter = re.match(r"(.+)\.lora_A\.([^.]+)\.weight", k).groups()  # type: ignore[union-attr]
        a = state[k].float()
        b = state[f"{module}.lora_B.{adapter}.weight"].float()
        r = a.shape[0]
        s = scaling if scaling is not None else 1.0  # alpha / r; our default alpha == r
        if scaling is None:
            warnings.warn(f"merging LoRA for {module} with scaling 1 (alpha == r={r} assumed)", stacklevel=2)
        out[f"{module}.weight"] = out[f"{module}.weight"] + (b @ a * s).to(out[f"{module}.weight"].dtype)
    return out


def to_timm_vit_state_dict(
    state: dict[str, torch.Tensor], lora_scaling: float | None = None
) -> dict[str, torch.Tensor]:
    """Normalise a ViT state dict of any supported format to timm's key names."""
    state = _strip_prefixes(dict(state))
    state = _merge_lora(state, lora_scaling)
    if any(k.startswith(("embeddings.", "encoder.layer.")) for k in state):  # Hugging Face Dinov2Model
        mapped = {}
        for k, v in state.items():
            tk = hf_to_timm_key(k)
            if tk is not None:
                mapped[tk] = v
            elif not k.startswith(("pooler.", "embeddings.mask_token")):
                mapped[k] = v
        state = fuse_qkv(mapped)
    # official DINOv2 block chunking: blocks.<chunk>.<i>.xxx -> blocks.<i>.xxx
    if any(re.match(r"blocks\.\d+\.\d+\.", k) for k in state):
        state = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}
    state.pop("mask_token", None)
    return state


def infer_vit_arch(state: Mapping[str, torch.Tensor]) -> tuple[str, dict]:
    """Guess the timm architecture and kwargs of a (timm-named) ViT state dict."""
    if "patch_embed.proj.weight" not in state or "pos_embed" not in state:
        raise ValueError("not a ViT state dict (no patch_embed.proj.weight / pos_embed)")
    w = state["patch_embed.proj.weight"]
    dim, patch = int(w.shape[0]), int(w.shape[-1])
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    n_reg = int(state["reg_token"].shape[1]) if "reg_token" in state else 0
    n_pos = int(state["pos_embed"].shape[1])
    grid = int(round((n_pos - 1) ** 0.5))
    no_embed_class = grid * grid != n_pos - 1
    if no_embed_class:
        grid = int(round(n_pos**0.5))
    kwargs = dict(img_size=grid * patch)
    if patch == 14 and dim in DINOV2_ARCH_BY_DIM and depth in (12, 24, 40):
        arch = DINOV2_ARCH_BY_DIM[dim]
        if n_reg:
            arch = arch.replace("_patch14_", f"_patch14_reg{n_reg}_")
        return arch, kwargs
    kwargs.update(
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=HEADS_BY_DIM.get(dim, max(1, dim // 64)),
        init_values=1e-5 if any(".ls1." in k for k in state) else None,
        reg_tokens=n_reg,
        no_embed_class=no_embed_class,
        class_token="cls_token" in state,
    )
    return vit_name(dim, depth, patch, grid * patch), kwargs


#: timm's ViT sizes by (width, depth)
VIT_SIZES = {(192, 12): "tiny", (384, 12): "small", (768, 12): "base", (1024, 24): "large", (1280, 32): "huge"}


def vit_name(dim: int, depth: int, patch: int, img_size: int) -> str:
    """The timm name of a ViT of these shapes, so messages name what the file holds (the kwargs set every
    shape anyway); an unnamed size builds on vit_base_patch16_224 and is described by its shapes."""
    size = VIT_SIZES.get((dim, depth))
    for name in (f"vit_{size}_patch{patch}_{img_size}", f"vit_{size}_patch{patch}_224"):
        if size and timm.is_model(name):
            return name
    return "vit_base_patch16_224"
