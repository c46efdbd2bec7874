"""Real captures with geometry for the demo's and the comparison's evaluation, besides the held-out rooms.

- Middlebury's Motorcycle pair ships with scikit-image: the rooms evaluation already adds it to
  correspondence (``EvalConfig.middlebury``, results key ``middlebury``).
- ViSP's castel (30 SR300 RGB-D frames, GPL-2, Debian ``visp-images-data``) is never downloaded here:
  it is used only when a copy is already in the test-data cache (``tests/_real_data.py`` fetches it
  into ``$SPLATDISTILL_TEST_DATA`` or ``~/.cache/splatdistill-test-data``), posed with ``data
  from-rgbd`` (RGB-D odometry, needs Open3D) exactly as tests/test_rgbd.py does.
- Any other folder of posed views with depth (``--real DIR``, native or any layout ``load_dataset``
  reads): correspondence on its pairs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from splatdistill.captures.from_rgbd import Calibration, from_rgbd, read_sequence
from splatdistill.captures.odometry import OdometryOptions
from splatdistill.errors import UserError
from splatdistill.eval.runner import EvalConfig, evaluate

#: metres per raw unit of the castel's SR300 depth (ViSP's tutorial; the same as tests/_real_data.py)
CASTEL_DEPTH_SCALE = 0.000124986647


def test_data_cache() -> Path:
    """Where the test suite caches the real captures it fetches (``tests/_real_data.py``)."""
    return Path(os.environ.get("SPLATDISTILL_TEST_DATA", Path.home() / ".cache" / "splatdistill-test-data"))


def castel_dataset(dest: Path, cache: Path | None = None) -> Path | None:
    """The castel as a posed dataset at ``dest`` (built once with ``data from-rgbd``), or None when the
    frames are not cached or Open3D is missing (the reason is printed: the report says what was left out)."""
    if (dest / "castel" / "scene.json").is_file():
        return dest
    src = (cache or test_data_cache()) / "visp-castel"
    if not (src / "castel" / "depth_image_0029.bin").is_file():
        print(
            f"real pairs: castel not cached at {src} (the test suite fetches it: pytest tests/test_rgbd.py -k castel); "
            "left out",
            file=sys.stderr,
        )
        return None
    cal = Calibration(
        str(src / "chateau.xml"), str(src / "chateau_depth.xml"), str(src / "depth_M_color.txt"), CASTEL_DEPTH_SCALE
    )
    try:
        from_rgbd(read_sequence(src / "castel", cal), dest, OdometryOptions(), progress=False)
    except UserError as exc:  # e.g. Open3D (the [rgbd] extra) not installed
        print(f"real pairs: castel left out ({exc})", file=sys.stderr)
        return None
    return dest


def real_datasets(out: Path, extra: Sequence[str] = (), castel: bool = True) -> dict[str, Path]:
    """name -> dataset folder of the real captures available offline (Motorcycle is not listed: it rides
    with the rooms evaluation)."""
    found: dict[str, Path] = {}
    if castel:
        path = castel_dataset(out / "castel")
        if path is not None:
            found["castel"] = path
    for item in extra:
        path = Path(item)
        if not path.exists():
            raise UserError("real dataset not found", path)
        found[path.name] = path
    return found


def evaluate_real(specs: list[str], datasets: dict[str, Path], out: Path, cfg: EvalConfig) -> dict[str, dict]:
    """Correspondence of every backbone on each real dataset (one evaluation per dataset, all backbones
    together); its held-out split when it has one, else its views (a single capture)."""
    results = {}
    for name, path in datasets.items():
        ecfg = replace(
            cfg, correspondence=replace(cfg.correspondence, middlebury=False), run=replace(cfg.run, figures=False)
        )
        results[name] = evaluate(specs, path, "correspondence", out / f"eval_{name}", ecfg, name=name)
    return results


def real_recall(results: dict, dataset: str, row: int, key: str = "recall_5") -> float | None:
    """A backbone's (row index) correspondence recall on a real dataset's results, None when absent."""
    corr = results["backbones"][row]["results"].get("correspondence", {})
    value = corr.get(dataset, {}).get(key) if isinstance(corr, dict) else None
    return float(value) if isinstance(value, (int, float)) else None
