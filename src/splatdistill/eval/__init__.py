"""Evaluation suite: probes on frozen features (depth, normals, segmentation), multi-view
correspondence and consistency, and a side-by-side report. Protocol: docs/evaluation.md.

``evaluate(backbones, data, tasks, out_dir, config)`` is the entry point; the modules below it are
usable on their own (``metrics`` is pure numpy). The names below resolve on first use, so that
``splatdistill eval --help`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BackboneEntry": "splatdistill.eval.features",
    "TASKS": "splatdistill.eval.config",
    "EvalConfig": "splatdistill.eval.config",
    "evaluate": "splatdistill.eval.runner",
    "parse_tasks": "splatdistill.eval.config",
}

__all__ = ["TASKS", "BackboneEntry", "EvalConfig", "evaluate", "parse_tasks"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'splatdistill.eval' has no attribute {name!r}")
