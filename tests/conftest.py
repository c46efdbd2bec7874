"""Shared fixtures. The user cache is redirected to a per-session temp dir, except the converted
DINOv2 weights, which are reused from the real cache when present (conversion is checked separately)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def dinov2():
    from splatdistill.backbones import load_backbone

    return load_backbone("dinov2_vits14")
