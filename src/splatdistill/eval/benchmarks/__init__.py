"""The paper's benchmarks in their published layouts, beside the evaluation that scores them.

Each module reads one layout and registers it as a dataset format (``format=NAME`` and detection by
:func:`splatdistill.data.load_dataset`) when imported; importing this package registers them all:

- ``nyuv2`` (:mod:`.nyuv2`): the NYU Depth v2 labelled set (``nyu_depth_v2_labeled.mat`` + ``splits.mat``)
- ``scannet1500`` (:mod:`.scannet1500`): the ScanNet-1500 test pairs (``scannet_test_pairs_with_gt.txt`` + ``scans_test/``)
- ``scannetpp_probe``, ``scannet_probe`` (:mod:`.fit3d_probes`): FiT3D's ScanNet++ / ScanNet probe sets
- ``ade20k`` (:mod:`.ade20k`): ``ADEChallengeData2016`` (150 classes)
- ``kitti`` (:mod:`.kitti`): KITTI depth on the Eigen split

The protocol each is scored with (depth range, crops, input size) is registered in
:data:`splatdistill.eval.paper.BENCHMARKS`; docs/evaluation.md describes both.
"""

from __future__ import annotations

from splatdistill.eval.benchmarks import ade20k, fit3d_probes, kitti, nyuv2, scannet1500

__all__ = ["ade20k", "fit3d_probes", "kitti", "nyuv2", "scannet1500"]
