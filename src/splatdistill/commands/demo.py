"""``splatdistill demo``: the whole method on the embedded default, end to end, on a CPU.

Builds (once) the embedded rooms dataset, trains Splat-and-Distill from the offline DINOv2 ViT-S/14
with semantic blending (alpha 0.5) and without (alpha 1), lifting the teacher's features with the
shipped feed-forward predictor (lifter=auto; never the dataset's depth), evaluates DINOv2 against both students on
held-out rooms and the real Middlebury stereo pair, and writes report.md and a self-contained
report.html. The step count is fixed (--steps, default 800 per variant: ~20 minutes on 2 quiet cores), so the
result does not depend on the machine's speed. ViSP's castel joins the real pairs when the test suite
has cached it. Re-running reuses finished runs and cached features. --oracle adds, per variant, a twin
lifted with ground-truth depth at the same step count (the ablation; roughly doubles the time).
--ablations adds the first variant with a frozen teacher and with the other objective, at its step
count, and evaluates the variants' final EMA teachers.
--compare instead trains DINOv2's students the paper compares (FiT3D-style, SnD blend, SnD no-blend) with
--seeds seeds at --steps steps each (default 300) and writes compare.md (commands/compare_recipe.py).
"""

from __future__ import annotations

import argparse

from splatdistill.config import add_config_arguments, config_from_args, dump_yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="end-to-end Splat-and-Distill on the embedded rooms data, with a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(
        p,
        "splatdistill.commands.demo_recipe:DemoConfig",
        "demo config (DemoConfig: out, steps, data, backbone, variants, train, eval, tasks)",
    )
    p.add_argument("--out", default=None, help="output folder (default: demo_out, with --compare compare_out)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="training steps per variant, fixed (default 800; with --compare 300 per run)",
    )
    p.add_argument("--data", default=None, help="dataset folder, or 'rooms' (default)")
    p.add_argument("--backbone", default=None, help="teacher/original backbone spec (default dinov2_vits14)")
    p.add_argument(
        "--oracle",
        action="store_true",
        default=None,
        help="also train each variant with ground-truth depth (lifter=depth) at the same step count",
    )
    p.add_argument(
        "--ablations",
        action="store_true",
        default=None,
        help="also train the first variant with a frozen teacher (ema_momentum=1) and with the other "
        "objective at the same step count, and evaluate the final EMA teachers",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="DINOv2 vs FiT3D-style vs SnD blend/no-blend, same steps, several seeds (compare.md)",
    )
    p.add_argument("--seeds", type=int, default=None, help="with --compare: training seeds per method (default 3)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from splatdistill.commands.demo_recipe import DemoConfig, run_demo
    from splatdistill.errors import UserError

    if args.compare:
        return run_compare_command(args)
    cfg = config_from_args(
        DemoConfig,
        args,
        {
            "out": args.out,
            "steps": args.steps,
            "data": args.data,
            "backbone": args.backbone,
            "oracle": args.oracle,
            "ablations": args.ablations,
            "progress": False if args.no_progress else None,
        },
    )
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    if cfg.steps < 1:
        raise UserError(f"--steps must be at least 1, got {cfg.steps}")
    from splatdistill.run_folder import owned_run_folder

    with owned_run_folder(cfg.out, "splatdistill demo", "demo folder"):
        doc = run_demo(cfg)
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Splat-and-Distill: DINOv2 before vs SnD student after (held-out scenes)")
    for col in ("variant", "metric", "before", "after", "change", "goal", "met"):
        table.add_column(col, justify="left" if col in ("variant", "metric", "goal") else "right")
    for r in doc["summary"]:
        table.add_row(
            r["variant"],
            r["metric"],
            f"{r['before']:.4f}",
            f"{r['after']:.4f}",
            f"{r['change']:+.4f}",
            r["goal"],
            "yes" if r["met"] else "[red]no[/red]",
        )
    console = Console()
    if not console.is_terminal:  # a log file: rich's 80-column default would wrap every row
        console = Console(width=140)
    console.print(table)
    if doc.get("oracle"):
        ot = Table(title="feed-forward lifter vs ground-truth depth (same step count): change after - before")
        for col in ("variant", "metric", "feed-forward", "oracle", "share", ">= 80%"):
            ot.add_column(col, justify="left" if col in ("variant", "metric") else "right")
        for r in doc["oracle"]:
            ot.add_row(
                r["variant"],
                r["metric"],
                f"{r['feed_forward']:+.4f}",
                f"{r['oracle']:+.4f}",
                "n/a" if r["share"] is None else f"{100 * r['share']:.0f}%",
                "yes" if r["met"] else "[red]no[/red]",
            )
        console.print(ot)
    if doc.get("ablations"):
        at = Table(title="dynamic teacher and objective (same step count): change after - before")
        for col in ("metric", "EMA teacher", "frozen teacher", "other objective", "final EMA teacher itself"):
            at.add_column(col, justify="left" if col == "metric" else "right")
        for r in doc["ablations"]:
            at.add_row(
                r["metric"],
                *("n/a" if r[k] is None else f"{r[k]:+.4f}" for k in ("ema", "frozen", "alternative", "teacher")),
            )
        console.print(at)
    if doc.get("lifter_depth"):
        d = doc["lifter_depth"]
        print(
            f"lifter depth (held-out): AbsRel {d['predictor']['abs_rel']:.3f} vs constant "
            f"{d.get('constant_depth', {}).get('abs_rel', float('nan')):.3f}"
        )
    print(f"report: {doc['report_md']}  |  {doc['report_html']}  ({doc['minutes']:.1f} min)")
    return 0


def run_compare_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from splatdistill.commands.compare_recipe import CompareConfig, run_compare
    from splatdistill.errors import UserError
    from splatdistill.run_folder import owned_run_folder

    cfg = config_from_args(
        CompareConfig,
        args,
        {
            "out": args.out,
            "steps": args.steps,
            "seeds": args.seeds,
            "data": args.data,
            "backbone": args.backbone,
            "progress": False if args.no_progress else None,
        },
    )
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    if args.oracle or args.ablations:
        raise UserError("--compare does not take --oracle or --ablations (run the demo without --compare for them)")
    if cfg.steps < 1 or cfg.seeds < 1:
        raise UserError(f"--steps and --seeds must be at least 1, got {cfg.steps} and {cfg.seeds}")
    with owned_run_folder(cfg.out, "splatdistill demo --compare", "compare folder"):
        doc = run_compare(cfg)
    print(Path(doc["report_md"]).read_text())
    print(f"report: {doc['report_md']}  ({doc['minutes']:.1f} min)")
    return 0
