"""The tree shows the pipeline's one-way flow: packages (and the subpackages of ``data`` and ``eval``)
import only along the edges of the intended graph :data:`ALLOWED`, modules form no cycle, library code
imports at module level, and no file, function or class outgrows what a reader can hold.

Walks the source with ``ast`` (no imports executed), so a violation names the file and line.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "splatdistill"

#: The units of the dependency graph are the top-level modules and packages, except that a package listed
#: here is looked inside: each of its modules belongs to the unit of the longest prefix named below (a new
#: module in such a package must be placed here on purpose; see test_every_module_has_a_unit).
SUBUNITS = {
    "splatdistill.data": "data",  # the face: load_dataset, resolve_root, load_splits
    **{f"splatdistill.data.{m}": "data.core" for m in ("scene", "io", "validate", "masks")},  # shared by formats
    **{f"splatdistill.data.{m}": "data.batches" for m in ("views", "sampler")},  # batches for training and eval
    "splatdistill.data.formats": "data.formats",  # one module per on-disk layout, registered by name
    "splatdistill.data.rooms": "data.rooms",  # the embedded dataset's generator
    "splatdistill.data.checks": "data.checks",  # data check / show
    "splatdistill.eval.benchmarks": "eval.benchmarks",  # the paper's benchmark layouts
    "splatdistill.eval": "eval",
}
#: packages whose every module must fall in a named subunit
LOOKED_INSIDE = ("splatdistill.data",)

#: The intended dependency graph: unit -> the units it may import (its own unit always). Edges not listed
#: are refused, so a new dependency is a decision written here; the table must stay acyclic.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "paths": set(),
    "memory": set(),
    "atomic": {"errors"},
    "threads": {"errors"},
    "config": {"errors"},
    "safe_load": {"errors"},
    "registry": {"errors"},
    "runs": {"atomic", "errors"},
    "report_html": {"atomic"},
    "viz": {"atomic", "errors"},
    "run_folder": {"atomic", "errors"},
    "devices": {"errors", "threads"},
    "__init__": set(),  # the package face resolves its exports lazily (test_package_face_exports_resolve)
    "geometry": {"memory"},
    "render": {"atomic", "errors", "geometry", "memory"},
    "data.core": {"atomic", "errors"},
    "data.batches": {"data.core", "errors", "geometry"},
    "data.formats": {"data.core", "data.batches", "errors", "geometry", "registry"},
    "data.checks": {"data.core", "data.formats", "errors", "geometry"},
    "data.rooms": {"data.core", "data.formats", "data.checks", "errors", "geometry", "paths"},
    "data": {"data.core", "data.formats", "data.rooms", "errors"},
    "captures": {"atomic", "data.core", "data.formats", "data.checks", "errors", "run_folder"},
    "backbones": {"atomic", "errors", "paths", "registry", "safe_load"},
    "splat": {"data.core", "data.batches", "errors", "geometry", "memory", "registry", "render"},
    "lifters": {
        "atomic",
        "backbones",
        "data",
        "data.core",
        "data.batches",
        "data.formats",
        "devices",
        "errors",
        "geometry",
        "registry",
        "render",
        "run_folder",
        "runs",
        "safe_load",
        "splat",
        "threads",
    },
    "baselines": {
        "atomic",
        "backbones",
        "data.core",
        "data.batches",
        "errors",
        "geometry",
        "render",
        "runs",
        "safe_load",
        "splat",
    },  # runs: the training loop every fit shares (issue 32 item 1)
    "distill": {
        "atomic",
        "backbones",
        "baselines",
        "config",
        "data",
        "data.batches",
        "devices",
        "errors",
        "geometry",
        "lifters",
        "run_folder",
        "runs",
        "safe_load",
        "splat",
        "threads",
    },
    "eval.benchmarks": {"data.core", "data.formats", "data.checks", "errors"},
    "eval": {
        "__init__",
        "atomic",
        "backbones",
        "config",
        "data",
        "data.core",
        "data.batches",
        "data.formats",
        "devices",
        "errors",
        "eval.benchmarks",
        "geometry",
        "registry",
        "report_html",
        "threads",
        "viz",
    },
    "bench": {
        "backbones",
        "data",
        "data.batches",
        "devices",
        "distill",
        "errors",
        "geometry",
        "render",
        "splat",
        "threads",
    },
    "commands": {
        "__init__",
        "atomic",
        "backbones",
        "baselines",
        "captures",
        "config",
        "data",
        "data.checks",
        "data.formats",
        "data.rooms",
        "devices",
        "distill",
        "errors",
        "eval",
        "eval.benchmarks",
        "lifters",
        "paths",
        "render",
        "report_html",
        "run_folder",
        "safe_load",
        "splat",
        "threads",
        "viz",
    },
    "cli": {"__init__", "commands", "config", "errors", "threads"},
    "__main__": {"cli"},
}
#: third-party modules library code may import inside a function, and why: optional (not needed by
#: most users, or CUDA only) or slow to import for the commands that do not use them
LAZY_THIRD_PARTY = {
    "gsplat": "CUDA only",
    "onnx": "only to convert the shipped DINOv2 graph once",
    "pycolmap": "only for COLMAP datasets and from-images",
    "h5py": "only for the NYUv2 labelled set",
    "open3d": "optional ([rgbd] extra): only for from-rgbd's odometry",
    "trimesh": "only to build the rooms dataset",
    "embreex": "only to build the rooms dataset",
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
MAX_CLASS_LINES = 250
#: classes with their own ceiling, each with why: the trainer stays the conductor of its parts (target
#: source, loss, Run loop), so it gets a tighter cap than the rest
LONG_CLASSES_OK = {
    ("distill/trainer.py", "Trainer"): (200, "the method lives in distill/targets.py, losses.py and runs.Run")
}
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


def _unit(module: str) -> str:
    """The node of :data:`ALLOWED` that ``module`` belongs to."""
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        if (key := ".".join(parts[:n])) in SUBUNITS:
            return SUBUNITS[key]
    return _package(module)


def _is_package(module: str) -> bool:
    return MODULES.get(module, Path()).name == "__init__.py"


@functools.cache
def _imports_of(module: str) -> tuple[tuple[int, str, bool], ...]:
    return tuple(_imports(module, MODULES[module]))


def _imports(module: str, path: Path):
    """(line, imported splatdistill module, inside a function) for every import of ``module``."""
    tree = ast.parse(path.read_text())
    func_nodes = {
        id(m) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for m in ast.walk(f)
    }
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


def test_every_module_has_a_unit():
    missing = sorted({_unit(m) for m in MODULES} - set(ALLOWED))
    assert not missing, f"give these units their allowed imports in ALLOWED: {missing}"
    loose = sorted(
        m
        for m in MODULES
        if m.startswith(LOOKED_INSIDE)
        and m not in LOOKED_INSIDE
        and not any(m == k or m.startswith(k + ".") for k in SUBUNITS if k not in LOOKED_INSIDE)
    )
    assert not loose, f"place these modules in a unit of SUBUNITS: {loose}"


def _edges() -> list[tuple[str, int, str, str]]:
    """(file, line, from unit, to unit) for every import that crosses units."""
    out = []
    for module, path in MODULES.items():
        for line, target, _ in _imports_of(module):
            if target.startswith("splatdistill") and (src := _unit(module)) != (dst := _unit(target)):
                out.append((str(path.relative_to(SRC)), line, src, dst))
    return out


def test_imports_follow_the_allowed_graph():
    bad = [
        f"{f}:{line}: {src} imports {dst}, not in ALLOWED[{src!r}]"
        for f, line, src, dst in _edges()
        if dst not in ALLOWED.get(src, set())
    ]
    assert not bad, "imports outside the intended graph:\n" + "\n".join(bad)


def _layers() -> dict[str, int]:
    """Each unit's depth in ALLOWED (0: imports nothing of ours); raises on a cycle."""
    depth: dict[str, int] = {}

    def visit(u: str, path: tuple[str, ...]) -> int:
        if u in path:
            pytest.fail("ALLOWED has a cycle: " + " -> ".join((*path[path.index(u) :], u)))
        if u not in depth:
            depth[u] = 1 + max((visit(d, (*path, u)) for d in ALLOWED.get(u, ())), default=-1)
        return depth[u]

    for u in ALLOWED:
        visit(u, ())
    return depth


def test_allowed_graph_is_acyclic_and_closed():
    unknown = sorted({d for deps in ALLOWED.values() for d in deps} - set(ALLOWED))
    assert not unknown, f"ALLOWED names units that do not exist: {unknown}"
    assert all(u not in deps for u, deps in ALLOWED.items())
    _layers()


def render_graph() -> str:
    """The intended graph by depth, each unit with the units it may import (``python tests/test_structure.py``)."""
    depth = _layers()
    lines = []
    for level in range(max(depth.values()) + 1):
        for u in sorted(u for u, d in depth.items() if d == level):
            lines.append(f"{level:2d}  {u:<16} -> {', '.join(sorted(ALLOWED[u])) or '-'}")
    return "\n".join(lines)


def test_library_code_imports_at_module_level():
    bad = []
    for module, path in MODULES.items():
        if _package(module) in ("commands", "cli", "__main__"):
            continue  # start-up time of the CLI: commands import their work lazily
        for line, target, inner in _imports_of(module):
            if not inner:
                continue
            top = target.split(".")[0]
            if top == "splatdistill" or top not in LAZY_THIRD_PARTY:
                bad.append(f"{path.relative_to(SRC)}:{line}: import of {target} inside a function")
    assert not bad, "\n".join(bad)


def test_module_import_graph_has_no_cycle():
    graph = {m: {t for _, t, _ in _imports_of(m) if t in MODULES and t != m} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (cycle := visit(t)):
                return cycle
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_no_file_function_or_class_is_too_long():
    long_files, long_funcs, long_classes = [], [], []
    for path in MODULES.values():
        rel = str(path.relative_to(SRC))
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{rel}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            n = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if n > MAX_FUNCTION_LINES and (rel, node.name) not in LONG_FUNCTIONS_OK:
                    long_funcs.append(f"{rel}:{node.lineno}: {node.name} has {n} lines")
            elif isinstance(node, ast.ClassDef):
                ceiling = LONG_CLASSES_OK.get((rel, node.name), (MAX_CLASS_LINES, ""))[0]
                if n > ceiling:
                    long_classes.append(f"{rel}:{node.lineno}: class {node.name} has {n} lines (at most {ceiling})")
    assert not long_files and not long_funcs and not long_classes, "\n".join(long_files + long_funcs + long_classes)


def test_package_face_exports_resolve():
    """The root package names its entry points without importing them at start-up (``__getattr__``)."""
    import splatdistill

    for name, module in splatdistill._EXPORTS.items():
        assert getattr(splatdistill, name).__module__.startswith(module), name
    assert set(splatdistill._EXPORTS) <= set(dir(splatdistill))


def test_the_checks_can_fail(tmp_path):
    """The walkers see what they must: an import against the graph, a function-level import, a format
    parser reaching up to the data face, and a long class."""
    fake = tmp_path / "geometry_fake.py"
    fake.write_text(
        "import os\nfrom splatdistill.distill import trainer\n\ndef f():\n    from splatdistill import data\n"
    )
    module = "splatdistill.geometry.fake"
    found = list(_imports(module, fake))
    assert (2, "splatdistill.distill.trainer", False) in found
    assert (5, "splatdistill.data", True) in found
    assert _unit("splatdistill.distill.trainer") not in ALLOWED[_unit(module)]
    assert _unit("splatdistill.data.formats.tum") == "data.formats" and _unit("splatdistill.data.io") == "data.core"
    assert "data" not in ALLOWED[_unit("splatdistill.data.formats.tum")]  # formats never import the face
    assert (
        _unit("splatdistill.eval.benchmarks.nyuv2") == "eval.benchmarks" and _unit("splatdistill.eval.paper") == "eval"
    )
    big = ast.parse("class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES)
    assert big.body[0].end_lineno - big.body[0].lineno + 1 > MAX_CLASS_LINES


if __name__ == "__main__":
    print(render_graph())
