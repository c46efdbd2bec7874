"""Dataset formats: one module per on-disk layout, each registering its name, detection and loader in
:data:`~splatdistill.data.formats.base.FORMATS` when imported (importing this package registers them all).

- ``splatdistill`` (:mod:`.native`): folders with ``scene.json`` (docs/data-format.md)
- ``scannetpp`` (:mod:`.scannetpp`): ScanNet++ as preprocessed by FiT3D
- ``nerfstudio`` (:mod:`.nerfstudio`): a folder with ``transforms.json``
- ``colmap`` (:mod:`.colmap`): a COLMAP sparse model plus images
- ``tum`` (:mod:`.tum`), ``7scenes`` (:mod:`.sevenscenes`): RGB-D sequences, read through :mod:`.rgbd`

:mod:`.middlebury` reads the bundled Middlebury pair (no path to detect). The paper's benchmarks
register from :mod:`splatdistill.eval.benchmarks`.
"""

from __future__ import annotations

from splatdistill.data.formats import colmap, native, nerfstudio, scannetpp, sevenscenes, tum
from splatdistill.data.formats.base import FORMATS, Format, detect_order, register_format

__all__ = ["FORMATS", "Format", "colmap", "detect_order", "native", "nerfstudio", "register_format", "scannetpp",
           "sevenscenes", "tum"]
