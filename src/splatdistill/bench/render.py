"""Feature splatting: lift two context views and render them into a target view (CPU torch backend).

The workload of one Splat-and-Distill teacher target: two ``size x size`` context views of a room
(exact ray-cast depth: walls, floor, three spheres) are lifted into one Gaussian per pixel
(131,072 at 256 px) carrying ``channels``-dimensional teacher-like features (LayerNorm-ed random
tokens on a 14-px grid, bilinearly upsampled), then rendered into a target camera between them.

Printed: median and best time over repeats, peak memory, and the ratio of the median to a floor
measured in the same run -- the larger of (bytes that must move) / (measured copy bandwidth) and
(multiply-adds that must happen) / (measured matmul rate), where the bytes are reading every visible
Gaussian's feature once and writing the image, and the multiply-adds are C per composited
(Gaussian, pixel) pair.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time

import psutil
import torch
import torch.nn.functional as F

from splatdistill.devices import resolve_device
from splatdistill.errors import UserError
from splatdistill.geometry import Cameras, Gaussians, intrinsics, lift_depth, look_at_viewmat
from splatdistill.render import render_features
from splatdistill.render.torch_backend import render_torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", type=int, default=256, help="context/target image side (px)")
    parser.add_argument("--channels", type=int, default=384, help="feature channels")
    parser.add_argument("--repeats", type=int, default=15, help="timed renders")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--scale-factor", type=float, default=1.0, help="Gaussian footprint multiplier (lift_depth scale_factor)"
    )
    parser.add_argument("--opacity", type=float, default=0.95, help="Gaussian opacity")
    parser.add_argument("--backend", default="torch", choices=("torch", "gsplat", "auto"))
    parser.add_argument("--device", default="auto", help="auto (default: CUDA when present), cpu or cuda")


def room_depth(cams: Cameras) -> torch.Tensor:
    """Exact z-depth (..., H, W) of a 4 x 3 x 5 m room with three spheres, by ray casting."""
    rays = cams.ray_directions()  # unit camera-z, so the ray parameter is the z-depth
    origin = cams.centers[..., None, None, :]
    t = torch.full(rays.shape[:-1], math.inf, dtype=rays.dtype, device=rays.device)
    for axis, value in ((0, -2.0), (0, 2.0), (1, -1.5), (1, 1.5), (2, 4.0), (2, -1.0)):
        tt = (value - origin[..., axis]) / rays[..., axis]
        t = torch.minimum(t, torch.where(tt > 0, tt, torch.full_like(tt, math.inf)))
    for centre, radius in (((0.3, 0.2, 2.0), 0.5), ((-0.8, 0.6, 2.8), 0.7), ((1.0, -0.5, 3.0), 0.4)):
        oc = origin - torch.tensor(centre, dtype=rays.dtype, device=rays.device)
        a = (rays * rays).sum(-1)
        b = 2 * (rays * oc).sum(-1)
        c = (oc * oc).sum(-1) - radius**2
        disc = b * b - 4 * a * c
        tt = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
        t = torch.minimum(t, torch.where((disc > 0) & (tt > 0), tt, torch.full_like(tt, math.inf)))
    return t


def make_workload(
    size: int, channels: int, scale_factor: float = 1.0, opacity: float = 0.95, device: str = "cpu", seed: int = 0
) -> tuple[Gaussians, Cameras]:
    """Lifted Gaussians of two context views and the target camera between them."""
    g = torch.Generator().manual_seed(seed)
    K = intrinsics(0.9 * size, 0.9 * size, size / 2, size / 2)
    eyes = torch.tensor([[-0.15, 0.0, -0.5], [0.15, 0.0, -0.5], [0.0, 0.02, -0.5]])
    targets = torch.tensor([[0.1, 0.0, 3.0], [-0.1, 0.0, 3.0], [0.0, 0.0, 3.0]])
    cams = Cameras(K.expand(3, 3, 3), look_at_viewmat(eyes, targets), size, size)
    depth = room_depth(cams[:2])
    grid = size // 14 + 1
    tokens = torch.randn(2, channels, grid, grid, generator=g)
    tokens = F.layer_norm(tokens.movedim(1, -1), (channels,)).movedim(-1, 1)
    feats = F.interpolate(tokens, size=(size, size), mode="bilinear", align_corners=False)
    gauss = lift_depth(depth, cams[:2], feats.contiguous(), scale_factor=scale_factor, opacity=opacity)
    gauss = Gaussians(
        gauss.means.contiguous(),
        gauss.covariances.contiguous(),
        gauss.opacities.contiguous(),
        gauss.features.contiguous(),
    )
    return gauss.to(device), cams[2].to(device)


class PeakRSS:
    """Peak resident memory of the process over a block: the kernel's high-water mark
    (``ru_maxrss``), read at the end, so no sampling thread competes with the work measured."""

    def __init__(self) -> None:
        self.start_rss = psutil.Process().memory_info().rss
        self.peak = self.start_rss

    def __enter__(self) -> PeakRSS:
        return self

    def __exit__(self, *exc) -> None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.peak = max(kib * 1024, psutil.Process().memory_info().rss)


def measure_ceilings(device: str = "cpu", repeats: int = 7) -> tuple[float, float]:
    """(copy bandwidth in bytes/s counting read + write, float32 multiply-adds/s of a matmul)."""
    n = 64 * 2**20  # 256 MB: well past the caches
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best_copy = math.inf
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best_copy = min(best_copy, time.perf_counter() - t)
    m = 2048
    a = torch.randn(m, m, device=device)
    b = torch.randn(m, m, device=device)
    a @ b
    best_mm = math.inf
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        best_mm = min(best_mm, time.perf_counter() - t)
    return 2 * 4 * n / best_copy, m**3 / best_mm


def _loadavg() -> str:
    try:
        return f"{psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} cores"
    except (AttributeError, OSError):
        return "unknown"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _pair_counts(gauss, cam) -> dict:
    """Visible Gaussians, (Gaussian, pixel) pairs and composited pairs of one render (the torch backend counts)."""
    stats: dict = {}
    render_torch(
        gauss.means,
        gauss.covariances,
        gauss.opacities,
        gauss.features,
        cam.viewmats[None],
        cam.Ks[None],
        cam.width,
        cam.height,
        stats=stats,
    )
    return stats


def _time_renders(once, repeats: int, device: str) -> tuple[list[float], str, float, PeakRSS]:
    """After a warm-up render: the seconds of each of ``repeats`` renders, the load average before them, CPU
    seconds per render, and the peak-memory record of the timed renders."""
    img, alpha = once()  # warm-up
    times = []
    load_before = _loadavg()
    cpu0 = time.process_time()
    with PeakRSS() as mem:
        for _ in range(repeats):
            _sync(device)
            t = time.perf_counter()
            img, alpha = once()
            _sync(device)
            times.append(time.perf_counter() - t)
            del img, alpha
    return times, load_before, (time.process_time() - cpu0) / repeats, mem


def run(args: argparse.Namespace) -> int:
    if args.size < 16 or args.channels < 1 or args.repeats < 1 or args.threads < 1:
        raise UserError("--size >= 16, --channels >= 1, --repeats >= 1 and --threads >= 1")
    args.device = str(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    base_rss = psutil.Process().memory_info().rss
    gauss, cam = make_workload(args.size, args.channels, args.scale_factor, args.opacity, args.device)
    setup_rss = psutil.Process().memory_info().rss
    with torch.no_grad():
        stats = _pair_counts(gauss, cam) if args.backend == "torch" else {}

        def once():
            return render_features(
                gauss.means,
                gauss.covariances,
                gauss.opacities,
                gauss.features,
                cam.viewmats,
                cam.Ks,
                cam.width,
                cam.height,
                backend=args.backend,
            )

        times, load_before, cpu_per_render, mem = _time_renders(once, args.repeats, args.device)
    bandwidth, mac_rate = measure_ceilings(args.device)
    median = statistics.median(times)
    P, C = args.size * args.size, args.channels
    visible = stats.get("visible", len(gauss))
    composited = stats.get("composited")
    bytes_floor = 4 * (visible * C + P * (C + 1))
    macs = (composited if composited is not None else 0) * C
    floor = max(bytes_floor / bandwidth, macs / mac_rate)
    print(
        f"workload: {len(gauss):,} Gaussians (2 x {args.size}x{args.size} lifted, scale factor "
        f"{args.scale_factor}, opacity {args.opacity}) -> 1 x {args.size}x{args.size} x {C} ch; "
        f"backend {args.backend} on {args.device}, {torch.get_num_threads()} threads"
    )
    if stats:
        print(
            f"pairs: {stats['pairs']:,} with alpha >= 1/255, {composited:,} composited "
            f"({composited / P:.1f} per pixel), {visible:,} Gaussians visible"
        )
    print(
        f"time: median {median * 1e3:.1f} ms, best {min(times) * 1e3:.1f} ms over "
        f"{args.repeats} renders; {cpu_per_render * 1e3:.0f} ms of CPU per render; load "
        f"average {load_before} before (other processes on the cores slow every figure here)"
    )
    print(
        f"memory: peak RSS {mem.peak / 2**30:.2f} GiB (process high-water mark; "
        f"{base_rss / 2**30:.2f} GiB before building the scene, {setup_rss / 2**30:.2f} GiB "
        f"with it: rendering adds at most {(mem.peak - setup_rss) / 2**20:.0f} MiB)"
    )
    print(f"ceilings: copy {bandwidth / 1e9:.1f} GB/s (read+write), matmul {mac_rate / 1e9:.1f} G multiply-adds/s")
    print(
        f"floor: {floor * 1e3:.1f} ms = max(bytes {bytes_floor / 1e6:.0f} MB -> "
        f"{bytes_floor / bandwidth * 1e3:.1f} ms, multiply-adds {macs / 1e9:.2f} G -> "
        f"{macs / mac_rate * 1e3:.1f} ms); median / floor = {median / floor:.1f}x"
    )
    goals = [
        ("median <= 250 ms", median <= 0.250),
        ("within 10x of the floor", median / floor <= 10),
        ("peak memory <= 2 GB", mem.peak <= 2e9),
    ]
    print("goals: " + ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in goals))
    return 0
