"""The one registry behind dataset formats, backbones, lifters and the paper's benchmarks: lookups, the
"did you mean" of a typo, and the tables that moved onto it keeping every name they accepted."""

from __future__ import annotations

import pytest

from splatdistill.errors import UserError
from splatdistill.registry import Registry


def test_register_get_and_did_you_mean():
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)

    @reg.register("green")
    def green() -> int:
        return 2

    assert reg.get("red") == 1 and reg["green"] is green and reg.find("blue") is None
    assert reg.names() == ("red", "green") and list(reg) == ["red", "green"] and len(reg) == 2
    assert "red" in reg and "blue" not in reg and [] not in reg
    with pytest.raises(UserError, match=r"unknown colour 'gren' \(choose from red, green\); did you mean 'green'\?"):
        reg.get("gren")
    assert reg.unknown_message("zzz", also=("auto",)) == "unknown colour 'zzz' (choose from auto, red, green)"
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("red", 3)
    reg.register("red", 1)  # the same entry again (a module imported twice) is not a clash
    reg.register("red", 4, replace=True)
    assert reg.get("red") == 4


def test_dataset_formats_detect_in_the_order_they_always_did():
    """The if-chain this replaced tried the layouts in this order; the registry's explicit order keeps it."""
    import splatdistill.eval.benchmarks  # noqa: F401  (the paper's layouts register on import)
    from splatdistill.data import format_names, load_dataset

    assert format_names() == (
        "auto",
        "splatdistill",
        "scannetpp",
        "nerfstudio",
        "colmap",
        "tum",
        "7scenes",
        "nyuv2",
        "scannet1500",
        "scannetpp_probe",
        "scannet_probe",
        "ade20k",
        "kitti",
    )
    with pytest.raises(UserError, match=r"unknown dataset format 'nerfstuido' .*did you mean 'nerfstudio'\?"):
        load_dataset(".", format="nerfstuido")


def test_detection_of_files_and_an_empty_folder(tmp_path):
    import splatdistill.eval.benchmarks  # noqa: F401
    from splatdistill.data import detect_format

    for name, fmt in [
        ("scene.json", "splatdistill"),
        ("transforms.json", "nerfstudio"),
        ("x.mat", "nyuv2"),
        ("pairs.txt", "scannet1500"),
    ]:
        (tmp_path / name).write_text("{}")
        assert detect_format(tmp_path / name) == fmt
    (tmp_path / "notes.csv").write_text("")
    with pytest.raises(
        UserError,
        match=r"notes.csv: expected a dataset folder \(or a scene.json / transforms.json / "
        r"NYUv2 .mat / ScanNet-1500 pairs file\)",
    ):
        detect_format(tmp_path / "notes.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        UserError,
        match=r"no dataset found: expected scene.json folders \(splatdistill\), .*a COLMAP "
        r"sparse model, .*or a benchmark: nyu_depth_v2_labeled.mat, .*KITTI Eigen split",
    ):
        detect_format(tmp_path / "empty")


def test_backbone_and_lifter_names_are_all_still_accepted():
    from splatdistill.backbones import NAMED_BACKBONES
    from splatdistill.backbones.families import TEACHER_FAMILIES
    from splatdistill.backbones.released import RELEASED
    from splatdistill.eval.paper import BENCHMARKS
    from splatdistill.lifters import available_lifters, build_lifter

    assert set(NAMED_BACKBONES.names()) == {"dinov2_vits14", "dinov2", "default", "mobilenetv2", "mobilenet_v2"}
    assert {"snd_vits14", "snd_vitb14_noblend", "fit3d_vits14", "fit3d_deit3_vitb16"} <= set(RELEASED)
    assert {"dinov2", "dinov2_reg", "dinov3", "clip_openai", "siglip2", "mae", "deit3"} <= set(TEACHER_FAMILIES)
    assert BENCHMARKS.names() == ("nyu", "kitti", "ade20k", "scannet1500", "scannet", "scannetpp")
    assert set(available_lifters()) == {"auto", "depth", "depth-anything-v2", "mvsplat", "ply", "predictor", "python"}
    with pytest.raises(UserError, match=r"unknown lifter 'predicter:x' .*did you mean 'predictor'\?"):
        build_lifter("predicter:x")
