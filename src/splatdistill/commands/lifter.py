"""Lifter commands: train and evaluate the learned Gaussian predictor, export lifted scenes, time lifting.

- ``splatdistill lifter train [--data rooms] [--out DIR] [--features cnn|backbone|cnn+backbone] [--minutes M]
  [key=value ...]``
- ``splatdistill lifter eval PREDICTOR [--data rooms] [--backbone SPEC] [--planes fixed|baseline]``: depth
  errors on the held-out scenes, or on a whole capture with dense or SfM-point depth (``--backbone`` swaps
  the guide features, e.g. for a Splat-and-Distill teacher)
- ``splatdistill lifter lift --lifter SPEC --data DIR --scene NAME --out FILE.ply``: a scene's Gaussians as
  a standard 3DGS PLY (``--scene all --out DIR`` writes one per scene, ready for ``--lifter ply:DIR``)
- ``splatdistill lifter check SPEC [--data DATASET]``: lift one context pair and print the Gaussians' depth
  range, opacities and the coverage of a third view (a broken lifter shows before a day of training)
- ``splatdistill bench lifting --predictor PATH --data DIR``: lifting time per scene, feed-forward
  against FiT3D-style per-scene optimisation, in one run

See docs/lifters.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from splatdistill.atomic import atomic_write_text
from splatdistill.config import add_config_arguments, config_from_args, dump_yaml
from splatdistill.errors import UserError

TRAIN_HELP = "train the learned feed-forward Gaussian predictor (from depth, or from posed images alone)"
TRAIN_DESCRIPTION = (
    "Train the MVSplat-like predictor on the train split, supervised by depth where the data has "
    "it and by the photometric loss (posed images alone) where it has none (--supervision), "
    "then report depth errors on the held-out scenes that have depth. --init shipped starts from "
    "the shipped weights (to adapt them to your captures). Writes predictor.safetensors, predictor.json, "
    "metrics.json and log.jsonl to --out; use it with lifter=predictor:OUT. Every option is a "
    "field of LifterTrainConfig: --config FILE, key=value, --print-config."
)
EVAL_HELP = "depth errors of a trained predictor on any posed dataset with depth"
EVAL_DESCRIPTION = (
    "AbsRel / RMSE / delta1 and scale-invariant AbsRel (median-aligned per view) of a predictor on "
    "the held-out scenes (or, for a capture without held-out scenes, all of it), on the context pairs "
    "the Splat-and-Distill trainer draws or, for a scene too small for its sampler (a stereo pair), "
    "on every overlapping view pair; against its coarse estimate and a constant depth. Depth comes "
    "from the dataset (sensor, stereo ground truth) or, for a COLMAP model, from its 3D points "
    "(sparse)."
)
LIFT_HELP = "lift a scene's views into Gaussians with a lifter and write a 3DGS PLY"
LIFT_DESCRIPTION = (
    "Lift views of a scene with any lifter (depth, predictor:PATH, ply:PATH, python:MODULE:FACTORY) "
    "and write standard 3DGS PLY files any splat viewer opens."
)
CHECK_HELP = "lift one pair of your data and print depth range, opacity and target coverage"
CHECK_DESCRIPTION = (
    "Build the lifter SPEC (auto, depth, predictor:PATH, mvsplat:CKPT, depth-anything-v2:WEIGHTS, ...), "
    "lift one context pair of a scene of --data (default: the embedded rooms) and print the depth of "
    "its Gaussians in their cameras (and against the data's depth where there is some), their "
    "opacities, and the share of a third view they cover when splatted into it."
)
BENCH_HELP = "lifting time per scene: feed-forward vs per-scene optimisation"
BENCH_DESCRIPTION = (
    "For each scene: teacher features, then the depth lifter, the learned predictor and a "
    "FiT3D-style per-scene optimised feature field, timed in one run."
)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(
        p, "splatdistill.lifters.train_predictor:LifterTrainConfig", "predictor training config (LifterTrainConfig)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("predictor", help="folder written by 'lifter train', or a shipped name ('shipped')")
    p.add_argument("--data", default="rooms")
    p.add_argument(
        "--splits",
        default="val,test",
        help="comma-separated held-out splits, or 'all' (default %(default)s; a dataset with none of "
        "them is evaluated whole)",
    )
    p.add_argument("--pairs", type=int, default=6, help="context pairs per scene (default %(default)s)")
    p.add_argument(
        "--backbone",
        default=None,
        help="guide features from this backbone instead of the one it was trained on (e.g. an SnD teacher)",
    )
    p.add_argument(
        "--planes",
        default=None,
        choices=["fixed", "baseline"],
        help="override where the predictor's depth planes go: fixed near..far, or scaled per pair by "
        "focal x camera baseline (default: the predictor's own setting)",
    )
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--device",
        default="auto",
        help="where the predictor (and its guide backbone) runs: auto "
        "(default: CUDA when present), cpu, cuda or cuda:N",
    )
    p.add_argument("--quiet", "-q", action="store_true")


def add_lift_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lifter", default="auto", help="lifter spec (default %(default)s: the shipped predictor)")
    p.add_argument("--data", required=True, help="dataset folder or 'rooms'")
    p.add_argument("--scene", required=True, help="scene name, or 'all' (then --out is a folder)")
    p.add_argument("--views", default=None, help="comma-separated view numbers (default: all)")
    p.add_argument("--size", type=int, default=112, help="lifting resolution (default %(default)s)")
    p.add_argument(
        "--carry",
        default="rgb",
        choices=["rgb", "features"],
        help="rgb: Gaussians carry pixel colours; features: teacher features (saved to "
        "FILE.ply.features.npy, colours from their PCA) (default %(default)s)",
    )
    p.add_argument(
        "--backbone",
        default="dinov2_vits14",
        help="teacher for --carry features and for predictors that match on its features",
    )
    p.add_argument("--out", required=True, help="output .ply (one scene) or folder (--scene all)")


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="lifter spec, as lifter=SPEC in training (e.g. auto, mvsplat:CKPT:1:100)")
    p.add_argument("--data", default="rooms", help="dataset folder or 'rooms' (default %(default)s)")
    p.add_argument("--scene", default=None, help="scene name (default: the first)")
    p.add_argument("--views", default=None, help="context views A,B (default 0,2 with target 1)")
    p.add_argument("--target", type=int, default=None, help="view to splat into (default 1)")
    p.add_argument("--size", type=int, default=112, help="lifting resolution (default %(default)s)")
    p.add_argument(
        "--backbone",
        default="dinov2_vits14",
        help="teacher, for predictors that match on its features (default %(default)s)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where the pair is lifted and splatted: auto (default: CUDA "
        "when present), cpu, cuda or cuda:N (predictor and mvsplat lifters run there; a Depth Anything "
        "model stays on the CPU)",
    )
    p.add_argument("--json", default=None, help="also write the report to this JSON file")


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--predictor",
        default="shipped",
        help="folder written by 'lifter train', or a shipped name (default %(default)s)",
    )
    p.add_argument("--data", default="rooms")
    p.add_argument("--split", default="test", help="scenes of this split (default %(default)s)")
    p.add_argument("--scenes", type=int, default=4, help="number of scenes (default %(default)s)")
    p.add_argument("--size", type=int, default=112, help="lifting/render resolution (default %(default)s)")
    p.add_argument("--backbone", default="dinov2_vits14", help="teacher (default %(default)s)")
    p.add_argument("--fit3d-iterations", type=int, default=200)
    p.add_argument("--fit3d-views", type=int, default=16)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quiet", "-q", action="store_true")


ACTIONS = {  # action -> (help, description, add arguments, run)
    "train": (TRAIN_HELP, TRAIN_DESCRIPTION, add_train_arguments, "run_train"),
    "eval": (EVAL_HELP, EVAL_DESCRIPTION, add_eval_arguments, "run_eval"),
    "lift": (LIFT_HELP, LIFT_DESCRIPTION, add_lift_arguments, "run_lift"),
    "check": (CHECK_HELP, CHECK_DESCRIPTION, add_check_arguments, "run_check"),
}


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(
        "lifter",
        help="the feed-forward lifter: train, eval, lift (docs/lifters.md)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = group.add_subparsers(dest="lifter_action", metavar="ACTION", required=True)
    for name, (help_, description, add, run) in ACTIONS.items():
        p = actions.add_parser(name, help=help_, description=description)
        add(p)
        p.set_defaults(func=globals()[run])


def _progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _fmt_errors(name: str, m: dict) -> str:
    si = f"  scale-inv AbsRel {m['abs_rel_si']:.4f}" if "abs_rel_si" in m else ""
    return f"  {name:<24} AbsRel {m['abs_rel']:.4f}  RMSE {m['rmse']:.3f}  delta1 {m['delta1']:.3f}{si}"


def _print_held_out(res: dict) -> None:
    if res.get("note"):
        print(res["note"])
    sparse = (
        f", sparse depth from COLMAP points in {res['sparse_depth_views']} views"
        if res.get("sparse_depth_views")
        else ""
    )
    print(
        f"evaluated ({', '.join(res.get('splits', []))}: {len(res.get('scenes', []))} scenes, {res['pairs']} view "
        f"pairs, {res['views']} views{sparse}):"
    )
    print(_fmt_errors("predictor", res["predictor"]))
    print(_fmt_errors("coarse only", res["coarse_only"]))
    if "constant_depth" in res:
        print(_fmt_errors(f"constant {res['constant_depth']['value']:.3g} (GT median)", res["constant_depth"]))
    if "constant_train_median" in res:
        print(
            _fmt_errors(
                f"constant {res['constant_train_median']['value']:.3g} (train median)", res["constant_train_median"]
            )
        )
    if len(res.get("by_parallax", [])) > 1:
        print("  by parallax (focal x baseline / median depth; under ~2 px two views carry little depth):")
        for row in res["by_parallax"]:
            lo, hi = row["parallax_px"]
            name = f"{lo:g}-{hi:g} px" if hi is not None else f">= {lo:g} px"
            p, c = row["predictor"], row["constant"]
            print(
                f"    {name:<10} {row['pairs']:>4} pairs  predictor AbsRel {p['abs_rel']:.4f} / scale-inv "
                f"{p['abs_rel_si']:.4f}   constant {c['abs_rel']:.4f} / {c['abs_rel_si']:.4f}"
            )
    print(f"  predictor time: {res['seconds_per_pair'] * 1000:.0f} ms per view pair")


def run_train(args: argparse.Namespace) -> int:
    from splatdistill.lifters.train_predictor import LifterTrainConfig, train_predictor

    cfg = config_from_args(LifterTrainConfig, args, {"progress": _progress(args)})
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    out = Path(cfg.run.out)
    res = train_predictor(cfg, resume=args.resume)  # locks the folder before any work
    print(
        f"trained {res['steps']} steps in {res['train_seconds'] / 60:.1f} min "
        f"(+{res['setup_seconds']:.0f} s setup; wall {res['wall_seconds'] / 60:.1f} min)"
        + (" - stopped by --minutes" if res["stopped_by_time"] else "")
        + (" - stopped by SIGTERM (state saved; --resume continues)" if res.get("stopped_by") == "signal" else "")
    )
    if res["held_out"]:
        _print_held_out(res["held_out"])
    print(f"predictor: {out}  (use it with: splatdistill train lifter=predictor:{out})")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from splatdistill.lifters.evaluate import evaluate_saved_predictor

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    res = evaluate_saved_predictor(
        args.predictor,
        args.data,
        splits,
        args.pairs,
        args.backbone,
        args.seed,
        _progress(args),
        args.threads,
        args.planes,
        args.device,
    )
    print(f"device: {res['device']}")
    if res.get("planes"):
        print(f"depth planes: {res['planes']}")
    if res.get("guide_backbone"):
        print(f"guide features: {res['guide_backbone']}")
    _print_held_out(res)
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=1))
    return 0


def _scenes(data: str, names: list[str] | None = None, split: str | None = None):
    from splatdistill.data import load_dataset

    scenes = load_dataset(data, split=split)
    if names is not None:
        by_name = {s.name: s for s in scenes}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise UserError(f"no scene {missing[0]!r} (have {', '.join(sorted(by_name)[:6])}...)", data)
        scenes = [by_name[n] for n in names]
    return scenes


def run_lift(args: argparse.Namespace) -> int:
    import torch

    from splatdistill.lifters import build_lifter, lift_scene, load_scene_views
    from splatdistill.lifters.predictor import PredictorLifter
    from splatdistill.render.ply import save_ply
    from splatdistill.splat import SplatSettings

    scenes = _scenes(args.data, None if args.scene == "all" else [args.scene])
    lifter = build_lifter(args.lifter, SplatSettings(), data=args.data)
    needs_features = args.carry == "features" or (isinstance(lifter, PredictorLifter) and lifter.config.uses_backbone)
    backbone = None
    if needs_features:
        from splatdistill.backbones import load_backbone

        backbone = load_backbone(args.backbone).eval()
    views = [int(v) for v in args.views.split(",")] if args.views else None
    out = Path(args.out)
    for scene in scenes:
        sv = load_scene_views(scene, views, args.size, backbone)
        scene_ctx = (
            lifter.use_scene(scene.name) if hasattr(lifter, "use_scene") and not lifter.single else nullcontext()
        )
        with torch.no_grad(), scene_ctx:
            g = lift_scene(sv, lifter, carry=args.carry)
        path = out / f"{scene.name}.ply" if args.scene == "all" else out
        if args.scene != "all" and path.suffix.lower() != ".ply":
            raise UserError("--out must be a .ply file for one scene", path)
        if args.carry == "rgb":
            save_ply(path, g, colors=g.features.clamp(0, 1))
        else:
            save_ply(path, g, save_features=True)
        print(f"{scene.name}: {len(g)} Gaussians from {len(sv)} views -> {path}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from splatdistill.devices import resolve_device
    from splatdistill.lifters import build_lifter
    from splatdistill.lifters.check import check_lifter, format_report
    from splatdistill.splat import SplatSettings

    device = resolve_device(args.device)  # a device this machine lacks stops here, before any loading
    scenes = _scenes(args.data, [args.scene] if args.scene else None)
    if not scenes:
        raise UserError("no scenes", args.data)
    settings = SplatSettings()
    lifter = build_lifter(args.spec, settings, data=args.data)
    backbone = None
    if getattr(getattr(lifter, "config", None), "uses_backbone", False):
        from splatdistill.backbones import load_backbone

        backbone = load_backbone(args.backbone, device=device).eval()
    context = [int(v) for v in args.views.split(",")] if args.views else None
    scene_ctx = (
        lifter.use_scene(scenes[0].name) if hasattr(lifter, "use_scene") and not lifter.single else nullcontext()
    )
    with scene_ctx:
        report = check_lifter(lifter, scenes[0], args.spec, context, args.target, args.size, backbone, settings, device)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=1))
    return 0


def run_bench(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from splatdistill.backbones import load_backbone
    from splatdistill.baselines.fit3d import Fit3DConfig, field_error, fit_field
    from splatdistill.lifters import lift_scene
    from splatdistill.lifters.predictor import PredictorLifter, load_predictor
    from splatdistill.lifters.pretrained import resolve_predictor
    from splatdistill.splat.lifter import SplatSettings, depth_lifter
    from splatdistill.splat.scene import load_scene_views_timed

    torch.set_num_threads(args.threads)
    scenes = _scenes(args.data, split=args.split)[: args.scenes]
    if not scenes:
        raise UserError(f"no scenes in split {args.split!r}")
    teacher = load_backbone(args.backbone).eval()
    settings = SplatSettings()
    predictor = PredictorLifter(load_predictor(resolve_predictor(args.predictor)), settings)
    lifters = {"depth (GT)": depth_lifter(settings), "predictor": predictor}
    fcfg = Fit3DConfig(iterations=args.fit3d_iterations, max_views=args.fit3d_views, render_size=args.size)
    rows = []
    for scene in scenes:
        sv, teacher_seconds = load_scene_views_timed(scene, None, args.size, teacher, fcfg.image_size, fcfg.mask)
        row = {"scene": scene.name, "views": len(sv), "teacher_seconds": teacher_seconds}
        with torch.no_grad():
            for name, lifter in lifters.items():
                lift_scene(sv, lifter, carry="features")  # warm-up (first-call allocations)
                t0 = time.perf_counter()
                g = lift_scene(sv, lifter, carry="features")
                row[f"{name}_seconds"] = time.perf_counter() - t0
                row[f"{name}_gaussians"] = len(g)
            # the predictor's network alone (depth, opacity, scale for every view; no feature copying)
            t0 = time.perf_counter()
            for s in range(0, len(sv) - 1, 2):
                e = s + 3 if len(sv) - s == 3 else s + 2
                predictor.predict(sv[s:e])
            row["predictor network_seconds"] = time.perf_counter() - t0
        ids = [int(round(x)) for x in np.linspace(0, len(sv) - 1, min(len(sv), fcfg.max_views))]
        targets = sv[sorted(set(ids))]
        field, stats = fit_field(
            targets, fcfg, progress=_progress(args), desc=f"fit3d {scene.name}", teacher_seconds=teacher_seconds
        )
        row["fit3d_seconds"] = stats["fit_seconds"]
        row["fit3d_gaussians"] = stats["gaussians"]
        row["fit3d_error"] = field_error(field, targets)
        rows.append(row)
        print(
            f"{scene.name}: teacher {row['teacher_seconds']:.2f} s | depth lifter {row['depth (GT)_seconds']:.3f} s | "
            f"predictor {row['predictor_seconds']:.3f} s (network {row['predictor network_seconds']:.3f} s) | "
            f"fit3d {row['fit3d_seconds']:.1f} s ({fcfg.iterations} it, L1 {row['fit3d_error']:.3f})",
            flush=True,
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k.endswith("_seconds")}
    summary = {
        "scenes": [r["scene"] for r in rows],
        "per_scene": rows,
        "mean_seconds": mean,
        "speedup_predictor_vs_fit3d": mean["fit3d_seconds"] / mean["predictor_seconds"],
        "speedup_predictor_network_vs_fit3d": mean["fit3d_seconds"] / mean["predictor network_seconds"],
        "speedup_depth_vs_fit3d": mean["fit3d_seconds"] / mean["depth (GT)_seconds"],
        "size": args.size,
        "fit3d_iterations": fcfg.iterations,
        "threads": args.threads,
    }
    print(
        f"mean per scene ({len(rows)} scenes, {rows[0]['views']} views, {args.size} px): teacher features "
        f"{mean['teacher_seconds']:.2f} s; lifting: depth {mean['depth (GT)_seconds']:.3f} s, predictor "
        f"{mean['predictor_seconds']:.3f} s (network alone {mean['predictor network_seconds']:.3f} s), fit3d "
        f"{mean['fit3d_seconds']:.1f} s -> the feed-forward predictor is {summary['speedup_predictor_vs_fit3d']:.0f}x "
        f"faster than per-scene optimisation ({summary['speedup_predictor_network_vs_fit3d']:.0f}x for its network "
        "alone; the rest is copying C-channel features onto the Gaussians, as for any pixel-aligned lifter)"
    )
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=1))
    return 0
