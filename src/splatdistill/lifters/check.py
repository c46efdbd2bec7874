"""``splatdistill lifter check SPEC``: lift one context pair of the user's data and report what came out.

Why: a lifter that places Gaussians at the wrong scale, fades them all, or misses the target view costs
a GPU-day of training before the stall detector notices; one pair shows it in seconds. The report is
the depth of the Gaussians in their context cameras (against the data's depth where it has some), their
opacities, and the share of a third view of the scene that the lifted pair covers when splatted into it
(the trainer's supervised share depends on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from splatdistill.data.scene import Scene
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras
from splatdistill.geometry.gaussians import Gaussians
from splatdistill.render import render_features
from splatdistill.splat.lifter import SplatSettings
from splatdistill.splat.scene import lift_scene, load_scene_views

#: alpha above which a target pixel counts as covered (the trainer keeps tokens down to ``min_coverage``)
COVERED_ALPHA = 0.5


@dataclass
class CheckReport:
    spec: str
    scene: str
    context: list[int]
    target: int
    size: tuple[int, int]
    gaussians: int
    depth: list[dict[str, float]]  # per context view: min, p05, median, p95, max (z in its own camera)
    opacity: dict[str, float]  # mean, min, p05, median, p95, max, share >= 0.5
    coverage: float  # share of target pixels with alpha > COVERED_ALPHA
    touched: float  # share of target pixels with alpha > 1e-3
    depth_abs_rel: list[float] | None = None  # per context view, against the data's depth (where > 0)
    alignment: list[list] | None = None  # monocular lifters: per view (source, s, t) of 1/z = s r + t
    warnings: list[str] = field(default_factory=list)


def _stats(x: np.ndarray, names=("min", "p05", "median", "p95", "max")) -> dict[str, float]:
    q = np.quantile(x, [0.0, 0.05, 0.5, 0.95, 1.0]) if x.size else np.full(5, np.nan)
    return dict(zip(names, (float(v) for v in q)))


def gaussian_depths(g: Gaussians, cameras: Cameras, pixels: int) -> list[np.ndarray]:
    """z of each Gaussian in its context camera: pixel-aligned lifters (``len(g) == V * pixels``) give view ``v``
    Gaussians ``v*pixels .. (v+1)*pixels``; other lifters (PLY) are measured in every context camera."""
    V = cameras.viewmats.shape[0]
    means = g.means.detach().double().cpu()
    vm = cameras.viewmats.double().cpu()
    out = []
    for v in range(V):
        pts = means[v * pixels : (v + 1) * pixels] if len(g) == V * pixels else means
        out.append((pts @ vm[v, :3, :3].T + vm[v, :3, 3])[:, 2].numpy())
    return out


def target_alpha(g: Gaussians, camera: Cameras, renderer: str = "auto") -> Tensor:
    """Alpha of the Gaussians splatted into one camera (H, W), on the Gaussians' device."""
    ones = torch.ones(len(g), 1, dtype=g.means.dtype, device=g.means.device)
    _, alpha = render_features(
        g.means,
        g.covariances,
        g.opacities,
        ones,
        camera.viewmats,
        camera.Ks,
        camera.width,
        camera.height,
        backend=renderer,
    )
    return alpha[0]


def default_views(scene: Scene) -> tuple[list[int], int]:
    """Context views 0 and 2 with target 1 between them (as the trainer draws nearby views); a two-view
    scene uses views 0 and 1 and renders into view 1 itself."""
    n = len(scene)
    if n < 2:
        raise UserError(f"scene {scene.name} has {n} view: a context pair needs two")
    return ([0, 2], 1) if n >= 3 else ([0, 1], 1)


def check_lifter(
    lifter: Any,
    scene: Scene,
    spec: str,
    context: list[int] | None = None,
    target: int | None = None,
    size: int = 112,
    backbone: Any = None,
    settings: SplatSettings | None = None,
    device: torch.device | str = "cpu",
) -> CheckReport:
    """Lift ``context`` views of ``scene`` with ``lifter`` at ``size`` and measure the result (docstring above).
    The views (images, cameras, teacher features) go to ``device`` before lifting; a learned predictor
    runs where its inputs are, and the target view is splatted there too."""
    settings = settings or SplatSettings()
    d_ctx, d_tgt = default_views(scene)
    context = list(context) if context is not None else d_ctx
    target = d_tgt if target is None else int(target)
    sv = load_scene_views(scene, context + [target], size, backbone).to(device)
    pair = sv[: len(context)]
    with torch.no_grad():
        g = lift_scene(pair, lifter, carry="auto", chunk=len(context))
    H, W = pair.images.shape[-2:]
    depths = gaussian_depths(g, pair.cameras, H * W)
    op = g.opacities.detach().double().cpu().numpy()
    opacity = _stats(op) | {
        "mean": float(op.mean()) if op.size else float("nan"),
        "share_ge_0.5": float((op >= 0.5).mean()) if op.size else 0.0,
    }
    alpha = target_alpha(g, sv[len(context) :].cameras, settings.renderer)
    report = CheckReport(
        spec,
        scene.name,
        context,
        target,
        (int(H), int(W)),
        len(g),
        [_stats(d) for d in depths],
        opacity,
        float((alpha > COVERED_ALPHA).double().mean()),
        float((alpha > 1e-3).double().mean()),
    )
    if pair.has_depth and len(g) == len(context) * H * W:
        gt = pair.depths.double().cpu().numpy().reshape(len(context), -1)
        report.depth_abs_rel = [
            float(np.mean(np.abs(d[m] - t[m]) / t[m])) if (m := t > 0).any() else float("nan")
            for d, t in zip(depths, gt)
        ]
    if getattr(lifter, "last_fit", None):
        report.alignment = [list(f) for f in lifter.last_fit]
    report.warnings = _warnings(report)
    return report


def _warnings(r: CheckReport) -> list[str]:
    out = []
    if any(d["p05"] <= 0 for d in r.depth):
        out.append("some Gaussians lie behind their camera (depth <= 0): wrong pose convention or scale?")
    if r.opacity["share_ge_0.5"] < 0.1:
        out.append("fewer than 10% of the Gaussians are opaque (>= 0.5): the targets will be faint")
    if r.coverage < 0.3:
        out.append("the pair covers under 30% of the target view: check the depth scale (near/far) and poses")
    if r.depth_abs_rel and max(r.depth_abs_rel) > 0.3:
        out.append("depth is far from the data's (AbsRel > 0.3): the lifter's scale does not match the data's")
    return out


def format_report(r: CheckReport) -> str:
    lines = [
        f"lifter {r.spec}: scene {r.scene}, context views {r.context}, target view {r.target}, "
        f"{r.size[0]}x{r.size[1]} px -> {r.gaussians} Gaussians"
    ]
    for v, d in zip(r.context, r.depth):
        lines.append(
            f"  depth view {v}: min {d['min']:.3f}  p05 {d['p05']:.3f}  median {d['median']:.3f}  "
            f"p95 {d['p95']:.3f}  max {d['max']:.3f}"
        )
    if r.depth_abs_rel is not None:
        lines.append(
            "  depth vs the data's depth: AbsRel "
            + ", ".join(f"view {v} {a:.3f}" for v, a in zip(r.context, r.depth_abs_rel))
        )
    if r.alignment:
        lines.append(
            "  scale alignment (1/z = s r + t): "
            + ", ".join(f"view {v} from {src} (s {s:.4g}, t {t:.4g})" for v, (src, s, t) in zip(r.context, r.alignment))
        )
    o = r.opacity
    lines.append(
        f"  opacity: mean {o['mean']:.3f}  min {o['min']:.3f}  median {o['median']:.3f}  max {o['max']:.3f}  "
        f"share >= 0.5: {o['share_ge_0.5']:.1%}"
    )
    lines.append(
        f"  target view {r.target} coverage: {r.coverage:.1%} of pixels alpha > {COVERED_ALPHA} "
        f"({r.touched:.1%} touched)"
    )
    lines += [f"  warning: {w}" for w in r.warnings]
    lines.append("  looks usable" if not r.warnings else f"  {len(r.warnings)} warning(s): fix before training")
    return "\n".join(lines)
