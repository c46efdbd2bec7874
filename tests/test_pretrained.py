"""The shipped predictor: loads offline by name, is the default lifter, and reproduces the held-out
depth accuracy recorded when it was trained, on a held-out room of the default build re-rendered here,
and its recorded figure on a real stereo pair (Middlebury's Motorcycle, from scikit-image)."""

from __future__ import annotations

import json

import pytest

from _real_data import motorcycle
from splatdistill.errors import UserError
from splatdistill.lifters import build_lifter
from splatdistill.lifters.predictor import PredictorLifter, load_predictor
from splatdistill.lifters.pretrained import DEFAULT_PREDICTOR, PRETRAINED, pretrained_folder, resolve_predictor


def test_shipped_predictor_loads_by_name_and_is_the_default():
    folder = pretrained_folder(DEFAULT_PREDICTOR)
    model = load_predictor(folder)
    assert sum(p.numel() for p in model.parameters()) > 100_000
    assert (folder / "predictor.safetensors").stat().st_size < 5_000_000
    for spec in ("auto", f"predictor:{DEFAULT_PREDICTOR}", "predictor:shipped", "predictor:rooms-cnn"):
        assert isinstance(build_lifter(spec), PredictorLifter)
    assert load_predictor(pretrained_folder("rooms-cnn")).config.planes == "fixed"  # the previous default, kept
    assert resolve_predictor("shipped") == folder
    with pytest.raises(UserError, match="no such predictor"):
        resolve_predictor("no-such-model")
    with pytest.raises(UserError, match="takes no argument"):
        build_lifter("auto:x")
    from splatdistill.distill.config import TrainConfig

    assert TrainConfig().method.lifter == "auto"
    for entry in PRETRAINED.values():
        assert entry.command.startswith("splatdistill lifter train") and entry.data


def test_shipped_predictor_reproduces_its_recorded_held_out_depth(tmp_path):
    """Re-render one held-out room of the default rooms build (deterministic, ~10 s) and evaluate the
    shipped weights on exactly the context pairs recorded at training time."""
    from splatdistill.data.rooms.build import RoomsParams, build_scene, scene_name, split_of
    from splatdistill.lifters.evaluate import evaluate_saved_predictor

    folder = pretrained_folder(DEFAULT_PREDICTOR)
    recorded = json.loads((folder / "predictor.json").read_text())["meta"]["held_out"]
    params = RoomsParams()
    index = next(i for i in range(params.scenes) if split_of(i, params.scenes, params.seed) == "test")
    name = scene_name(index)
    assert name in recorded["per_scene_abs_rel"]
    build_scene(str(tmp_path), index, params)
    res = evaluate_saved_predictor(folder, str(tmp_path), splits=("test",), progress=False)
    assert res["scenes"] == [name]
    assert res["predictor"]["abs_rel"] == pytest.approx(recorded["per_scene_abs_rel"][name], abs=2e-3)
    # and better than the constant depth it is compared against, even here
    assert res["predictor"]["abs_rel"] < res["constant_train_median"]["abs_rel"]


def test_shipped_predictor_reproduces_its_recorded_real_stereo_pair_figure(tmp_path):
    """The Motorcycle pair (real photos, metric ground truth): the figure recorded in predictor.json is
    reproduced, and it is well under the constant depth's (the median ground truth, an oracle)."""
    from splatdistill.lifters.evaluate import evaluate_saved_predictor

    folder = pretrained_folder(DEFAULT_PREDICTOR)
    recorded = json.loads((folder / "predictor.json").read_text())["meta"]["real_data"]["motorcycle"]
    res = evaluate_saved_predictor(folder, str(motorcycle(tmp_path)), progress=False)
    assert res["pairs"] == 1
    assert res["predictor"]["abs_rel"] == pytest.approx(recorded["abs_rel"], abs=2e-3)
    assert res["predictor"]["abs_rel"] <= 0.6 * res["constant_depth"]["abs_rel"]
