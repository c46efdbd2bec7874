"""``splatdistill data``: check datasets, build the embedded ``rooms`` dataset, contact sheets, info, export."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from splatdistill.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "data", help="datasets: check, build-rooms, contact-sheet, info, export, from-images, from-rgbd"
    )
    dsub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    p = dsub.add_parser("check", help="validate a dataset; report every problem with its file (exit 1 if any)")
    p.add_argument("path", type=Path)
    p.add_argument("--skip-bad", action="store_true", help="report problems as warnings; bad views are left out")
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument(
        "--geometry",
        type=int,
        default=0,
        metavar="N",
        help="also measure depth/normal/label consistency on N random view pairs per scene",
    )
    p.set_defaults(func=_plain_warnings(cmd_check))

    p = dsub.add_parser("build-rooms", help="render the embedded rooms dataset (cached: reruns do nothing)")
    p.add_argument("--out", type=Path, help="output folder (default: in the data cache)")
    p.add_argument("--scenes", type=int, default=32, help="number of rooms (default 32: 24 train, 4 val, 4 test)")
    p.add_argument("--views", type=int, default=16, help="views per room (default 16)")
    p.add_argument("--size", type=int, default=256, help="image size in pixels (square, default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes (default: up to 2)")
    p.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    p.set_defaults(func=_plain_warnings(cmd_build_rooms))

    p = dsub.add_parser("contact-sheet", help="write a PNG grid of views and ground truth")
    p.add_argument("path", type=Path)
    p.add_argument("--out", type=Path, help="PNG path (default: PATH/contact_sheet.png)")
    p.add_argument("--scenes", type=int, default=8)
    p.set_defaults(func=_plain_warnings(cmd_contact_sheet))

    p = dsub.add_parser("info", help="summarise a dataset: scenes, splits, views, ground truth present")
    p.add_argument("path", type=Path)
    p.set_defaults(func=_plain_warnings(cmd_info))

    p = dsub.add_parser(
        "middlebury", help="write the Middlebury Motorcycle stereo pair (real photos, metric depth) as a scene"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--width", type=int, default=None, help="resize to this width (K scaled to match)")
    p.set_defaults(func=_plain_warnings(cmd_middlebury))

    p = dsub.add_parser(
        "export", help="write a dataset in another layout (splatdistill, nerfstudio, colmap, scannetpp)"
    )
    p.add_argument("path", type=Path)
    p.add_argument("--to", required=True, choices=["splatdistill", "nerfstudio", "colmap", "scannetpp"])
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_plain_warnings(cmd_export))
    _register_captures(dsub)


def _register_captures(dsub: argparse._SubParsersAction) -> None:
    """``data from-images`` and ``data from-rgbd``: a posed dataset from the user's own captures."""
    p = dsub.add_parser(
        "from-images", help="photos of a scene -> a posed dataset (structure from motion with pycolmap, CPU)"
    )
    p.add_argument("photos", type=Path, help="folder of photos (jpg/png/tif) of one static scene")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write (COLMAP layout: images/, sparse/)")
    p.add_argument(
        "--matcher",
        choices=["auto", "exhaustive", "sequential"],
        default="auto",
        help="auto: exhaustive up to 60 photos, else sequential (frames of a video, in name order)",
    )
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model before undistortion")
    p.add_argument("--per-image-camera", action="store_true", help="a camera per photo (different devices or zoom)")
    p.add_argument("--max-image-size", type=int, default=1600, help="SIFT on photos scaled to this longest side")
    p.add_argument(
        "--median-depth",
        type=float,
        default=2.0,
        help="scale the model so the median depth is this many units (SfM has no metric scale; 0 keeps COLMAP's)",
    )
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the cores this process may use)")
    p.set_defaults(func=_plain_warnings(cmd_from_images))

    p = dsub.add_parser("from-rgbd", help="an RGB-D sequence without poses -> a posed dataset (RGB-D odometry, Open3D)")
    p.add_argument(
        "sequence", type=Path, help="TUM sequence, 7-Scenes seq-NN folder, or a folder of colour + depth files"
    )
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write (OUT/<sequence>/scene.json)")
    p.add_argument("--color-intrinsics", help="fx,fy,cx,cy (OpenCV convention) or a file (ViSP XML, 3x3 matrix)")
    p.add_argument("--depth-intrinsics", help="the depth camera's, when it is not the colour camera")
    p.add_argument(
        "--color-to-depth",
        help="4x4 transform file taking colour-camera points to the depth camera "
        "(ViSP's depth_M_color); depth is registered to the colour camera with it",
    )
    p.add_argument("--depth-scale", type=float, help="metres per stored depth unit (default: the layout's, else 0.001)")
    p.add_argument("--every", type=int, default=1, help="keep one frame in N (default 1)")
    p.add_argument("--depth-max", type=float, default=4.0, help="odometry ignores depth beyond this (metres)")
    p.set_defaults(func=_plain_warnings(cmd_from_rgbd))


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _plain_warnings(func):
    """Show warnings as one ``warning: ...`` line (no source location) while a subcommand runs."""

    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return func(args)

    run.__doc__ = func.__doc__
    return run


def _know_benchmarks() -> None:
    """Make the paper's benchmark layouts readable by ``load_dataset`` (they register on import)."""
    import splatdistill.eval.benchmarks  # noqa: F401


def cmd_check(args: argparse.Namespace) -> int:
    from splatdistill.data.checks.dataset import check_dataset, geometry_report

    _know_benchmarks()

    report = check_dataset(args.path, split=args.split)
    label = "warning" if args.skip_bad else "error"
    for p in report.problems:
        print(f"{label}: {p}", file=sys.stderr)
    n_views = sum(len(s) for s in report.scenes)
    print(
        f"{args.path} ({report.format}): {len(report.scenes)} scenes, {n_views} usable views; "
        f"{len(report.problems)} problems"
        + (f" in {len(report.bad_views)} views (left out)" if args.skip_bad and report.problems else "")
    )
    if args.geometry and report.scenes:
        g = geometry_report(report.scenes, pairs_per_scene=args.geometry)
        if g is None:
            print("geometry: no view pairs with depth")
        else:
            parts = [
                f"depth reprojection median relative error {g.median_reprojection_rel_error:.4%} "
                f"(mutually visible {g.visible_fraction:.0%})"
            ]
            if g.median_normal_angle_deg == g.median_normal_angle_deg:  # not NaN
                parts.append(f"normals vs depth median {g.median_normal_angle_deg:.2f} deg on planar regions")
            if g.label_agreement == g.label_agreement:
                parts.append(f"instance labels agree on {g.label_agreement:.1%} of reprojected pixels")
            print(f"geometry ({g.pairs} pairs): " + "; ".join(parts))
    if args.skip_bad:
        return 0 if n_views > 0 else 1
    return 1 if report.problems else 0


def cmd_build_rooms(args: argparse.Namespace) -> int:
    from splatdistill.data.rooms.build import RoomsParams, build_rooms, default_rooms_dir, is_complete, read_manifest

    params = RoomsParams(scenes=args.scenes, views=args.views, size=args.size, seed=args.seed)
    params.validate()
    out = args.out if args.out is not None else default_rooms_dir(params)
    if not args.force and is_complete(out, params):
        print(
            f"{out}: up to date (rooms, {params.scenes} scenes x {params.views} views, {params.size}px, seed {params.seed})"
        )
        return 0
    t0 = time.perf_counter()
    build_rooms(out, params, workers=args.workers, force=args.force)
    m = read_manifest(out) or {}
    mb = m.get("size_bytes", 0) / 1e6
    print(
        f"{out}: built {params.scenes} scenes x {params.views} views at {params.size}px in "
        f"{time.perf_counter() - t0:.0f} s, {mb:.1f} MB; contact sheet: {out / 'contact_sheet.png'}"
    )
    return 0


def cmd_contact_sheet(args: argparse.Namespace) -> int:
    from splatdistill.data.checks.contact_sheet import write_contact_sheet

    out = args.out or (args.path / "contact_sheet.png")
    write_contact_sheet(args.path, out, max_scenes=args.scenes)
    print(out)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from splatdistill.data import detect_format, load_dataset

    _know_benchmarks()

    scenes = load_dataset(args.path)
    fmt = detect_format(args.path)
    splits: dict[str, int] = {}
    for s in scenes:
        splits[s.split] = splits.get(s.split, 0) + 1
    first = scenes[0].load_view(0)
    gt = [k for k in ("depth", "normals", "instance", "semantic") if getattr(first, k) is not None]
    print(
        f"{args.path} ({fmt}): {len(scenes)} scenes ({', '.join(f'{k} {v}' for k, v in sorted(splits.items()))}), "
        f"{sum(len(s) for s in scenes)} views, first view {first.width}x{first.height}, ground truth: {', '.join(gt) or 'none'}"
    )
    if scenes[0].class_names:
        print("classes: " + ", ".join(scenes[0].class_names))
    return 0


def cmd_middlebury(args: argparse.Namespace) -> int:
    from splatdistill.data.formats.middlebury import load_middlebury
    from splatdistill.data.formats.native import save_scene

    scene = load_middlebury(args.width)
    save_scene(scene, args.out / scene.name)
    print(args.out / scene.name)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from splatdistill.data import load_dataset

    _know_benchmarks()

    scenes = load_dataset(args.path)
    if args.to == "splatdistill":
        from splatdistill.data.formats.native import save_scene

        for s in scenes:
            save_scene(s, args.out / s.name)
    elif args.to == "scannetpp":
        from splatdistill.data.formats.scannetpp import write_scannetpp

        write_scannetpp(scenes, args.out)
    else:
        if len(scenes) != 1:
            raise UserError(f"--to {args.to} writes one scene; {args.path} has {len(scenes)}")
        if args.to == "nerfstudio":
            from splatdistill.data.formats.nerfstudio import write_nerfstudio

            write_nerfstudio(scenes[0], args.out)
        else:
            from splatdistill.data.formats.colmap import write_colmap

            write_colmap(scenes[0], args.out)
    print(args.out)
    return 0


def cmd_from_images(args: argparse.Namespace) -> int:
    import numpy as np

    from splatdistill.captures.sfm import SfMOptions, from_images
    from splatdistill.run_folder import owned_run_folder
    from splatdistill.threads import resolve_threads

    if args.max_image_size < 64:
        raise UserError(f"--max-image-size must be >= 64, got {args.max_image_size}")
    opts = SfMOptions(
        matcher=args.matcher,
        camera_model=args.camera_model,
        single_camera=not args.per_image_camera,
        max_image_size=args.max_image_size,
        threads=resolve_threads(args.threads),
        median_depth=args.median_depth,
    )
    if not (args.median_depth >= 0 and np.isfinite(args.median_depth)):
        raise UserError(f"--median-depth must be >= 0, got {args.median_depth}")
    t0 = time.perf_counter()
    with owned_run_folder(args.out, "splatdistill data from-images", "output folder"):
        s = from_images(args.photos, args.out, opts)
    lost = f"; not registered: {', '.join(s['not_registered'])}" if s["not_registered"] else ""
    print(
        f"{args.out}: {s['registered']} of {s['photos']} photos registered, {s['points']} points, mean reprojection "
        f"error {s['mean_reprojection_error_px']:.2f} px, focal length from EXIF: {'yes' if s['focal_from_exif'] else 'no'}, "
        f"{time.perf_counter() - t0:.0f} s{lost}"
    )
    print(f"next: splatdistill data check {args.out}")
    return 0 if not s["not_registered"] else 1


def cmd_from_rgbd(args: argparse.Namespace) -> int:
    from splatdistill.captures.from_rgbd import Calibration, from_rgbd, read_sequence
    from splatdistill.captures.odometry import OdometryOptions
    from splatdistill.run_folder import owned_run_folder

    if args.every < 1:
        raise UserError(f"--every must be >= 1, got {args.every}")
    if not args.depth_max > 0:
        raise UserError(f"--depth-max must be > 0, got {args.depth_max}")
    with owned_run_folder(args.out, "splatdistill data from-rgbd", "output folder"):
        cal = Calibration(args.color_intrinsics, args.depth_intrinsics, args.color_to_depth, args.depth_scale)
        seq = read_sequence(args.sequence, cal, every=args.every)
        t0 = time.perf_counter()
        s = from_rgbd(seq, args.out, OdometryOptions(depth_max=args.depth_max))
    scene_dir = args.out / seq.name
    checks = "; ".join(
        f"frame {k} in frame 0: median |depth difference| {c['median_abs_mm']:.2f} mm "
        f"(no motion: {c['zero_motion_median_abs_mm']:.2f} mm)"
        for k, c in s["self_check"].items()
    )
    print(
        f"{scene_dir}: {s['frames']} frames posed in {time.perf_counter() - t0:.0f} s, path {s['path_length_m']:.3f} m, "
        f"{len(s['keyframes'])} keyframes, {len(s['failed_alignments'])} failed alignments"
        f"{', depth registered to the colour camera' if s['depth_registered_to_color'] else ''}"
    )
    if checks:
        print(checks)
    print(f"figure: {scene_dir / 'registration.png'}; next: splatdistill data check {args.out}")
    return 0
