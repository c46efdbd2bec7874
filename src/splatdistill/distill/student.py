"""The LoRA student, its EMA teacher, and export of the student as a plain timm checkpoint.

The student is the backbone with peft LoRA adapters on each block's attention ``qkv`` and ``proj``
linears (the reference setting: r=8, alpha=8, dropout 0.1); everything else stays frozen. The teacher
is an exponential moving average of the *whole* student (backbone with adapters, plus the projection
head), refreshed every ``every`` steps, so it improves as the student learns.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import save_file
from torch import nn

from splatdistill.atomic import atomic_write
from splatdistill.backbones.vit import ViTBackbone

LORA_TARGET_REGEX = r".*blocks\.\d+\.attn\.(qkv|proj)"


@dataclass
class LoraSettings:
    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.1
    target_modules: str = LORA_TARGET_REGEX


def add_lora(backbone: ViTBackbone, settings: LoraSettings | None = None) -> ViTBackbone:
    """Insert peft LoRA adapters in place; freeze all non-adapter weights. Returns ``backbone``."""

    s = settings or LoraSettings()
    if not isinstance(backbone, ViTBackbone):
        raise TypeError("LoRA students need a ViT backbone (attention qkv/proj linears)")
    config = LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules, bias="none")
    for p in backbone.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(config, backbone.model)
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    backbone.lora_settings = s  # type: ignore[attr-defined]
    return backbone


def lora_module_names(module: nn.Module) -> list[str]:
    """Names of the modules that carry a LoRA adapter."""

    return [name for name, m in module.named_modules() if isinstance(m, LoraLayer)]


def trainable_parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def merged_copy(backbone: ViTBackbone) -> ViTBackbone:
    """A deep copy with every LoRA adapter merged into its base linear and removed."""

    merged = copy.deepcopy(backbone).cpu()
    for name, module in list(merged.model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = merged.model.get_submodule(parent_name) if parent_name else merged.model
            setattr(parent, child, module.get_base_layer())
    for p in merged.parameters():
        p.requires_grad_(False)
    return merged


def export_timm_safetensors(backbone: ViTBackbone, path: str | Path, extra_metadata: dict | None = None) -> Path:
    """Write the (LoRA-merged) backbone as a timm ``VisionTransformer`` state dict in safetensors.

    The file loads with ``strict=True`` into ``timm.create_model(arch)``; its metadata records the
    arch, the position-interpolation convention and the preprocessing (mean, std, resize kernel) the features
    were trained with.
    """

    merged = merged_copy(backbone) if lora_module_names(backbone) else backbone
    state = {k: v.detach().cpu().contiguous() for k, v in merged.model.state_dict().items()}
    meta = {
        "format": "timm",
        "arch": backbone.arch,
        "pos_interp": backbone.pos_interp,
        "producer": "splatdistill",
        "preprocess": backbone.preprocessing.to_json(),
    }
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


class EMATeacher(nn.Module):
    """EMA copy of a student module: ``t <- m t + (1 - m) s`` every ``every`` calls to ``step``.

    Parameters the student trains (LoRA adapters, head) and floating-point buffers are averaged by
    name. Frozen parameters are equal in both and are left untouched: averaging a value with itself
    would only add float rounding. The teacher keeps the student's LoRA structure; its dropout is off
    because it stays in eval mode.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.999, every: int = 10, source: nn.Module | None = None):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        if every < 1:
            raise ValueError(f"EMA interval must be >= 1, got {every}")
        # ``source``: a teacher of another architecture than the student (kept fixed: momentum 1)
        if source is not None and momentum != 1.0:
            raise ValueError("a teacher of another architecture than the student can only stay fixed (momentum 1)")
        self.module = copy.deepcopy(student if source is None else source).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.momentum = momentum
        self.every = every
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> EMATeacher:  # the teacher never trains
        super().train(False)
        return self

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """Apply one EMA update now."""
        m = self.momentum
        if m == 1.0:  # a frozen teacher (and the only kind a student of another architecture can have)
            return
        s_params = dict(student.named_parameters())
        for name, t in self.module.named_parameters():
            src = s_params[name]
            if src.requires_grad:
                t.mul_(m).add_(src.detach().to(t.dtype), alpha=1.0 - m)
        s_bufs = dict(student.named_buffers())
        for name, t in self.module.named_buffers():
            if name in s_bufs and t.is_floating_point():
                t.mul_(m).add_(s_bufs[name].detach().to(t.dtype), alpha=1.0 - m)

    def step(self, student: nn.Module) -> bool:
        """Count one optimiser step; update when the count reaches a multiple of ``every``."""
        self.steps += 1
        if int(self.steps) % self.every == 0:
            self.update(student)
            return True
        return False

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def lora_settings_dict(backbone: nn.Module) -> dict:
    s = getattr(backbone, "lora_settings", None)
    return asdict(s) if s is not None else {}


def describe_lora(backbone: nn.Module) -> str:
    return json.dumps(
        {
            "adapters": len(lora_module_names(backbone)),
            "trainable": trainable_parameter_count(backbone),
            **lora_settings_dict(backbone),
        }
    )
