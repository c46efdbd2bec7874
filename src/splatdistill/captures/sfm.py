"""``data from-images``: a folder of photos becomes a posed dataset by structure from motion (pycolmap, CPU).

COLMAP's pipeline, run through its Python bindings: SIFT features, matching (exhaustive for small
sets, sequential for video frames), incremental mapping, undistortion to a pinhole model. The
focal length starts from the photos' EXIF data when it is there (COLMAP reads it itself). Output,
which the COLMAP loader reads::

    OUT/images/          undistorted photos
    OUT/sparse/          the pinhole reconstruction (cameras, images, points3D)
    OUT/from_images.json what was registered, the reprojection error, the options
    OUT/colmap/          the feature database and the raw (distorted) model, kept for inspection

Everything is built in a staging folder inside OUT and moved into place at the end; an existing
``images``/``sparse``/``colmap`` is replaced only when an earlier run made it, and the photos may not
lie inside one of them (:func:`splatdistill.run_folder.check_replaceable`): nothing of the user's is deleted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from splatdistill.atomic import write_failure, write_probe
from splatdistill.data import io
from splatdistill.data.formats.colmap import cam_from_world_matrix, image_has_pose
from splatdistill.errors import OutputWriteError, UserError, require_extra
from splatdistill.run_folder import check_replaceable, replace_output, staging_folder

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
#: what from-images writes in OUT (besides from_images.json), each replaced only when an earlier run made it
OUTPUTS = ("images", "sparse", "colmap")
EXHAUSTIVE_MAX = 60  # above this many photos, matching="auto" matches each to its neighbours in name order


@dataclass
class SfMOptions:
    matcher: str = "auto"  # auto | exhaustive | sequential
    camera_model: str = "SIMPLE_RADIAL"
    single_camera: bool = True  # one camera for all photos (same device, same zoom)
    max_image_size: int = 1600  # SIFT runs on photos scaled to this longest side
    max_features: int = 8192
    sequential_overlap: int = 10
    threads: int = 2
    seed: int = 0
    #: structure from motion has no metric scale; the model is scaled so the median depth of its points
    #: in the cameras is this many units (inside the shipped predictor's 0.5-12 planes); 0 keeps COLMAP's
    median_depth: float = 2.0


def list_photos(folder: Path) -> list[Path]:
    """The photos of a folder (sorted by name); broken files are named."""
    if not folder.is_dir():
        raise UserError("no such folder (expected a folder of photos)", folder)
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if len(photos) < 2:
        raise UserError(
            f"structure from motion needs at least 2 photos of the scene, found {len(photos)} "
            f"({', '.join(PHOTO_SUFFIXES)})",
            folder,
        )
    for p in photos:
        io.decoded_size(p)  # raises naming a broken or truncated file, before COLMAP reads it
    return photos


def one_size(photos: list[Path]) -> bool:
    """True when every photo has the same pixel size (one camera can then describe them all)."""
    return len({io.image_size(p) for p in photos}) == 1


def rescale(rec, median_depth: float) -> float:
    """Scale a pycolmap reconstruction in place so its points' median camera depth is ``median_depth``."""
    pycolmap = require_extra("pycolmap", "captures", "data from-images (structure from motion)")

    if median_depth <= 0:
        return 1.0
    pts = np.array([p.xyz for p in rec.points3D.values()])
    depths = []
    for im in rec.images.values():
        if image_has_pose(im):
            M = cam_from_world_matrix(im)
            z = pts @ M[:3, :3].T[:, 2] + M[2, 3]
            depths.append(z[z > 0])
    z = np.concatenate(depths) if depths else np.zeros(0)
    if z.size == 0:
        return 1.0
    scale = float(median_depth / np.median(z))
    rec.transform(pycolmap.Sim3d(scale, pycolmap.Rotation3d(), np.zeros(3)))
    return scale


def _matcher(opts: SfMOptions, n: int) -> str:
    if opts.matcher not in ("auto", "exhaustive", "sequential"):
        raise UserError(f"unknown matcher '{opts.matcher}' (choose from auto, exhaustive, sequential)")
    return ("exhaustive" if n <= EXHAUSTIVE_MAX else "sequential") if opts.matcher == "auto" else opts.matcher


def from_images(photos_dir: Path, out: Path, opts: SfMOptions | None = None, progress: bool = True) -> dict:
    """Run the pipeline; returns the summary written to ``OUT/from_images.json``."""
    opts = opts or SfMOptions()
    photos_dir, out = Path(photos_dir), Path(out)
    photos = list_photos(photos_dir)
    matcher = _matcher(opts, len(photos))
    out.mkdir(parents=True, exist_ok=True)
    check_replaceable(out, OUTPUTS, inputs=(photos_dir,))
    with staging_folder(out, "from_images") as stage:
        try:
            rec, n_models, scale = _reconstruct(photos_dir, photos, stage, opts, matcher, progress)
        except (RuntimeError, ValueError, OSError) as exc:  # COLMAP's C++ writes lose the errno: probe the disk
            reason = write_failure(exc) if isinstance(exc, OSError) else write_probe(stage)
            if reason is None:
                raise
            raise OutputWriteError(
                f"structure from motion could not write its files ({reason}); nothing in the "
                "output folder was replaced",
                out,
            ) from None
        for sub in OUTPUTS:
            replace_output(out, sub, stage / sub)
    return _summary(out, photos, rec, n_models, scale, matcher, opts)


def _reconstruct(photos_dir: Path, photos: list[Path], stage: Path, opts: SfMOptions, matcher: str, progress: bool):
    """SfM into ``stage``: ``colmap/`` (database, raw model), ``images/`` + ``sparse/`` (undistorted)."""
    pycolmap = require_extra("pycolmap", "captures", "data from-images (structure from motion)")

    work = stage / "colmap"
    (work / "raw").mkdir(parents=True)
    db = work / "database.db"
    names = [p.name for p in photos]
    pycolmap.logging.minloglevel = 2  # COLMAP's per-image log lines would bury the progress bar
    bar = tqdm(total=4, desc="structure from motion", unit="stage", disable=not progress, dynamic_ncols=True)
    try:  # closed on any error too, so the error starts its own line
        bar.set_postfix_str(f"SIFT features of {len(photos)} photos")
        reader = pycolmap.ImageReaderOptions()
        reader.camera_model = opts.camera_model
        extraction = pycolmap.FeatureExtractionOptions()
        extraction.max_image_size = opts.max_image_size
        extraction.num_threads = opts.threads
        extraction.sift.max_num_features = opts.max_features
        pycolmap.extract_features(
            db,
            photos_dir,
            image_names=names,
            reader_options=reader,
            extraction_options=extraction,
            camera_mode=pycolmap.CameraMode.SINGLE
            if opts.single_camera and one_size(photos)
            else pycolmap.CameraMode.AUTO,
            device=pycolmap.Device.cpu,
        )
        bar.update(1)

        bar.set_postfix_str(f"{matcher} matching")
        matching = pycolmap.FeatureMatchingOptions()
        matching.num_threads = opts.threads
        if matcher == "exhaustive":
            pycolmap.match_exhaustive(db, matching_options=matching, device=pycolmap.Device.cpu)
        else:
            pairing = pycolmap.SequentialPairingOptions()
            pairing.overlap = opts.sequential_overlap
            pycolmap.match_sequential(
                db, matching_options=matching, pairing_options=pairing, device=pycolmap.Device.cpu
            )
        bar.update(1)

        bar.set_postfix_str("incremental mapping")
        mapping = pycolmap.IncrementalPipelineOptions()
        mapping.num_threads = opts.threads
        mapping.random_seed = opts.seed
        models = pycolmap.incremental_mapping(db, photos_dir, work / "raw", options=mapping)
        if not models:
            raise UserError(
                f"structure from motion registered no photos: the {len(photos)} photos share too few "
                "features (overlapping views of a textured, static scene are needed)",
                photos_dir,
            )
        best_id, rec = max(models.items(), key=lambda kv: kv[1].num_reg_images())
        bar.update(1)

        bar.set_postfix_str("undistorting")
        model_dir = work / "raw" / str(best_id)
        scale = rescale(rec, opts.median_depth)
        rec.write(str(model_dir))
        pycolmap.undistort_images(stage, model_dir, photos_dir)  # also stereo/ and run-colmap-*.sh: left in the stage
        bar.update(1)
    finally:
        bar.close()
    return rec, len(models), scale


def _summary(out: Path, photos: list[Path], rec, n_models: int, scale: float, matcher: str, opts: SfMOptions) -> dict:
    names = [p.name for p in photos]
    registered = sorted(im.name for im in rec.images.values() if image_has_pose(im))
    missing = sorted(set(names) - set(registered))
    cams = list(rec.cameras.values())
    summary = {
        "photos": len(photos),
        "registered": len(registered),
        "not_registered": missing,
        "models": n_models,
        "points": rec.num_points3D(),
        "scale_applied": scale,
        "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()),
        "matcher": matcher,
        "focal_from_exif": all(bool(c.has_prior_focal_length) for c in cams),
        "cameras": [
            {
                "model": str(c.model).split(".")[-1],
                "width": c.width,
                "height": c.height,
                "params": [float(x) for x in c.params],
            }
            for c in cams
        ],
        "options": asdict(opts),
    }
    io.atomic_write_json(out / "from_images.json", summary)
    return summary
