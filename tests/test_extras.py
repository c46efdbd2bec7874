"""Optional extras: a feature whose package is missing says, in one line, which extra installs it, and every
extra named in the code exists in pyproject.toml with a distribution that provides the module.

A missing package is simulated with ``sys.modules[name] = None`` (Python then raises ImportError on import).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

from splatdistill.cli import main
from splatdistill.errors import MissingExtra, UserError, require_extra

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "splatdistill"


def _message(extra: str, module: str) -> str:
    return (
        rf"needs the optional extra \[{extra}\] \({module} is not installed\): "
        rf"pip install 'splatdistill\[{extra}\]'"
    )


def _require_calls() -> list[tuple[str, str, str]]:
    """(file, module, extra) of every require_extra(...) call in the source."""
    calls = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require_extra":
                module, extra = (a.value for a in node.args[:2])
                calls.append((str(path.relative_to(SRC)), module, extra))
    return calls


def test_a_missing_module_names_its_extra_and_a_broken_one_says_why(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pycolmap", None)
    with pytest.raises(MissingExtra, match="^reading a COLMAP model " + _message("captures", "pycolmap") + "$"):
        require_extra("pycolmap", "captures", "reading a COLMAP model")
    assert issubclass(MissingExtra, UserError) and MissingExtra.exit_code == 2
    # installed but its import fails (a system library it links): the reason is kept, still one line
    (tmp_path / "brokenmod_e32.py").write_text("raise OSError('libusb-1.0.so.0: cannot open shared object file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra) as info:
        require_extra("brokenmod_e32", "captures", "RGB-D odometry", hint="apt-get install libusb-1.0-0")
    msg = str(info.value)
    assert "\n" not in msg and "brokenmod_e32 does not import: OSError: libusb-1.0.so.0" in msg
    assert msg.endswith("pip install 'splatdistill[captures]'; apt-get install libusb-1.0-0")
    # an installed module comes back as itself
    assert require_extra("json", "none", "x") is sys.modules["json"]


def test_every_extra_named_in_the_code_installs_its_module_and_the_test_extra_has_them_all():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    calls = _require_calls()
    assert {m for _, m, _ in calls} >= {"pycolmap", "open3d", "h5py", "gsplat", "hydra", "dacite", "transformers"}
    providers = importlib.metadata.packages_distributions()
    for where, module, extra in calls:
        assert extra in extras, f"{where}: extra [{extra}] is not in pyproject.toml"
        names = {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower() for req in extras[extra]}
        dists = {d.lower() for d in providers.get(module, [])}
        assert dists & names, f"{where}: [{extra}] = {sorted(names)} has no distribution of {module} ({sorted(dists)})"
    test_extra = next(r for r in extras["test"] if r.startswith("splatdistill["))
    assert set(test_extra[len("splatdistill[") : -1].split(",")) == set(extras) - {"test", "dev"}


def test_features_name_their_extra_when_its_package_is_missing(monkeypatch, tmp_path, capsys):
    from splatdistill.captures.odometry import estimate_poses
    from splatdistill.data.formats.colmap import load_colmap
    from splatdistill.eval.benchmarks.nyuv2 import load_nyuv2
    from splatdistill.lifters.depth_anything import load_depth_anything
    from splatdistill.lifters.mvsplat import build_mvsplat_encoder, compose_mvsplat_config
    from splatdistill.render.gsplat_backend import render_gsplat

    for module in ("pycolmap", "h5py", "open3d", "transformers", "gsplat", "hydra", "dacite"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtra, match=_message("captures", "pycolmap")):
        load_colmap(tmp_path)
    with pytest.raises(MissingExtra, match=_message("paper-eval", "h5py")):
        load_nyuv2(tmp_path)
    frames = [(np.zeros((8, 8)), np.ones((8, 8)))] * 2
    with pytest.raises(MissingExtra, match=_message("captures", "open3d") + "; on Debian/Ubuntu"):
        estimate_poses(frames, np.eye(3), 8, 8)
    with pytest.raises(MissingExtra, match=_message("depth-anything", "transformers")):
        load_depth_anything(str(tmp_path))
    with pytest.raises(MissingExtra, match=_message("mvsplat", "hydra")):
        compose_mvsplat_config(tmp_path)
    with pytest.raises(MissingExtra, match=_message("mvsplat", "dacite")):
        build_mvsplat_encoder(None)
    with pytest.raises(MissingExtra, match=_message("gpu", "gsplat") + "; or pass renderer=torch"):
        render_gsplat(*[None] * 6, 8, 8)
    # through the CLI: the data check lists it as the dataset's problem, on one line
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "cameras.txt").write_text("")
    assert main(["data", "check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert re.search(_message("captures", "pycolmap"), err) and err.count("\n") == 1, err
