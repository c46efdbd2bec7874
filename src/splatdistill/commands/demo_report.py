"""What the demo reports and how: the headline metrics and their goals, the names of the variants' twins,
and the report (tables, training curves, report.md and a self-contained report.html). The training and
evaluation that produce the numbers are in :mod:`splatdistill.commands.demo_recipe`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from splatdistill.atomic import atomic_savefig, atomic_write_text
from splatdistill.eval import report
from splatdistill.report_html import write_html_report

#: Stands for the evaluated dataset's name in a GOALS path (correspondence results are keyed by dataset).
DATA = "<data>"


#: (headline metric, how to read it from an eval row, goal on the change after - before, unit)
GOALS = [
    ("correspondence recall@10px (held-out)", ("correspondence", DATA, "recall_10"), "+3 points", 100.0),
    ("depth probe RMSE (m)", ("depth", "rmse"), "-3% relative", 1.0),
    ("normals probe mean angular error (deg)", ("normals", "mean_deg"), "-1 degree", 1.0),
    ("segmentation mIoU", ("segmentation", "miou"), ">= -1 point", 100.0),
    # the real Middlebury Motorcycle pair, which the rooms evaluation adds (EvalConfig.middlebury)
    (
        "Motorcycle correspondence recall@5px (real)",
        ("correspondence", "middlebury", "recall_5"),
        "no regression",
        100.0,
    ),
]


#: Metrics of the real captures evaluated on their own (commands/real_pairs.py): (name, dataset, path, goal, unit)
REAL_GOALS = [
    (
        "castel correspondence recall@5px (real)",
        "castel",
        ("correspondence", "castel", "recall_5"),
        "no regression",
        100.0,
    )
]


#: suffix of the oracle twins' names (lifter=depth, same step count as the variant they shadow)
ORACLE_SUFFIX = "-oracle"


ALTERNATIVE_OBJECTIVE_NAME = "cosine"  # the --ablations twin's objective


ALTERNATIVE_SUFFIX = f"-{ALTERNATIVE_OBJECTIVE_NAME}"


FROZEN_SUFFIX = "-frozen"  # ema_momentum=1: the teacher stays the original backbone


def teacher_label(summary: dict) -> str:
    return f"SnD {summary['name']} EMA teacher (alpha {summary['blend_alpha']})"


def _get(row: dict, path: tuple[str, ...]) -> float | None:
    node: Any = row.get("results", {})
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, (int, float)) else None


def goal_met(name: str, before: float, after: float) -> bool:
    if "(real)" in name:  # real photos: the student must not lose what DINOv2 had
        return after >= before
    if "recall" in name:
        return (after - before) * 100 >= 3.0
    if "RMSE" in name:
        return after <= before * 0.97
    if "angular" in name:
        return after <= before - 1.0
    if "mIoU" in name:
        return (after - before) * 100 >= -1.0
    return False


def _lower_is_better(metric: str) -> bool:
    return "RMSE" in metric or "angular" in metric


def oracle_rows(rows: list[dict], summaries: list[dict]) -> list[dict]:
    """Feed-forward vs oracle-depth change per headline metric: (variant, metric, changes, share of the
    oracle's change reached by the feed-forward run; goal >= 80% where the oracle improves)."""
    label_of = {s["name"]: variant_label(s) for s in summaries}
    by_key = {(r["variant"], r["metric"]): r for r in rows}
    out = []
    for s in summaries:
        twin = s["name"] + ORACLE_SUFFIX
        if twin not in label_of:
            continue
        for name, *_ in GOALS:
            ff, orc = by_key.get((label_of[s["name"]], name)), by_key.get((label_of[twin], name))
            if ff is None or orc is None:
                continue
            sign = -1.0 if _lower_is_better(name) else 1.0
            gain_ff, gain_or = sign * ff["change"], sign * orc["change"]
            share = gain_ff / gain_or if gain_or > 0 else None
            out.append(
                {
                    "variant": s["name"],
                    "metric": name,
                    "feed_forward": ff["change"],
                    "oracle": orc["change"],
                    "share": share,
                    "met": share is None or share >= 0.8,
                }
            )
    return out


def ablation_rows(rows: list[dict], summaries: list[dict]) -> list[dict]:
    """Per headline metric, the change (after - before) of the first variant, its frozen-teacher and
    other-objective twins and the final EMA teachers of the variants (None where not trained)."""
    by_key = {(r["variant"], r["metric"]): r["change"] for r in rows}
    names = {s["name"]: s for s in summaries}
    main = next(
        (
            s
            for s in summaries
            if not any(s["name"].endswith(x) for x in (ORACLE_SUFFIX, FROZEN_SUFFIX, ALTERNATIVE_SUFFIX))
        ),
        None,
    )
    if main is None or main["name"] + FROZEN_SUFFIX not in names:
        return []
    out = []
    for metric, *_ in GOALS:

        def change(s: dict | None, label=variant_label, metric: str = metric) -> float | None:
            return None if s is None else by_key.get((label(s), metric))

        if change(main) is None:  # a metric this evaluation did not measure (e.g. no Middlebury pair)
            continue
        out.append(
            {
                "metric": metric,
                "variant": main["name"],
                "ema": change(main),
                "frozen": change(names.get(main["name"] + FROZEN_SUFFIX)),
                "alternative": change(names.get(main["name"] + ALTERNATIVE_SUFFIX)),
                "teacher": change(main, teacher_label),
            }
        )
    return out


def variant_label(summary: dict) -> str:
    """The evaluation label of a trained variant (no "=": LABEL=SPEC is split at the first one)."""
    return f"SnD {summary['name']} (alpha {summary['blend_alpha']})"


def training_curves(summaries: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for s in summaries:
        c = s["curve"]
        if not c["step"]:
            continue
        steps = np.asarray(c["step"])
        for ax, key in zip(axes, ("loss", "agreement")):
            v = np.asarray(c[key], dtype=float)
            k = max(1, len(v) // 50)
            smooth = np.convolve(v, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1 :], smooth, label=f"{s['name']} (alpha={s['blend_alpha']})")
    axes[0].set_title("training loss (smoothed)")
    axes[1].set_title("teacher-student cosine on supervised tokens")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return path


def summary_rows(results: dict, real: dict[str, dict] | None = None) -> list[dict]:
    """Before/after rows: one per variant and headline metric, then the real datasets' metrics (``real``:
    dataset name -> its results, the same backbones in the same order)."""
    rows = results["backbones"]
    data_name = results["data"]["name"]
    goals = [(name, rows, path, goal, scale) for name, path, goal, scale in GOALS]
    goals += [
        (name, real[ds]["backbones"], path, goal, scale)
        for name, ds, path, goal, scale in REAL_GOALS
        if ds in (real or {})
    ]
    out = []
    for i, row in enumerate(rows[1:], start=1):
        for name, source, path, goal, scale in goals:
            path = tuple(data_name if key == DATA else key for key in path)
            b, a = _get(source[0], path), _get(source[i], path)
            if b is None or a is None:
                continue
            out.append(
                {
                    "variant": row["label"],
                    "metric": name,
                    "before": b * scale,
                    "after": a * scale,
                    "change": (a - b) * scale,
                    "goal": goal,
                    "met": goal_met(name, b, a),
                }
            )
    return out


def _training_table(summaries: list[dict]) -> str:
    train_rows = []
    for s in summaries:
        c = s["curve"]
        ho = s.get("held_out") or []
        if c["loss"]:
            k = max(1, len(c["loss"]) // 10)
            first, last = sum(c["loss"][:k]) / k, sum(c["loss"][-k:]) / k
            train_rows.append(
                {
                    "alpha": s["blend_alpha"],
                    "lifter": s.get("lifter", "depth"),
                    "steps": s["steps"],
                    "minutes": s["minutes"],
                    "loss": f"{first:.4f} -> {last:.4f}",
                    "ho_loss": f"{ho[0]['loss']:.4f} -> {ho[-1]['loss']:.4f}" if len(ho) >= 2 else "n/a",
                    "ho_agree": (f"{ho[0]['agreement']:.3f} -> {ho[-1]['agreement']:.3f}" if len(ho) >= 2 else "n/a"),
                    "name": s["name"],
                }
            )
    return report.markdown_table(
        [r["name"] for r in train_rows],
        train_rows,
        [
            ("alpha", "blend alpha", "{}"),
            ("lifter", "lifter", "{}"),
            ("steps", "steps", "{}"),
            ("minutes", "minutes", "{:.1f}"),
            ("loss", "training loss (first -> last)", "{}"),
            ("ho_loss", "held-out loss (start -> end)", "{}"),
            ("ho_agree", "held-out teacher-student agreement (start -> end)", "{}"),
        ],
        higher={},
        first="variant",
    )


def _lifter_depth_section(depth: dict | None) -> list[str]:
    if not depth:
        return []
    names = {
        "predictor": "feed-forward predictor",
        "coarse_only": "its cost volume alone",
        "constant_depth": "constant depth (median ground truth)",
    }
    rows = [{"name": label, **depth[k]} for k, label in names.items() if k in depth]
    table = report.markdown_table(
        [r["name"] for r in rows],
        rows,
        [("abs_rel", "AbsRel", "{:.3f}"), ("rmse", "RMSE (m)", "{:.3f}"), ("delta1", "delta < 1.25", "{:.3f}")],
        higher={},
        first="depth",
    )
    return [
        "## The lifter's own depth (held-out)",
        "",
        f"`{depth['spec']}` ({depth['path']}) on {depth['views']} views of the held-out "
        f"{'/'.join(depth['splits'])} scenes ({depth['pairs']} context pairs, as the trainer draws them), "
        "against ground truth:",
        "",
        table,
        "",
    ]


def _oracle_section(orows: list[dict]) -> list[str]:
    if not orows:
        return []
    table = report.markdown_table(
        [r["variant"] for r in orows],
        [
            {
                **r,
                "share": "n/a" if r["share"] is None else f"{100 * r['share']:.0f}%",
                "met": "yes" if r["met"] else "**no**",
            }
            for r in orows
        ],
        [
            ("metric", "metric", "{}"),
            ("feed_forward", "change, feed-forward lifter", "{:+.4f}"),
            ("oracle", "change, ground-truth depth", "{:+.4f}"),
            ("share", "share of the oracle's gain", "{}"),
            ("met", ">= 80%", "{}"),
        ],
        higher={},
        first="variant",
    )
    return [
        "## Feed-forward lifting against ground-truth depth (same step count)",
        "",
        "The oracle twins lift with the dataset's ray-cast depth (`lifter=depth`), everything else equal.",
        "",
        table,
        "",
    ]


def _ablation_section(arows: list[dict], summaries: list[dict]) -> list[str]:
    if not arows:
        return []
    main = next(s for s in summaries if s["name"] == arows[0]["variant"])
    loss = main["config"].get("loss", "?")
    if main["config"].get("cosine_weight"):
        loss = f"{loss} + {main['config']['cosine_weight']:g} x cosine"

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:+.4f}"

    table = report.markdown_table(
        [r["metric"] for r in arows],
        [{**r, **{k: fmt(r[k]) for k in ("ema", "frozen", "alternative", "teacher")}} for r in arows],
        [
            ("ema", f"{main['name']}: loss {loss}, EMA teacher", "{}"),
            ("frozen", "frozen teacher", "{}"),
            ("alternative", f"loss {ALTERNATIVE_OBJECTIVE_NAME}", "{}"),
            ("teacher", "its EMA teacher at the end", "{}"),
        ],
        higher={},
        first="change after - before",
    )
    return [
        "## What the dynamic teacher and the objective buy (same step count)",
        "",
        f"Variant {main['name']} ({main['steps']} steps, EMA momentum {main.get('ema_momentum', 0):.3f} every "
        f"{main['config'].get('ema_every', '?')} steps = {main.get('teacher_updates', '?')} teacher updates) "
        "against twins with `ema_momentum=1` (the teacher stays the original backbone) and with the other "
        "objective; the last column evaluates the run's final EMA teacher itself (it starts as the original).",
        "",
        table,
        "",
    ]


def _markdown_report(cfg: Any, results: dict, summaries: list[dict], rows: list[dict], depth: dict | None) -> str:
    change_table = report.markdown_table(
        [r["variant"] for r in rows],
        [{**r, "met": "yes" if r["met"] else "**no**"} for r in rows],
        [
            ("metric", "metric", "{}"),
            ("before", "before", "{:.4f}"),
            ("after", "after", "{:.4f}"),
            ("change", "change", "{:+.4f}"),
            ("goal", "goal", "{}"),
            ("met", "met", "{}"),
        ],
        higher={},
        first="variant",
    )
    lines = [
        "# Splat-and-Distill demo report",
        "",
        f"Teacher/original: `{cfg.backbone}`; data: {results['data']['name']} "
        f"(probes trained on `{results['data']['train_split']}`, reported on held-out `{results['data']['eval_split']}`).",
        "",
        "## Training",
        "",
        _training_table(summaries),
        "",
        "![training curves](training_curves.png)",
        "",
        *_lifter_depth_section(depth),
        "## Before (DINOv2) against after (SnD student): held-out rooms and real captures",
        "",
        change_table,
        "",
    ]
    missed = [r for r in rows if not r["met"]]
    if missed:
        lines += [
            "**Goals missed:** "
            + "; ".join(f"{r['variant']}: {r['metric']} ({r['change']:+.3f})" for r in missed)
            + ". See the curves above and the notes in the README for what limits a CPU-budget run.",
            "",
        ]
    lines += _oracle_section(oracle_rows(rows, summaries))
    lines += _ablation_section(ablation_rows(rows, summaries), summaries)
    lines += ["Full tables (all metrics, Middlebury, rotation bins) and figures: [eval/report.md](eval/report.md).", ""]
    return "\n".join(lines)


def write_reports(
    cfg: Any,
    results: dict,
    summaries: list[dict],
    files: dict[str, Path],
    depth: dict | None = None,
    rows: list[dict] | None = None,
) -> tuple[Path, Path]:
    """``report.md`` and a self-contained ``report.html`` in ``cfg.out``."""
    out = Path(cfg.out)
    rows = summary_rows(results) if rows is None else rows
    text = _markdown_report(cfg, results, summaries, rows, depth)
    md = atomic_write_text(out / "report.md", text)
    sections = [(text, out)]
    eval_md = out / "eval" / "report.md"
    if eval_md.is_file():  # the full evaluation report, its figures relative to eval/
        sections.append((eval_md.read_text(), eval_md.parent))
    page = write_html_report(out / "report.html", "Splat-and-Distill demo", sections)
    return md, page
