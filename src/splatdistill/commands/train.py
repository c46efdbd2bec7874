"""``splatdistill train [--config FILE] [key=value ...]``: Splat-and-Distill training.

Every option of the training config (listed below, by group) can be set in a YAML file (--config), as a
flag (--optim.steps 2000, or --steps 2000 where the name is unique) or as key=value (steps=2000
blend_alpha=1.0). Multi-GPU / multi-node: launch the same command with
torchrun --nproc_per_node N -m splatdistill train ...
"""

from __future__ import annotations

import argparse

from splatdistill.config import (
    add_config_arguments,
    command_line_overrides,
    config_from_args,
    dump_yaml,
    key_aliases,
    parse_overrides,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a Splat-and-Distill student",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p, "splatdistill.distill.config:TrainConfig", "training config")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatdistill.distill.config import RunConfig, TrainConfig
    from splatdistill.distill.trainer import CHECKPOINT, FRESH_HINT
    from splatdistill.run_folder import owned_training_folder

    given = parse_overrides(command_line_overrides(args))
    aliases = key_aliases(TrainConfig)
    out = Path(next((v for k, v in reversed(given.items()) if aliases.get(k) == ("run", "out")), RunConfig.out))
    saved = None
    if args.resume and args.config is None:
        saved = resumed_config(out)  # the checkpoint's own settings, unless overridden
    cfg = config_from_args(TrainConfig, args, None, args.config, defaults=saved)
    python_lifter_from_command_line(
        cfg.method.lifter, command_line_overrides(args), args.config or out / "checkpoint.pt"
    )
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    out = Path(cfg.run.out)
    with owned_training_folder(out, "splatdistill train", args.resume, CHECKPOINT, FRESH_HINT):  # before any work
        if saved is not None:
            report_config_yaml(out, saved)
        return _train(cfg, args)


def python_lifter_from_command_line(lifter: str, overrides, source) -> None:
    """A ``python:`` lifter imports and runs a module, so it is taken from the command line only: a config
    file or a shared run folder's checkpoint that names one must not run code unasked."""
    from splatdistill.errors import UserError

    if lifter.startswith("python:") and not any(
        o.split("=", 1)[0].endswith("lifter") and o.split("=", 1)[-1] == lifter for o in overrides
    ):
        raise UserError(
            f"lifter={lifter} comes from {source}: a python: lifter imports and runs code, so it is taken "
            f"only from the command line; add lifter={lifter} to the command to run it"
        )


def resumed_config(out) -> dict:
    """The config stored in ``<out>/checkpoint.pt``: authoritative on ``--resume`` (config.yaml is a copy
    for people; a truncated or edited one must not change the run)."""
    from splatdistill.errors import UserError
    from splatdistill.safe_load import NUMPY_ARRAYS, load_torch_file

    path = out / "checkpoint.pt"
    if not path.is_file():
        raise UserError("no checkpoint to resume from (expected checkpoint.pt in the run folder)", path)
    state = load_torch_file(path, "training checkpoint", allow=NUMPY_ARRAYS, mmap=True)  # numpy: the RNG state
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict):
        raise UserError("the checkpoint holds no training config; is it a splatdistill train checkpoint?", path)
    return config


def report_config_yaml(out, saved: dict) -> None:
    """Say when ``config.yaml`` differs from the checkpoint's config (the checkpoint's is used)."""
    import sys

    from splatdistill.config import flatten_values, group_paths, read_yaml_mapping
    from splatdistill.distill.config import TrainConfig
    from splatdistill.errors import UserError

    path = out / "config.yaml"
    if not path.is_file():
        return
    try:
        mine = TrainConfig.from_dict(read_yaml_mapping(path), source=str(path)).to_dict()
    except UserError as exc:
        print(
            f"splatdistill train: note: {path} is unreadable ({exc}); resuming with the checkpoint's config",
            file=sys.stderr,
        )
        return
    groups = group_paths(TrainConfig)
    a = flatten_values(TrainConfig.from_dict(saved, source="checkpoint").to_dict(), groups)
    b = flatten_values(mine, groups)
    differ = sorted(k for k in a if a.get(k) != b.get(k))
    if differ:
        shown = ", ".join(f"{k}: {b.get(k)!r} in config.yaml, {a[k]!r} in the checkpoint" for k in differ[:4])
        more = f" (+{len(differ) - 4} more)" if len(differ) > 4 else ""
        print(
            f"splatdistill train: note: {path} differs from the checkpoint's config ({shown}{more}); resuming "
            "with the checkpoint's (pass key=value to change an option)",
            file=sys.stderr,
        )


def _train(cfg, args) -> int:
    from splatdistill.distill.trainer import Trainer

    trainer = Trainer(cfg, resume=args.resume, lock=False)  # run() holds the run folder's lock
    result = trainer.fit()
    if trainer.dist.is_main:
        hist = result["history"]
        if hist:
            first, last = hist[0], hist[-1]
            print(
                f"steps {result['steps']}/{cfg.optim.steps} in {result['seconds'] / 60:.1f} min; loss {first['loss']:.4f} -> "
                f"{last['loss']:.4f}; teacher-student agreement {first['agreement']:.3f} -> {last['agreement']:.3f}"
            )
        ho = result.get("held_out") or []
        if len(ho) >= 2:
            print(
                f"held-out ({cfg.data.val_split}, {ho[0]['samples']} samples): loss {ho[0]['loss']:.4f} -> {ho[-1]['loss']:.4f}; "
                f"agreement {ho[0]['agreement']:.3f} -> {ho[-1]['agreement']:.3f}"
            )
        m = cfg.method
        if cfg.model.student:
            print(f"teacher: {cfg.model.backbone}, fixed (the student {cfg.model.student} has its own architecture)")
            print(
                f"student ({cfg.model.student} + projection, safetensors; loads with load_backbone): {result['student']}"
            )
        else:
            print(
                f"EMA teacher: momentum {trainer.teacher.momentum:.4g} every {m.ema_every} steps, "
                f"{cfg.optim.steps // m.ema_every} updates over the run"
                + (" (frozen)" if trainer.teacher.momentum >= 1 else "")
            )
            print(f"student (timm safetensors): {result['student']}")
        print(f"teacher (timm safetensors): {result['teacher']}")
        resume = f"splatdistill train --resume --out {cfg.run.out}"
        if result.get("stopped_by") == "signal":
            print(f"stopped by SIGTERM after step {result['steps']} (checkpoint saved); continue with: {resume}")
        elif result["stopped_early"] and cfg.optim.schedule == "budget":
            print(
                f"time budget of {cfg.optim.max_minutes:g} min used after {result['steps']} steps (schedule=budget: "
                "the learning rate completed its schedule on the clock)"
            )
        elif result["stopped_early"]:
            print(
                f"stopped by max_minutes={cfg.optim.max_minutes:g} after {result['steps']} steps, before the end of "
                f"the schedule; continue with: {resume}"
            )
    return 0
