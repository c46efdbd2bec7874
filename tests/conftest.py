"""Shared fixtures. The user cache is redirected to a per-session temp dir, except the converted
DINOv2 weights, which are reused from the real cache when present (conversion is checked separately)."""

from __future__ import annotations

import os

import pytest

from splatdistill.threads import configure_threads, prepare_openmp

os.environ.setdefault("HF_HUB_OFFLINE", "1")
prepare_openmp()  # before torch loads: the suite runs as the commands do (splatdistill.threads)
configure_threads()  # the cores this process may use (affinity, cgroup quota), as the commands choose


@pytest.fixture(scope="session")
def dinov2():
    from splatdistill.backbones import load_backbone

    return load_backbone("dinov2_vits14")


@pytest.fixture(scope="session")
def rooms(tmp_path_factory):
    """A tiny rooms dataset (3 scenes x 5 views at 80 px), built once per session."""
    from _data_helpers import tiny_rooms

    return tiny_rooms(tmp_path_factory)


@pytest.fixture(scope="session")
def scenes(rooms):
    from splatdistill.data import load_dataset

    return load_dataset(rooms)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small ops (they lose 2-3x to thread contention on 2 cores)."""
    from splatdistill.threads import torch_threads

    with torch_threads(1):
        yield
