"""Evaluation suite: probes on frozen features (depth, normals, segmentation), multi-view
correspondence and consistency, and a side-by-side report. Protocol: docs/evaluation.md.

``evaluate(backbones, data, tasks, out_dir, config)`` is the entry point; the modules below it are
usable on their own (``metrics`` is pure numpy).
"""

from splatdistill.eval.features import BackboneEntry
from splatdistill.eval.runner import TASKS, EvalConfig, evaluate, parse_tasks

__all__ = ["TASKS", "BackboneEntry", "EvalConfig", "evaluate", "parse_tasks"]
