"""Rebuild the committed furniture subset from Debian's ``sweethome3d-furniture`` package.

The project commits a small CC0 subset of the BlendSwap CC-0 catalogue (Emmanuel Puybaret's OBJ
conversions) in a compact form, so a fresh machine needs nothing but pip. This script documents and
reproduces that conversion::

    apt-get download sweethome3d-furniture
    python3 -m splatdistill.data.rooms.import_assets sweethome3d-furniture_*.deb

Per model it writes ``assets/furniture/<key>.npz`` (metres, z up, front facing -y, footprint centred
on the origin, resting on z = 0, scaled to the catalogue's width/depth/height like Sweet Home 3D
does) and copies its textures, downscaled to at most 256 px, into ``assets/furniture/textures/``.
Transparent materials (``d < 0.6``, e.g. glass panes) are dropped so rays see what is behind them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

ASSET_DIR = Path(__file__).resolve().parents[2] / "assets" / "furniture"
MAX_TEXTURE = 256

# key in the catalogue -> our semantic category. Chosen to look like indoor furniture, span the
# categories, and stay small (the whole subset is a few MB).
SELECTION: dict[str, str] = {
    # chairs and stools
    "chair": "chair",
    "antiqueChair": "chair",
    "chair2": "chair",
    "chairWithCushion": "chair",
    "osakaChair": "chair",
    "thonet": "chair",
    "designChair": "chair",
    "sillaBlanca": "chair",
    "stool2": "chair",
    # sofas and armchairs
    "sofa2": "sofa",
    "couch": "sofa",
    "couch2": "sofa",
    "armchair2": "sofa",
    "modernArmchair": "sofa",
    "winchesterArmchair": "sofa",
    # tables and desks
    "oakTable": "table",
    "tableWithTablecloth": "table",
    "table": "table",
    "lbDesk": "table",
    "desk": "table",
    # beds
    "bed2": "bed",
    "bed3": "bed",
    # cabinets
    "cupboard": "cabinet",
    "wardrobeWithSlidingDoors": "cabinet",
    "drawersCabinet": "cabinet",
    "bedsideTable2": "cabinet",
    "lowerCabinet": "cabinet",
    "televisionCabinet": "cabinet",
    # shelves
    "bookcase": "bookshelf",
    "shelves": "bookshelf",
    "verticalShelves": "bookshelf",
    # plants
    "littlePlant": "plant",
    "plant": "plant",
    # appliances
    "refrigerator": "appliance",
    "largeFridge": "appliance",
    # other objects
    "pianoAQueue": "other",
    "barrel": "other",
    "crate": "other",
    "dustbin": "other",
    "speaker3": "other",
}

# Sweet Home 3D model axes (y up, front towards +z) -> ours (z up, front towards -y).
YUP_TO_ZUP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _read_catalog(text: str) -> dict[str, dict[str, str]]:
    entries: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        m = re.match(r"(\w+)#(\d+)=(.*)", line.strip())
        if m:
            entries.setdefault(int(m.group(2)), {})[m.group(1)] = m.group(3).strip()
    by_key = {}
    for e in entries.values():
        key = Path(e["model"]).stem
        by_key[key] = e
    return by_key


def _mtl_opacity(mtl: Path) -> dict[str, float]:
    out, cur = {}, None
    for line in mtl.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "newmtl":
            cur = " ".join(parts[1:])
            out[cur] = 1.0
        elif parts[0] == "d" and cur is not None:
            out[cur] = float(parts[1])
    return out


def _save_texture(img: Image.Image, tex_dir: Path) -> str:
    img = img.convert("RGB")
    scale = MAX_TEXTURE / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=88)
    name = hashlib.sha1(buf.getvalue()).hexdigest()[:12] + ".jpg"
    (tex_dir / name).write_bytes(buf.getvalue())
    return name


def convert_model(obj: Path, entry: dict[str, str], out_dir: Path) -> dict:
    import trimesh

    scene = trimesh.load(obj, force="scene")
    opacity = _mtl_opacity(obj.with_suffix(".mtl")) if obj.with_suffix(".mtl").exists() else {}
    verts, faces, uvs, fmat, mats = [], [], [], [], []
    offset = 0
    for name, geom in scene.geometry.items():
        mat = getattr(geom.visual, "material", None)
        if opacity.get(name, 1.0) < 0.6:
            continue
        diffuse = np.array(getattr(mat, "diffuse", [200, 200, 200, 255])[:3], dtype=np.float64) / 255.0
        image = getattr(mat, "image", None)
        uv = getattr(geom.visual, "uv", None)
        texture = ""
        if image is not None and uv is not None and len(uv) == len(geom.vertices):
            texture = _save_texture(image, out_dir / "textures")
        else:
            uv = np.zeros((len(geom.vertices), 2))
        mats.append({"name": name, "diffuse": [round(float(c), 4) for c in diffuse], "texture": texture})
        verts.append(np.asarray(geom.vertices, dtype=np.float64))
        faces.append(np.asarray(geom.faces, dtype=np.int64) + offset)
        uvs.append(np.asarray(uv, dtype=np.float64))
        fmat.append(np.full(len(geom.faces), len(mats) - 1))
        offset += len(geom.vertices)
    v = np.concatenate(verts)
    # Scale each axis to the catalogue's dimensions (cm), as Sweet Home 3D does, then go to metres.
    lo, hi = v.min(0), v.max(0)
    target = np.array([float(entry["width"]), float(entry["height"]), float(entry["depth"])])
    v = (v - (lo + hi) / 2) / np.maximum(hi - lo, 1e-9) * target / 100.0
    v = v @ YUP_TO_ZUP.T
    v[:, 2] -= v[:, 2].min()
    f = np.concatenate(faces)
    # Drop degenerate triangles: they have no normal and only cost ray-casting time.
    tri = v[f]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    keep = area > 1e-12
    f, fm = f[keep], np.concatenate(fmat)[keep]
    np.savez_compressed(
        out_dir / f"{obj.stem}.npz",
        vertices=v.astype(np.float32),
        faces=f.astype(np.int32),
        uv=np.concatenate(uvs).astype(np.float32),
        face_material=fm.astype(np.uint8),
    )
    return {"materials": mats, "faces": int(len(f)), "vertices": int(len(v))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="sweethome3d-furniture .deb, or BlendSwap-CC-0.sh3f")
    ap.add_argument("--out", type=Path, default=ASSET_DIR)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        sh3f = args.source
        if sh3f.suffix == ".deb":
            subprocess.run(["dpkg-deb", "-x", str(sh3f), str(tmpd / "deb")], check=True)
            sh3f = next((tmpd / "deb").rglob("BlendSwap-CC-0.sh3f"))
        with zipfile.ZipFile(sh3f) as z:
            z.extractall(tmpd / "sh3f")
        root = tmpd / "sh3f"
        catalog = _read_catalog((root / "PluginFurnitureCatalog.properties").read_text(encoding="latin-1"))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "textures").mkdir(exist_ok=True)
        for old in list(args.out.glob("*.npz")) + list((args.out / "textures").glob("*.jpg")):
            old.unlink()
        models = {}
        for key, category in SELECTION.items():
            entry = catalog[key]
            obj = root / entry["model"].lstrip("/")
            info = convert_model(obj, entry, args.out)
            lic = sorted(p.name for p in obj.parent.iterdir() if "licen" in p.name.lower())
            models[key] = {
                "name": entry["name"],
                "category": category,
                "sh3d_category": entry.get("category", ""),
                "creator": entry.get("creator", ""),
                "size_m": [float(entry["width"]) / 100, float(entry["depth"]) / 100, float(entry["height"]) / 100],
                "source": f"BlendSwap-CC-0.sh3f:{entry['model']}",
                "license_file": lic[0] if lic else "",
                **info,
            }
            print(f"{key:28s} {category:10s} {info['faces']:6d} faces", file=sys.stderr)
        catalog_out = {
            "source": "Debian package sweethome3d-furniture 1.8-1, file BlendSwap-CC-0.sh3f "
            "(Blend Swap CC-0 models converted to OBJ by Emmanuel Puybaret / eTeks)",
            "license": "CC0-1.0 (public domain)",
            "axes": "metres; x right, y back, z up; front faces -y; footprint centred on the origin; base at z=0",
            "models": models,
        }
        (args.out / "catalog.json").write_text(json.dumps(catalog_out, indent=1) + "\n")
        (args.out / "LICENSE.txt").write_bytes((root / "LICENSE.TXT").read_bytes())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
