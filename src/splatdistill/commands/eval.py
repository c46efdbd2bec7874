"""``splatdistill eval``: probe and match several backbones side by side and write a report.

Example::

    splatdistill eval --backbone dinov2=dinov2_vits14 --backbone random=random:vit_small_patch14_dinov2 \
        --data rooms --out runs/eval
"""

from __future__ import annotations

import argparse
import sys

from splatdistill.config import add_config_arguments, config_from_args, dump_yaml
from splatdistill.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from splatdistill.eval.config import TASKS, EvalConfig

    d = EvalConfig()
    p = sub.add_parser(
        "eval",
        help="evaluate backbones: depth/normal/segmentation probes, correspondence, consistency",
        description="Train linear probes on frozen features of the train split, evaluate them and the "
        "multi-view tasks on held-out scenes, for each backbone; writes results.json, report.md and "
        "PNG figures to --out. Protocol: docs/evaluation.md.",
    )
    p.add_argument(
        "--backbone",
        "-b",
        action="append",
        metavar="[LABEL=]SPEC",
        help="backbone spec (repeatable): dinov2_vits14, a .pth/.safetensors file, timm:NAME, "
        "random:ARCH, mobilenetv2; LABEL= names its row in the report",
    )
    p.add_argument(
        "--data",
        action="append",
        metavar="[NAME=]DIR",
        help="dataset folder, or 'rooms' (built on first use); with --suite paper repeatable as NAME=PATH, "
        "NAME one of nyu, scannet1500, ade20k, kitti, scannet, scannetpp (each with its protocol) or any other",
    )
    add_config_arguments(p, "splatdistill.eval.config:EvalConfig", "evaluation config (EvalConfig)")
    p.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated subset of: {','.join(TASKS)} (default: all; suite paper: each dataset's own)",
    )
    p.add_argument("--out", metavar="DIR", help="output folder")
    g = p.add_argument_group("shortcuts (every EvalConfig field is also a flag, below)")
    g.add_argument(
        "--probe-lr",
        type=float,
        default=None,
        help=f"one learning rate for all probes (default: depth {d.probe.depth_lr}, normals {d.probe.normals_lr}, "
        f"segmentation {d.probe.seg_lr})",
    )
    g.add_argument(
        "--depth-cls",
        action="store_true",
        help="concatenate the CLS token to the depth probe's input, as the paper's protocol does",
    )
    g.add_argument(
        "--pairs",
        type=int,
        default=None,
        help="view pairs per dataset for correspondence/consistency "
        f"(corr_pairs, default {d.correspondence.corr_pairs})",
    )
    g.add_argument(
        "--keep",
        type=int,
        default=None,
        help=f"best matches kept per pair (corr_keep, default {d.correspondence.corr_keep})",
    )
    g.add_argument(
        "--points",
        type=int,
        default=None,
        help=f"consistency points per pair (consistency_points, default {d.correspondence.consistency_points})",
    )
    g.add_argument("--no-middlebury", action="store_true", help="skip the real Middlebury stereo pair")
    g.add_argument("--no-figures", action="store_true", help="write no PNG figures")
    g.add_argument("--cache", metavar="DIR", default=None, help="feature cache folder (default: OUT/cache)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write cached features")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def eval_config(args: argparse.Namespace, preset: dict | None = None):
    """The :class:`EvalConfig` of a command line: defaults < ``preset`` (a benchmark's protocol) < ``--config``
    < option flags < ``key=value``."""
    from splatdistill.eval.config import EvalConfig

    probe_lr = (
        {}
        if args.probe_lr is None
        else {"depth_lr": args.probe_lr, "normals_lr": args.probe_lr, "seg_lr": args.probe_lr}
    )
    flags = {
        "depth_use_cls": True if args.depth_cls else None,
        **probe_lr,
        "corr_pairs": args.pairs,
        "corr_keep": args.keep,
        "consistency_points": args.points,
        "middlebury": False if args.no_middlebury else None,
        "cache_dir": "" if args.no_cache else args.cache,
        "figures": False if args.no_figures else None,
        "progress": not args.quiet and sys.stderr.isatty(),
    }
    return config_from_args(EvalConfig, args, flags, defaults=preset)


def run(args: argparse.Namespace) -> int:
    from splatdistill.eval.report import TASK_COLUMNS
    from splatdistill.eval.runner import evaluate, parse_tasks

    tasks = parse_tasks(args.tasks)  # fail on a bad task name before loading anything (None: all)
    if args.cache and args.no_cache:
        raise UserError("--cache and --no-cache are mutually exclusive")
    cfg = eval_config(args)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    missing = [
        flag for flag, value in (("--backbone", args.backbone), ("--data", args.data), ("--out", args.out)) if not value
    ]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (see splatdistill eval --help)")
    from splatdistill.run_folder import owned_run_folder

    if cfg.run.suite == "paper":
        return _run_paper(args, owned_run_folder)
    if len(args.data) > 1:
        raise UserError("several --data need --suite paper (the fast suite evaluates one dataset)")
    with owned_run_folder(args.out, "splatdistill eval", "output folder"):
        doc = evaluate(args.backbone, args.data[0], tasks, args.out, cfg)
    # A compact summary on stdout: the headline metric of each task per backbone.
    headline = {
        "depth": "abs_rel",
        "normals": "mean_deg",
        "segmentation": "miou",
        "correspondence": "recall_10",
        "consistency": "auc",
    }
    data_name = doc["data"]["name"]
    for b in doc["backbones"]:
        parts = []
        for task in doc["tasks"]:
            r = b["results"].get(task, {})
            if task in ("correspondence", "consistency"):
                r = r.get(data_name, {})
            key = headline[task]
            header = next(h for k, h, _ in TASK_COLUMNS[task] if k == key)
            if r.get(key) is not None:
                parts.append(f"{task} {header.split(' ')[0]}={r[key]:.4g}")
        print(f"{b['label']}: " + ", ".join(parts) + f" ({b['timings'].get('total_s', 0):.0f} s)")
    print(f"wrote {args.out}/report.md and results.json in {doc['wall_time_s']:.0f} s")
    return 0


def _run_paper(args: argparse.Namespace, owned_run_folder) -> int:
    """``--suite paper``: every --data under its benchmark's protocol, then the combined table."""
    from splatdistill.eval.paper import evaluate_paper, parse_data_args

    datasets = parse_data_args(args.data)
    with owned_run_folder(args.out, "splatdistill eval", "output folder"):
        doc = evaluate_paper(args.backbone, datasets, args.out, lambda preset: eval_config(args, preset), args.tasks)
    headline = {
        "depth": "abs_rel",
        "normals": "rmse_deg",
        "segmentation": "miou",
        "correspondence": "recall_10",
        "consistency": "auc",
    }
    for name, entry in doc["datasets"].items():
        res = entry["results"]
        for b in res["backbones"]:
            parts = []
            for task in res["tasks"]:
                r = b["results"].get(task, {})
                r = r.get(name, {}) if task in ("correspondence", "consistency") else r
                if r.get(headline[task]) is not None:
                    parts.append(f"{task} {headline[task]}={r[headline[task]]:.4g}")
            print(
                f"{entry['title']} / {b['label']}: "
                + (", ".join(parts) or "see report")
                + f" ({b['timings'].get('total_s', 0):.0f} s)"
            )
    print(f"wrote {args.out}/report.md and results.json in {doc['wall_time_s']:.0f} s")
    return 0
