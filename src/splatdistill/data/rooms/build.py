"""Build the embedded ``rooms`` dataset: seeded rooms rendered along camera paths, cached on disk.

A build folder holds one scene folder per room (the format of :mod:`splatdistill.data.formats.native`) and a
``dataset.json`` manifest with the build parameters and generator version. A folder whose manifest
matches is reused as is; an interrupted build resumes (a scene is done once its ``scene.json``,
written last and atomically, carries the build key).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from splatdistill.data import io
from splatdistill.data.checks.contact_sheet import write_contact_sheet
from splatdistill.data.formats import native
from splatdistill.data.scene import ViewData
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import rotation_angle_deg
from splatdistill.paths import data_cache_dir

from .camera_paths import camera_path
from .layout import CLASS_NAMES, compose_room
from .mesh import build_room_mesh
from .raycast import RoomRenderer, intrinsics

GENERATOR_VERSION = 4
DATASET_NAME = "rooms"


@dataclass(frozen=True)
class RoomsParams:
    scenes: int = 32
    views: int = 16
    size: int = 256
    seed: int = 0
    fov_deg: float = 65.0

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def validate(self) -> None:
        if self.scenes < 1:
            raise UserError(f"--scenes must be at least 1, got {self.scenes}")
        if self.views < 2:
            raise UserError(f"--views must be at least 2, got {self.views}")
        if not 16 <= self.size <= 2048:
            raise UserError(f"--size must be between 16 and 2048, got {self.size}")
        if not 20 <= self.fov_deg <= 120:
            raise UserError(f"field of view must be between 20 and 120 degrees, got {self.fov_deg}")


def split_of(index: int, n: int, seed: int) -> str:
    """Scene splits: about 1/8 val and 1/8 test (at least one each from 3 scenes), never sharing a scene."""
    if n == 1:
        return "train"
    if n == 2:
        return ("train", "test")[index]
    n_hold = max(1, round(n / 8))
    order = np.random.default_rng([seed, 7919]).permutation(n)
    rank = int(np.nonzero(order == index)[0][0])
    if rank < n_hold:
        return "test"
    if rank < 2 * n_hold:
        return "val"
    return "train"


def scene_seed(seed: int, index: int, attempt: int = 0) -> int:
    return int(np.random.SeedSequence([seed, index, attempt]).generate_state(1)[0])


def scene_name(index: int) -> str:
    return f"room_{index:04d}"


def build_scene(out: str, index: int, params: RoomsParams) -> dict:
    """Render one room into ``out/<scene>``; returns a summary. Runs in a worker process."""

    t0 = time.perf_counter()
    scene_dir = Path(out) / scene_name(index)
    for attempt in range(20):
        seed = scene_seed(params.seed, index, attempt)
        spec = compose_room(seed)
        mesh = build_room_mesh(spec)
        renderer = RoomRenderer(mesh, spec.light)
        poses = camera_path(np.random.default_rng(seed), spec, renderer, params.views)
        if poses is not None:
            break
    else:  # pragma: no cover
        raise RuntimeError(f"no valid camera path for scene {index}")
    K = intrinsics(params.size, params.fov_deg)
    entries = []
    for i, c2w in enumerate(poses):
        r = renderer.render(K, c2w, params.size, params.size)
        view = ViewData(r.image, K, c2w, r.depth, r.normals, r.instance, r.semantic, name=f"{i:04d}")
        entries.append(native.write_view_files(scene_dir, view, f"{i:04d}"))
    steps = [rotation_angle_deg(poses[i - 1], poses[i]) for i in range(1, len(poses))]
    meta = {
        "generator": f"splatdistill.rooms v{GENERATOR_VERSION}",
        "build_key": params.key(),
        "seed": seed,
        "room": {
            "kind": spec.kind,
            "size_m": [spec.width, spec.depth, spec.height],
            "floor": spec.floor_texture,
            "walls": spec.wall_texture,
            "light": list(spec.light),
        },
        "instances": {str(k): v for k, v in mesh.instance_names.items()},
        "furniture": [
            {"key": p.key, "category": p.category, "x": p.x, "y": p.y, "z": p.z, "yaw": p.yaw} for p in spec.placements
        ],
        "view_steps_deg": [round(s, 2) for s in steps],
        "world_frame": "metres, z up, floor at z = 0, room centred on the origin",
    }
    native.write_scene(
        scene_dir, scene_name(index), split_of(index, params.scenes, params.seed), CLASS_NAMES, entries, meta
    )
    return {"index": index, "seconds": time.perf_counter() - t0, "views": len(entries), "objects": len(spec.placements)}


def _scene_done(out: Path, index: int, key: str) -> bool:
    sj = out / scene_name(index) / "scene.json"
    if not sj.is_file():
        return False
    try:
        return json.loads(sj.read_text()).get("meta", {}).get("build_key") == key
    except (json.JSONDecodeError, OSError):
        return False


def read_manifest(out: Path) -> dict | None:
    path = out / "dataset.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_complete(out: Path, params: RoomsParams) -> bool:
    m = read_manifest(out)
    return bool(
        m
        and m.get("complete")
        and m.get("build_key") == params.key()
        and all((out / s / "scene.json").is_file() for s in m.get("scenes", []))
    )


def _worker_init() -> None:
    # One BLAS thread per worker: the workers already use every core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def build_rooms(
    out: Path | str,
    params: RoomsParams | None = None,
    workers: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Build (or finish, or reuse) the rooms dataset in ``out``; returns ``out``."""
    params = params or RoomsParams()
    params.validate()
    out = Path(out).expanduser()
    key = params.key()
    if not force and is_complete(out, params):
        return out
    existing = read_manifest(out)
    if existing and existing.get("build_key") != key and not force:
        if existing.get("params") == asdict(params):
            raise UserError(
                f"{out} was built by rooms generator v{existing.get('generator_version')} (this is v{GENERATOR_VERSION}); "
                "pass --force to rebuild it"
            )
        raise UserError(
            f"{out} holds a rooms build with other parameters ({existing.get('params')}); "
            "choose another --out or pass --force to rebuild it"
        )
    if not existing and out.exists() and any(out.iterdir()) and not force and not any(out.glob("room_*/scene.json")):
        raise UserError(f"{out} exists, is not empty and is not a rooms build; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    names = [scene_name(i) for i in range(params.scenes)]
    manifest = {
        "format": "splatdistill.dataset",
        "version": 1,
        "name": DATASET_NAME,
        "build_key": key,
        "params": asdict(params),
        "generator_version": GENERATOR_VERSION,
        "scenes": names,
        "complete": False,
    }
    io.atomic_write_json(out / "dataset.json", manifest)
    todo = [i for i in range(params.scenes) if force or not _scene_done(out, i, key)]
    t0 = time.perf_counter()
    workers = max(1, min(workers or min(2, os.cpu_count() or 1), len(todo) or 1))
    bar = None
    if progress and todo:
        bar = tqdm(total=len(todo), unit="scene", desc=f"rooms -> {out}", dynamic_ncols=True)
    try:
        if workers == 1:
            for i in todo:
                build_scene(str(out), i, params)
                if bar:
                    bar.update()
        elif todo:
            ctx = mp.get_context("spawn")  # safe even if the caller has threads (torch)
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as ex:
                futs = [ex.submit(build_scene, str(out), i, params) for i in todo]
                for f in as_completed(futs):
                    f.result()
                    if bar:
                        bar.update()
    finally:
        if bar:
            bar.close()
    manifest.update(
        complete=True,
        build_seconds=round(time.perf_counter() - t0, 1),
        workers=workers,
        size_bytes=sum(p.stat().st_size for p in out.rglob("*") if p.is_file()),
    )
    io.atomic_write_json(out / "dataset.json", manifest)
    if todo:
        write_contact_sheet(out, out / "contact_sheet.png")
    return out


def default_rooms_dir(params: RoomsParams) -> Path:
    d = params
    return data_cache_dir() / f"rooms-s{d.scenes}-v{d.views}-px{d.size}-seed{d.seed}-{d.key()}"


def ensure_rooms(
    root: Path | str | None = None,
    *,
    scenes: int = 32,
    views: int = 16,
    size: int = 256,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Path of a complete rooms dataset with these parameters, building it first if needed.

    ``root`` defaults to a folder in the data cache (``SPLATDISTILL_CACHE``) named after the
    parameters, so different parameter sets never overwrite each other.
    """
    params = RoomsParams(scenes=scenes, views=views, size=size, seed=seed)
    out = Path(root).expanduser() if root is not None else default_rooms_dir(params)
    return build_rooms(out, params, workers=workers, progress=progress)
