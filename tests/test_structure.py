"""The tree shows the pipeline's one-way flow: packages import only downwards, modules form no cycle,
library code imports at module level, and no file or function outgrows what a reader can hold.

Walks the source with ``ast`` (no imports executed), so a violation names the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "splatdistill"

#: package (or top-level module) -> layer; a module may import only from a lower layer or its own package
LAYERS = {
    **dict.fromkeys(["errors", "paths"], 0),
    **dict.fromkeys(["memory", "atomic", "threads", "config", "safe_load"], 1),
    **dict.fromkeys(["__init__", "runs", "run_folder", "report_html", "viz", "devices"], 2),  # viz writes through atomic
    "geometry": 3,
    "render": 4,
    "data": 5,
    "backbones": 6,
    "splat": 7,
    "lifters": 8, "baselines": 8,
    "distill": 9,
    "eval": 10,
    "bench": 11,
    "commands": 12, "cli": 13, "__main__": 14,
}
#: third-party modules library code may import inside a function, and why: optional (not needed by
#: most users, or CUDA only) or slow to import for the commands that do not use them
LAZY_THIRD_PARTY = {
    "gsplat": "CUDA only",
    "onnx": "only to convert the shipped DINOv2 graph once",
    "pycolmap": "only for COLMAP datasets and from-images",
    "h5py": "only for the NYUv2 labelled set",
    "open3d": "optional ([rgbd] extra): only for from-rgbd's odometry",
    "trimesh": "only to build the rooms dataset", "embreex": "only to build the rooms dataset",
    "skimage": "superpixels and Middlebury only; ~0.5 s to import",
    "matplotlib": "figures only; ~0.3 s to import",
    "torchvision": "the MobileNetV2 backbone only",
    "huggingface_hub": "hub weights only",
    "torch": "splatdistill.atomic is imported by light commands",
    "resource": "POSIX only",
    "omegaconf": "MVSplat's config loader: only for lifter=mvsplat, from the user's MVSplat environment",
    "hydra": "MVSplat's config composition: only for lifter=mvsplat ([mvsplat] extra)",
    "dacite": "MVSplat's typed configs: only for lifter=mvsplat ([mvsplat] extra)",
    "transformers": "Depth Anything V2: only for lifter=depth-anything-v2 ([depth-anything] extra); slow to import",
    "src": "MVSplat's own package (its repository is named src): only for lifter=mvsplat",
}
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80
#: functions allowed to be longer: numba kernels, where splitting costs speed (docs/rendering.md)
LONG_FUNCTIONS_OK = {("render/cpu_kernels.py", "composite_band"), ("render/cpu_kernels.py", "project")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["splatdistill", *parts])] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


def _imports(module: str, path: Path):
    """(line, imported splatdistill module, inside a function) for every import of ``module``."""
    tree = ast.parse(path.read_text())
    func_nodes = {id(m) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for m in ast.walk(f)}
    base = module if _is_package(module) else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        inner = id(node) in func_nodes
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, inner
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                target = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{a.name}"
                yield node.lineno, sub if sub in MODULES else target, inner


def test_every_package_has_a_layer():
    missing = sorted({_package(m) for m in MODULES} - set(LAYERS))
    assert not missing, f"give these packages a layer in LAYERS: {missing}"


def test_packages_import_only_downwards():
    bad = []
    for module, path in MODULES.items():
        src = _package(module)
        for line, target, _ in _imports(module, path):
            if not target.startswith("splatdistill"):
                continue
            dst = _package(target)
            if dst != src and LAYERS[dst] >= LAYERS[src]:
                bad.append(f"{path.relative_to(SRC)}:{line}: {src} (layer {LAYERS[src]}) imports {target} "
                           f"(layer {LAYERS[dst]})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_library_code_imports_at_module_level():
    bad = []
    for module, path in MODULES.items():
        if _package(module) in ("commands", "cli", "__main__"):
            continue  # start-up time of the CLI: commands import their work lazily
        for line, target, inner in _imports(module, path):
            if not inner:
                continue
            top = target.split(".")[0]
            if top == "splatdistill" or top not in LAZY_THIRD_PARTY:
                bad.append(f"{path.relative_to(SRC)}:{line}: import of {target} inside a function")
    assert not bad, "\n".join(bad)


def test_module_import_graph_has_no_cycle():
    graph = {m: {t for _, t, _ in _imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_file_or_function_is_too_long():
    long_files, long_funcs = [], []
    for path in MODULES.values():
        rel = str(path.relative_to(SRC))
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES and (rel, node.name) not in LONG_FUNCTIONS_OK:
                    long_funcs.append(f"{rel}:{node.lineno}: {node.name} has {n} lines")
    assert not long_files and not long_funcs, "\n".join(long_files + long_funcs)


def test_package_face_exports_resolve():
    """The root package names its entry points without importing them at start-up (``__getattr__``)."""
    import splatdistill

    for name, module in splatdistill._EXPORTS.items():
        assert getattr(splatdistill, name).__module__.startswith(module), name
    assert set(splatdistill._EXPORTS) <= set(dir(splatdistill))


def test_the_checks_can_fail(tmp_path):
    """The walkers see what they must: an upward import, a function-level import and a cycle."""
    fake = tmp_path / "geometry_fake.py"
    fake.write_text("import os\nfrom splatdistill.distill import trainer\n\ndef f():\n    from splatdistill import data\n")
    module = "splatdistill.geometry.fake"
    found = list(_imports(module, fake))
    assert (2, "splatdistill.distill.trainer", False) in found
    assert (5, "splatdistill.data", True) in found
    assert LAYERS[_package("splatdistill.distill.trainer")] > LAYERS[_package(module)]
