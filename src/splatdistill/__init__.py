"""splatdistill: Splat-and-Distill for vision foundation models (Shavin & Benaim, ICLR 2026).

The entry points a user imports, resolved on first use (an eager import would make every command,
``splatdistill --version`` included, load torch and the whole pipeline)::

    from splatdistill import load_backbone, render_features, TrainConfig, Trainer, evaluate
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (docs/design.md, "The pipeline as the tree shows it")
_EXPORTS = {
    "load_backbone": "splatdistill.backbones",
    "render_features": "splatdistill.render",
    "TrainConfig": "splatdistill.distill.config",
    "Trainer": "splatdistill.distill.trainer",
    "evaluate": "splatdistill.eval.runner",
    "EvalConfig": "splatdistill.eval.config",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'splatdistill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
