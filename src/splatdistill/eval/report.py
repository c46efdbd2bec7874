"""``report.md`` (one table per task, backbones as rows, best value in bold) and PNG figures: a bar
chart per metric, PCA images of the same held-out views for every backbone, and qualitative
depth / normal / segmentation predictions next to the ground truth.

Figures use matplotlib's object API with the Agg canvas directly, so writing a report never switches
the global pyplot backend of the calling program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splatdistill.atomic import atomic_savefig, atomic_write_text
from splatdistill.data.scene import ViewData
from splatdistill.eval.metrics import HIGHER_IS_BETTER, rotation_bin_labels
from splatdistill.report_html import write_html_report

#: Columns of each task's table: (results key, header, format).
TASK_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "depth": [
        ("abs_rel", "AbsRel ↓", "{:.4f}"),
        ("rmse", "RMSE (m) ↓", "{:.3f}"),
        ("delta1", "δ<1.25 ↑", "{:.3f}"),
        ("delta2", "δ<1.25² ↑", "{:.3f}"),
        ("delta3", "δ<1.25³ ↑", "{:.3f}"),
    ],
    "normals": [
        ("mean_deg", "mean (°) ↓", "{:.2f}"),
        ("median_deg", "median (°) ↓", "{:.2f}"),
        ("rmse_deg", "RMSE (°) ↓", "{:.2f}"),
        ("pct_11_25", "% < 11.25° ↑", "{:.1f}"),
        ("pct_22_5", "% < 22.5° ↑", "{:.1f}"),
        ("pct_30", "% < 30° ↑", "{:.1f}"),
    ],
    "segmentation": [("miou", "mIoU ↑", "{:.3f}"), ("pixel_acc", "pixel acc. ↑", "{:.3f}")],
    "correspondence": [
        ("recall_5", "recall@5px ↑", "{:.3f}"),
        ("recall_10", "recall@10px ↑", "{:.3f}"),
        ("recall_20", "recall@20px ↑", "{:.3f}"),
    ],
    "consistency": [
        ("positive_cos", "cos same point ↑", "{:.3f}"),
        ("random_cos", "cos random pairs", "{:.3f}"),
        ("gap", "gap ↑", "{:.3f}"),
        ("auc", "AUC ↑", "{:.3f}"),
    ],
}

TASK_TITLES = {
    "depth": "Depth (linear probe, 256 bins)",
    "normals": "Surface normals (linear probe with uncertainty)",
    "segmentation": "Semantic segmentation (BatchNorm + 1x1 conv)",
    "correspondence": "Multi-view correspondence",
    "consistency": "Multi-view feature consistency",
}


@dataclass
class FigureData:
    """What the qualitative figures show: a few held-out views and each backbone's outputs on them."""

    views: list[ViewData] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    depth: dict[str, list[np.ndarray]] = field(default_factory=dict)
    normals: dict[str, list[np.ndarray]] = field(default_factory=dict)
    segmentation: dict[str, list[np.ndarray]] = field(default_factory=dict)
    pca: dict[str, list[np.ndarray]] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    max_depth: float = 10.0


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def _best(values: list[Any], higher: bool | None) -> set[int]:
    """Rows holding the best value of a column (all tied rows); none when fewer than two numbers or
    when the column has no better direction."""
    nums = [(i, v) for i, v in enumerate(values) if isinstance(v, (int, float)) and math.isfinite(v)]
    if len(nums) < 2 or higher is None:
        return set()
    pick = max if higher else min
    best = pick(v for _, v in nums)
    return {i for i, v in nums if v == best}


def markdown_table(
    labels: list[str],
    rows: list[dict],
    columns: list[tuple[str, str, str]],
    higher: dict[str, bool] | None = None,
    first: str = "backbone",
) -> str:
    """A markdown table with one row per label (``first`` heads that column) and the best cell of each
    column in bold (direction from ``higher``, default :data:`HIGHER_IS_BETTER`; columns without one are
    left plain). ``columns`` are (row key, header, format); columns of strings align left, numbers right."""
    higher = HIGHER_IS_BETTER if higher is None else higher
    head = f"| {first} | " + " | ".join(h for _, h, _ in columns) + " |"
    # numbers align right, words (a lifter's name, a metric, a goal) align left
    text = [
        all(isinstance(r.get(k), str) for r in rows if r.get(k) is not None) and any(r.get(k) is not None for r in rows)
        for k, _, _ in columns
    ]
    sep = "|---|" + "".join("---|" if t else "---:|" for t in text)
    cells = [[_fmt(r.get(k), f) for k, _, f in columns] for r in rows]
    for c, (key, _, fmt) in enumerate(columns):
        if higher.get(key) is None:
            continue
        # Compare the values as shown, so two rows that print the same are both bold.
        shown = [r.get(key) if r.get(key) is None else float(_fmt(r.get(key), fmt).replace("–", "nan")) for r in rows]
        for i in _best(shown, higher.get(key)):
            cells[i][c] = f"**{cells[i][c]}**"
    lines = [head, sep] + [f"| {label} | " + " | ".join(cs) + " |" for label, cs in zip(labels, cells)]
    return "\n".join(lines)


def _task_rows(doc: dict, task: str) -> tuple[list[str], list[dict]]:
    labels, rows = [], []
    for b in doc["backbones"]:
        labels.append(b["label"])
        rows.append(b["results"].get(task, {}))
    return labels, rows


def render_markdown(doc: dict, figures: dict[str, str]) -> str:
    """The whole report as markdown (``figures`` maps figure names to paths relative to the report)."""
    lines = _header_lines(doc)
    labels = [b["label"] for b in doc["backbones"]]
    for task in doc["tasks"]:
        lines += [f"## {TASK_TITLES[task]}", ""]
        _, rows = _task_rows(doc, task)
        if task in ("correspondence", "consistency"):
            lines += _pair_task_lines(task, labels, rows, doc["data"]["name"])
        else:
            lines += _view_task_lines(task, labels, rows)
        if f"bars_{task}" in figures:
            lines += [f"![{task} metrics]({figures[f'bars_{task}']})", ""]
    return "\n".join(lines + _qualitative_lines(figures) + _timing_lines(doc))


def _header_lines(doc: dict) -> list[str]:
    """Title, the data and protocol sentence, the run's notes and the table of backbones."""
    data = doc["data"]
    lines = [
        "# splatdistill evaluation report",
        "",
        f"splatdistill {doc['splatdistill_version']}, {doc['created']}. Data: **{data['name']}** "
        + (
            f"(probes trained on {data.get('train_views', 0)} views of {data.get('train_scenes', 0)} '{data['train_split']}' "
            f"scenes, evaluated on {data.get('eval_views', 0)} views of {data.get('eval_scenes', 0)} held-out "
            f"'{data['eval_split']}' scenes)"
            if data["eval_split"] != "train"
            else f"(no held-out scenes: no probes; the multi-view tasks on {data.get('eval_views', 0)} views of "
            f"{data.get('eval_scenes', 0)} 'train' scenes, not held out)"
        )
        + f"; backbone input {data['input_size'][0]}x{data['input_size'][1]} px. "
        "Protocol: docs/evaluation.md.",
        "",
    ]
    for note in data.get("notes", []):
        lines += [f"> Note: {note}", ""]
    lines += ["| backbone | spec | dim | patch | token grid |", "|---|---|---:|---:|---|"]
    for b in doc["backbones"]:
        lines.append(
            f"| {b['label']} | `{b['spec']}` | {b['embed_dim']} | {b['patch_size']} | {b['grid'][0]}x{b['grid'][1]} |"
        )
    lines.append("")
    return lines


def _pair_task_lines(task: str, labels: list[str], rows: list[dict], data_name: str) -> list[str]:
    """A multi-view task's tables, one per dataset of view pairs (the evaluated data first)."""
    lines: list[str] = []
    datasets = sorted({d for r in rows for d in r}, key=lambda d: (d != data_name, d))
    if not datasets:
        lines += ["No view pairs with enough overlap were found.", ""]
    for d in datasets:
        sub = [r.get(d, {}) for r in rows]
        reason = next((x["skipped"] for x in sub if x.get("skipped")), None)
        if reason:
            lines += [f"**{d}**: skipped — {reason}.", ""]
            continue
        n_pairs = max((s.get("pairs", 0) for s in sub), default=0)
        lines += [f"**{d}** ({n_pairs} pairs)", "", markdown_table(labels, sub, TASK_COLUMNS[task]), ""]
        if task == "correspondence" and n_pairs:
            lines += _rotation_lines(d, labels, sub)
    return lines


def _rotation_lines(dataset: str, labels: list[str], sub: list[dict]) -> list[str]:
    """The table of correspondence recall@10px by relative rotation bin on ``dataset``."""
    bins = rotation_bin_labels()
    counts = {
        b: max((s.get("recall_10_by_rotation", {}).get(b, {}).get("pairs", 0) for s in sub), default=0) for b in bins
    }
    cols = [(b, f"{b}° ({counts[b]})", "{:.3f}") for b in bins]
    flat = [{b: (s.get("recall_10_by_rotation", {}).get(b) or {}).get("recall_10") for b in bins} for s in sub]
    return [
        f"recall@10px by relative rotation on {dataset} (pairs per bin):",
        "",
        markdown_table(labels, flat, cols, {b: True for b in bins}),
        "",
    ]


def _view_task_lines(task: str, labels: list[str], rows: list[dict]) -> list[str]:
    """A per-view task's table, with the backbones that skipped it named above it."""
    lines: list[str] = []
    skipped = [f"{label}: {r['skipped']}" for label, r in zip(labels, rows) if "skipped" in r]
    if skipped:
        lines += ["Skipped — " + "; ".join(skipped), ""]
    if any("skipped" not in r for r in rows):
        lines += [markdown_table(labels, rows, TASK_COLUMNS[task]), ""]
        if task == "segmentation":
            n = max((r.get("n_classes", 0) for r in rows), default=0)
            lines += [f"mIoU over the {n} classes present in the held-out ground truth.", ""]
    return lines


def _qualitative_lines(figures: dict[str, str]) -> list[str]:
    """The qualitative figures that were drawn, each under its caption."""
    qual = [
        ("pca", "PCA of patch features (3 components fitted jointly over the shown views, per backbone)"),
        ("depth_predictions", "Depth predictions (same colour scale as the ground truth per view)"),
        ("normal_predictions", "Normal predictions (camera frame, RGB = 0.5 n + 0.5)"),
        ("segmentation_predictions", "Segmentation predictions"),
    ]
    if not any(k in figures for k, _ in qual):
        return []
    lines = ["## Qualitative", ""]
    for key, title in qual:
        if key in figures:
            lines += [f"{title}:", "", f"![{key}]({figures[key]})", ""]
    return lines


def _timing_lines(doc: dict) -> list[str]:
    """Seconds per backbone and stage, and the wall time of the whole evaluation."""
    lines = [
        "## Timing",
        "",
        "| backbone | " + " | ".join(_timing_keys(doc)) + " |",
        "|---|" + "---:|" * len(_timing_keys(doc)),
    ]
    for b in doc["backbones"]:
        t = b["timings"]
        cached = " (cached)" if b.get("cache_hit") else ""
        lines.append(f"| {b['label']}{cached} | " + " | ".join(f"{t.get(k, 0):.1f}" for k in _timing_keys(doc)) + " |")
    lines += ["", f"Wall time of the whole evaluation: {doc['wall_time_s']:.1f} s.", ""]
    return lines


def _timing_keys(doc: dict) -> list[str]:
    keys: list[str] = []
    for b in doc["backbones"]:
        keys += [k for k in b["timings"] if k not in keys]
    return keys


# -------------------------------------------------------------------------------------------- figures


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    atomic_savefig(fig, path, bbox_inches="tight")


def bar_chart(doc: dict, task: str, path: Path) -> bool:
    """One subplot per metric of ``task`` (per dataset for the pair tasks), one bar per backbone."""
    labels = [b["label"] for b in doc["backbones"]]
    panels: list[tuple[str, list[float]]] = []
    if task in ("correspondence", "consistency"):
        found = {d for b in doc["backbones"] for d in b["results"].get(task, {})}
        for d in sorted(found, key=lambda d: (d != doc["data"]["name"], d)):  # the data first
            for key, header, _ in TASK_COLUMNS[task]:
                vals = [b["results"].get(task, {}).get(d, {}).get(key) for b in doc["backbones"]]
                if any(v is not None for v in vals):
                    panels.append((f"{header} [{d}]", vals))
    else:
        for key, header, _ in TASK_COLUMNS[task]:
            vals = [b["results"].get(task, {}).get(key) for b in doc["backbones"]]
            if any(v is not None for v in vals):
                panels.append((header, vals))
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _new_figure(4.2 * cols, 3.2 * rows)
    colours = [f"C{i % 10}" for i in range(len(labels))]
    for p, (title, vals) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, p + 1)
        ys = [np.nan if v is None else v for v in vals]
        bars = ax.bar(range(len(labels)), ys, color=colours)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        for bar, v in zip(bars, ys):
            if np.isfinite(v):
                ax.annotate(f"{v:.3g}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
    fig.suptitle(TASK_TITLES[task], fontsize=11)
    fig.tight_layout()
    _save(fig, path)
    return True


def _image_grid(
    rows: list[tuple[str, list[np.ndarray], dict]],
    titles: list[str],
    path: Path,
    title: str,
    vmax: list[float] | None = None,
) -> None:
    """Rows of images (row label, images, imshow kwargs), one column per view. 2D maps are shown with
    zeros blank and, if ``vmax`` is given, on a per-column scale [0, vmax[c]] shared down the column."""
    ncols = max(len(r[1]) for r in rows)
    fig = _new_figure(2.4 * ncols + 0.6, 2.3 * len(rows) + 0.4)
    for r, (label, imgs, kw) in enumerate(rows):
        for c, img in enumerate(imgs):
            ax = fig.add_subplot(len(rows), ncols, r * ncols + c + 1)
            kwargs = dict(kw)
            if img.ndim == 2:
                img = np.ma.masked_where(img <= 0, img)
                if vmax is not None:
                    kwargs.update(vmin=0.0, vmax=vmax[c])
            ax.imshow(img, interpolation="nearest", **kwargs)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and c < len(titles):
                ax.set_title(titles[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _normals_rgb(n: np.ndarray) -> np.ndarray:
    valid = np.linalg.norm(n, axis=-1, keepdims=True) > 0.5
    return np.where(valid, np.clip(0.5 * n + 0.5, 0, 1), 0.0)


def _labels_rgb(labels: np.ndarray, k: int) -> np.ndarray:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    rgb = np.array([cmap(i % 20)[:3] for i in range(max(k, 1))])
    return np.where((labels >= 0)[..., None], rgb[np.clip(labels, 0, len(rgb) - 1)], 0.0)


def qualitative_figures(figs: FigureData, out_dir: Path) -> dict[str, str]:
    """PCA images and depth / normal / segmentation predictions of the figure views."""
    files: dict[str, str] = {}
    if not figs.views:
        return files
    images = [v.image for v in figs.views]
    short = [t.split("/")[0].strip() + "/" + t.split("/")[-1].strip() for t in figs.titles]
    if figs.pca:
        rows = [("image", images, {})] + [(label, imgs, {}) for label, imgs in figs.pca.items()]
        _image_grid(rows, short, out_dir / "pca.png", "PCA of patch features")
        files["pca"] = "pca.png"
    if figs.depth and all(v.depth is not None for v in figs.views):
        vmax = [float(np.percentile(v.depth[v.depth > 0], 99)) if (v.depth > 0).any() else 1.0 for v in figs.views]
        rows = [("image", images, {}), ("ground truth", [v.depth for v in figs.views], {"cmap": "turbo"})]
        rows += [(label, preds, {"cmap": "turbo"}) for label, preds in figs.depth.items()]
        _image_grid(rows, short, out_dir / "depth_predictions.png", "Depth (metres; blank = no ground truth)", vmax)
        files["depth_predictions"] = "depth_predictions.png"
    if figs.normals and all(v.normals is not None for v in figs.views):
        rows = [("image", images, {}), ("ground truth", [_normals_rgb(v.normals) for v in figs.views], {})]
        rows += [(label, [_normals_rgb(p) for p in preds], {}) for label, preds in figs.normals.items()]
        _image_grid(rows, short, out_dir / "normal_predictions.png", "Surface normals")
        files["normal_predictions"] = "normal_predictions.png"
    if figs.segmentation and all(v.semantic is not None for v in figs.views):
        k = len(figs.class_names)
        rows = [("image", images, {}), ("ground truth", [_labels_rgb(v.semantic, k) for v in figs.views], {})]
        rows += [(label, [_labels_rgb(p, k) for p in preds], {}) for label, preds in figs.segmentation.items()]
        _image_grid(rows, short, out_dir / "segmentation_predictions.png", "Semantic segmentation")
        files["segmentation_predictions"] = "segmentation_predictions.png"
    return files


def write_all(doc: dict, out_dir: Path, figs: FigureData | None) -> dict[str, str]:
    """Write the figures and ``report.md`` into ``out_dir``; returns {name: file} of what was written."""
    out_dir = Path(out_dir)
    files: dict[str, str] = {}
    if figs is not None:
        for task in doc["tasks"]:
            name = f"bars_{task}.png"
            if bar_chart(doc, task, out_dir / name):
                files[f"bars_{task}"] = name
        files.update(qualitative_figures(figs, out_dir))
    text = render_markdown(doc, files)
    atomic_write_text(out_dir / "report.md", text)
    write_html_report(out_dir / "report.html", "splatdistill evaluation", [(text, out_dir)])
    files["report"] = "report.md"
    files["report_html"] = "report.html"
    files["results"] = "results.json"
    return files
