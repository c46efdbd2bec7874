"""``lifter=mvsplat:CKPT`` builds MVSplat's encoder as its ``+experiment=re10k`` run does, without MVSplat here.

The released ``re10k.ckpt`` only loads into an encoder built from ``main.yaml`` + ``experiment/re10k.yaml``
(Hydra composition) with MVSplat's global config set first. ``fixtures/mvsplat_re10k_encoder.json`` holds,
as data, what MVSplat's own classes give (``scripts/mvsplat_re10k_table.py``, run with MVSplat installed):
the checkpoint's key -> shape table, the composed encoder config, the base ``costvolume.yaml`` and the
experiment's overrides. Here a stand-in MVSplat checkout (its config files written from those recorded
configs, its ``get_encoder`` recording what it is given) checks the adapter's composition, the order of
``set_cfg`` and construction, and the checkpoint layout; the encoder's shapes are derived from the
config it is given by MVSplat's layer formulas, so a wrong composition gives real size mismatches.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from splatdistill.errors import UserError

TABLE = json.loads((Path(__file__).parent / "fixtures" / "mvsplat_re10k_encoder.json").read_text())
P = "encoder.depth_predictor."

# The stand-in MVSplat package (a namespace package, like MVSplat's `src`: no __init__.py).
GLOBAL_CFG = """
cfg = None
def get_cfg():
    return cfg
def set_cfg(new_cfg):
    global cfg
    cfg = new_cfg
"""
CONFIG = """
from pathlib import Path
from dacite import Config, from_dict
from omegaconf import OmegaConf
def load_typed_config(cfg, data_class, extra_type_hooks={}):
    return from_dict(data_class, OmegaConf.to_container(cfg), config=Config(type_hooks={Path: Path}))
"""
ENCODER = """
from dataclasses import dataclass
from src.global_cfg import get_cfg
RECORD = []
BUILD = None
@dataclass
class EncoderCostVolumeCfg:
    name: str
    d_feature: int
    num_depth_candidates: int
    num_surfaces: int
    gaussians_per_pixel: int
    downscale_factor: int
    shim_patch_size: int
    costvolume_unet_feat_dim: int
    costvolume_unet_channel_mult: list
    costvolume_unet_attn_res: list
    depth_unet_feat_dim: int
    depth_unet_attn_res: list
    depth_unet_channel_mult: list
    gaussian_adapter: dict
    unimatch_weights_path: str | None
def get_encoder(cfg):
    g = get_cfg()
    RECORD.append({"cfg": cfg, "global_cfg_set": g is not None})
    # what MVSplat's EncoderCostVolume.__init__ reads from the global config while it is built
    RECORD[-1].update(mode=g.mode, views=g.dataset.view_sampler.num_context_views)
    return BUILD(cfg), None
"""


def derived_shapes(cfg) -> dict[str, list[int] | None]:
    """Shapes MVSplat's layers take from the encoder config (depth_predictor_multiview.py, ldm_unet): the
    cost-volume projection, residual and low-res depth head (depth candidates + features), the refinement
    U-Net's input conv and disparity head (its width); ``None``: a U-Net key that cannot exist (each U-Net
    has 2 x len(channel_mult) input blocks, with attention at its coarsest level, 2**(levels-1), only if
    that resolution is in its attn_res)."""
    ndc, d, cv, du = cfg.num_depth_candidates, cfg.d_feature, cfg.costvolume_unet_feat_dim, cfg.depth_unet_feat_dim
    out: dict[str, list[int] | None] = {
        P + "corr_refine_net.0.weight": [cv, ndc + d, 3, 3],
        P + "regressor_residual.weight": [ndc, ndc + d, 1, 1],
        P + "depth_head_lowres.0.weight": [2 * ndc, ndc, 3, 3],
        P + "depth_head_lowres.2.weight": [ndc, 2 * ndc, 3, 3],
        P + "refine_unet.0.weight": [du, 3 + du + 2, 3, 3],
        P + "to_disparity.0.weight": [2 * du, du, 3, 3],
    }
    for net, mult, attn in (
        ("corr_refine_net.3", cfg.costvolume_unet_channel_mult, cfg.costvolume_unet_attn_res),
        ("refine_unet.3", cfg.depth_unet_channel_mult, cfg.depth_unet_attn_res),
    ):
        levels, attended = len(mult), 2 ** (len(mult) - 1) in list(attn)
        for key in TABLE["keys"]:
            m = re.match(rf"{re.escape(P + net)}\.(input|output)_blocks\.(\d+)\.(\d+)\.", key)
            if m and (int(m[2]) >= 2 * levels or (m[3] == "1" and "qkv" in key and not attended)):
                out[key] = None
    return out


def encoder_from_config(cfg) -> torch.nn.Module:
    """A module with the table's keys, shaped by what ``cfg`` derives (the stand-in for MVSplat's encoder)."""
    shapes = {k: v for k, v in TABLE["keys"].items()}
    shapes.update(derived_shapes(cfg))
    root = torch.nn.Module()
    root.cfg = cfg
    for key, shape in shapes.items():
        if shape is None:
            continue
        *path, name = key[len("encoder.") :].split(".")
        m = root
        for part in path:
            if not hasattr(m, part):
                m.add_module(part, torch.nn.Module())
            m = getattr(m, part)
        m.register_buffer(name, torch.zeros(shape))
    return root


@pytest.fixture
def fake_mvsplat(tmp_path, monkeypatch):
    """A stand-in MVSplat checkout on sys.path: config files written from the recorded configs."""
    root = tmp_path / "mvsplat"
    files = {
        "config/main.yaml": {
            "defaults": [{"model/encoder": "costvolume"}],
            "mode": "train",
            "seed": 111123,
            "dataset": {"view_sampler": {"num_context_views": TABLE["num_context_views"]}},
        },
        "config/model/encoder/costvolume.yaml": TABLE["base_encoder_config"],
        "config/experiment/re10k.yaml": {"model": {"encoder": TABLE["experiment_encoder_overrides"]}},
    }
    for rel, doc in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(("# @package _global_\n" if "experiment" in rel else "") + yaml.safe_dump(doc))
    for rel, text in {
        "src/global_cfg.py": GLOBAL_CFG,
        "src/config.py": CONFIG,
        "src/model/encoder/__init__.py": ENCODER,
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(root))
    import src.model.encoder as enc

    monkeypatch.setattr(enc, "BUILD", encoder_from_config)
    yield enc
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        sys.modules.pop(name, None)


def table_checkpoint(path: Path, change: str | None = None) -> Path:
    """A Lightning checkpoint with the released re10k layout (``state_dict`` of ``encoder.*`` keys)."""
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s if k != change else [s[0] + 1, *s[1:]], generator=g) for k, s in TABLE["keys"].items()}
    torch.save({"epoch": 0, "global_step": 300000, "pytorch-lightning_version": "2.6.6", "state_dict": state}, path)
    return path


def test_mvsplat_composes_the_re10k_experiment(fake_mvsplat, tmp_path):
    """The encoder config the adapter builds from derives exactly the re10k table's shapes, and the
    checkpoint loads through ``lifter=mvsplat:CKPT`` (today's adapter: costvolume.yaml alone -> mismatches)."""
    from splatdistill.lifters import build_lifter

    ckpt = table_checkpoint(tmp_path / "re10k.ckpt")
    lifter = build_lifter(f"mvsplat:{ckpt}:1:100")
    cfg = fake_mvsplat.RECORD[-1]["cfg"]
    for key, shape in derived_shapes(cfg).items():
        assert TABLE["keys"].get(key) == shape, (key, TABLE["keys"].get(key), shape)
    expected = TABLE["encoder_config"]
    for field in (
        "num_depth_candidates",
        "costvolume_unet_feat_dim",
        "costvolume_unet_attn_res",
        "depth_unet_feat_dim",
        "depth_unet_attn_res",
        "depth_unet_channel_mult",
        "gaussians_per_pixel",
        "num_surfaces",
    ):
        assert (
            list(getattr(cfg, field)) == expected[field]
            if isinstance(expected[field], list)
            else getattr(cfg, field) == expected[field]
        ), field
    assert lifter.multiple == 16 and lifter.near == 1.0 and lifter.far == 100.0
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    own = lifter.encoder.state_dict()
    assert len(own) == len(TABLE["keys"]) and all(torch.equal(own[k[8:]], v) for k, v in weights.items())


def test_mvsplat_sets_global_cfg_before_building(fake_mvsplat, tmp_path):
    """MVSplat's encoder reads ``mode`` and the number of context views from its global config while it is
    built: the adapter sets it first, in test mode (no UniMatch download), for the views it lifts."""
    from splatdistill.lifters import build_lifter

    lifter = build_lifter(f"mvsplat:{table_checkpoint(tmp_path / 're10k.ckpt')}")
    first = fake_mvsplat.RECORD[-1]
    assert first["global_cfg_set"] and first["mode"] == "test" and first["views"] == 2
    lifter.encoder_for(3)  # three context views: an encoder whose U-Nets attend across three
    assert fake_mvsplat.RECORD[-1]["views"] == 3 and len(fake_mvsplat.RECORD) == 2


def test_mvsplat_checkpoint_mismatch_is_one_line(fake_mvsplat, tmp_path):
    from splatdistill.lifters import build_lifter

    bad = table_checkpoint(tmp_path / "other.ckpt", change=P + "depth_head_lowres.0.weight")
    with pytest.raises(
        UserError,
        match=r"does not fit MVSplat's re10k encoder \(size mismatch \(1\): "
        r"depth_predictor.depth_head_lowres.0.weight \(257, 128, 3, 3\)",
    ):
        build_lifter(f"mvsplat:{bad}")
    torch.save({"state_dict": {"model.x": torch.zeros(1)}}, tmp_path / "none.ckpt")
    with pytest.raises(UserError, match="no 'encoder.\\*' weights"):
        build_lifter(f"mvsplat:{tmp_path / 'none.ckpt'}")
