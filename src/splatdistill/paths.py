"""Where splatdistill keeps caches (converted weights, built datasets).

``SPLATDISTILL_CACHE`` overrides the root; otherwise ``$XDG_CACHE_HOME/splatdistill`` or
``~/.cache/splatdistill``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SPLATDISTILL_CACHE"


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "splatdistill"


def weights_cache_dir() -> Path:
    return cache_dir() / "weights"


def data_cache_dir() -> Path:
    return cache_dir() / "data"
