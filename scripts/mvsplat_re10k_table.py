"""Record the key -> shape table of MVSplat's re10k encoder, with MVSplat's own classes.

Why: ``lifter=mvsplat:CKPT`` must build the encoder exactly as MVSplat's ``+experiment=re10k`` does, or the
released ``re10k.ckpt`` does not load. The project's tests check the adapter against this table without
MVSplat installed (tests/test_mvsplat.py); this script is how the table was made, and how to remake it.

It composes MVSplat's config as its ``src/main.py`` does (Hydra, ``main.yaml`` + ``+experiment=re10k``,
``mode=test``), sets MVSplat's global config, builds the encoder with ``get_encoder`` and writes every
``encoder.*`` key of the Lightning checkpoint with its shape, the composed encoder config, the base
``costvolume.yaml`` config, the experiment's encoder overrides and the keys whose shape differs when the
encoder is built from ``costvolume.yaml`` alone. ``--ckpt`` also saves a random-weight checkpoint in the
released checkpoint's layout (a Lightning checkpoint whose ``state_dict`` holds ``encoder.``-prefixed keys).

Run in an environment with MVSplat's requirements and its repository root on PYTHONPATH (docs/lifters.md):

    PYTHONPATH=/path/to/mvsplat python scripts/mvsplat_re10k_table.py \
        --out tests/fixtures/mvsplat_re10k_encoder.json --ckpt /tmp/re10k_random.ckpt --commit <mvsplat commit>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import src  # MVSplat's package
import torch
from dacite import Config, from_dict
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from src.global_cfg import set_cfg
from src.model.encoder import EncoderCostVolumeCfg, get_encoder


def shapes(encoder: torch.nn.Module) -> dict[str, list[int]]:
    return {f"encoder.{k}": list(v.shape) for k, v in encoder.state_dict().items()}


def build(cfg, encoder_cfg) -> torch.nn.Module:
    set_cfg(cfg)  # as src/main.py does before building the model
    typed = from_dict(EncoderCostVolumeCfg, OmegaConf.to_container(encoder_cfg), config=Config(type_hooks={Path: Path}))
    return get_encoder(typed)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--ckpt", type=Path, default=None, help="also save a random-weight checkpoint here")
    ap.add_argument("--commit", default="unknown", help="the MVSplat commit the table was made from")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    root = Path(list(src.__path__)[0]).resolve().parent  # a namespace package: no __init__.py
    with initialize_config_dir(config_dir=str(root / "config"), version_base=None):
        cfg = compose("main", overrides=["+experiment=re10k", "mode=test"])
    base = OmegaConf.load(root / "config/model/encoder/costvolume.yaml")
    overrides = OmegaConf.load(root / "config/experiment/re10k.yaml").model.encoder

    torch.manual_seed(args.seed)
    encoder = build(cfg, cfg.model.encoder)
    table = shapes(encoder)
    base_table = shapes(build(cfg, base))
    differ = sorted(k for k in set(table) | set(base_table) if table.get(k) != base_table.get(k))
    doc = {
        "what": "MVSplat re10k encoder: Lightning checkpoint state_dict key -> shape (made by scripts/mvsplat_re10k_table.py)",
        "mvsplat_commit": args.commit,
        "experiment": "re10k",
        "num_context_views": int(cfg.dataset.view_sampler.num_context_views),
        "encoder_config": OmegaConf.to_container(cfg.model.encoder),
        "base_encoder_config": OmegaConf.to_container(base),
        "experiment_encoder_overrides": OmegaConf.to_container(overrides),
        "differ_when_built_from_costvolume_yaml_alone": differ,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "keys": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=0) + "\n")
    print(
        f"{len(table)} encoder keys, {doc['parameters']} parameters; {len(differ)} keys differ when built from "
        f"costvolume.yaml alone -> {args.out}"
    )
    if args.ckpt:
        import pytorch_lightning

        state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
        torch.save(
            {
                "epoch": 0,
                "global_step": 0,
                "pytorch-lightning_version": pytorch_lightning.__version__,
                "state_dict": state,
                "optimizer_states": [],
                "lr_schedulers": [],
            },
            args.ckpt,
        )
        print(f"random-weight checkpoint in the re10k layout -> {args.ckpt} ({args.ckpt.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
