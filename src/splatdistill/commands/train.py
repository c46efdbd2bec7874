"""``splatdistill train [--config FILE] [key=value ...]``: Splat-and-Distill training.

Every option of :class:`splatdistill.distill.config.TrainConfig` can be set in a YAML file or as
``key=value`` (e.g. ``steps=2000 lr=1e-4 blend_alpha=1.0``). Multi-GPU / multi-node: launch the same
command with ``torchrun --nproc_per_node N -m splatdistill train ...``.
"""

from __future__ import annotations

import argparse

from splatdistill.config import add_config_arguments, config_from_args, dump_yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Splat-and-Distill student", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, "training config")
    p.add_argument("--out", help="run folder (same as out=...)")
    p.add_argument("--data", help="dataset folder or 'rooms' (same as data=...)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatdistill.distill.config import RunConfig, TrainConfig
    from splatdistill.errors import UserError

    flags = {"out": args.out, "data": args.data}
    config_path = args.config
    if args.resume and config_path is None:
        out = args.out or next((o.split("=", 1)[1] for o in args.overrides if o.startswith("out=")), None)
        saved = Path(out or RunConfig.out) / "config.yaml"
        if saved.is_file():
            config_path = str(saved)  # resume with the run's own settings unless overridden
    cfg = config_from_args(TrainConfig, args, flags, config_path)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    out = Path(cfg.run.out)
    if not args.resume and (out / "checkpoint.pt").exists():
        raise UserError("the run folder already holds a checkpoint: pass --resume to continue it, "
                        "or choose another out=", out)
    from splatdistill.distill.trainer import Trainer

    trainer = Trainer(cfg, resume=args.resume)
    result = trainer.fit()
    if trainer.dist.is_main:
        hist = result["history"]
        if hist:
            first, last = hist[0], hist[-1]
            print(f"steps {result['steps']}/{cfg.optim.steps} in {result['seconds'] / 60:.1f} min; loss {first['loss']:.4f} -> "
                  f"{last['loss']:.4f}; teacher-student agreement {first['agreement']:.3f} -> {last['agreement']:.3f}")
        ho = result.get("held_out") or []
        if len(ho) >= 2:
            print(f"held-out ({cfg.data.val_split}, {ho[0]['samples']} samples): loss {ho[0]['loss']:.4f} -> {ho[-1]['loss']:.4f}; "
                  f"agreement {ho[0]['agreement']:.3f} -> {ho[-1]['agreement']:.3f}")
        m = cfg.method
        print(f"EMA teacher: momentum {trainer.teacher.momentum:.4g} every {m.ema_every} steps, "
              f"{cfg.optim.steps // m.ema_every} updates over the run"
              + (" (frozen)" if trainer.teacher.momentum >= 1 else ""))
        print(f"student (timm safetensors): {result['student']}")
        print(f"teacher (timm safetensors): {result['teacher']}")
        if result["stopped_early"]:
            print(f"stopped early (time budget or SIGTERM); continue with: splatdistill train --resume --out {cfg.run.out}")
    return 0
