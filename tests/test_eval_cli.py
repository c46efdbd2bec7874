"""``splatdistill eval`` from the command line: a real (random-init) ViT on a small dataset on disk,
and one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splatdistill.cli import main
from splatdistill.data.formats.native import save_scene
from splatdistill.eval.synthetic import make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: no thread contention


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for scene in make_dataset(train_scenes=2, test_scenes=1, views_per_scene=4, size=(56, 56), seed=2):
        save_scene(scene, root / scene.name)
    return root


FAST = [
    "--resolution",
    "28",
    "--probe-steps",
    "10",
    "--pairs",
    "3",
    "--keep",
    "50",
    "--points",
    "50",
    "--no-middlebury",
    "-q",
]


def test_cli_end_to_end_with_real_backbone(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(
        [
            "eval",
            "--backbone",
            "rnd=random:vit_small_patch14_dinov2",
            "--backbone",
            "rnd=random:vit_small_patch14_dinov2",
            "--data",
            str(dataset),
            "--out",
            str(out),
            *FAST,
        ]
    )
    assert rc == 0
    doc = json.loads((out / "results.json").read_text())
    assert [b["label"] for b in doc["backbones"]] == ["rnd", "rnd#2"]
    assert doc["backbones"][0]["embed_dim"] == 384 and doc["backbones"][0]["grid"] == [2, 2]
    assert doc["backbones"][1]["cache_hit"]  # the same weights and pixels: one extraction serves both
    assert doc["backbones"][0]["results"]["depth"] == doc["backbones"][1]["results"]["depth"]
    assert (out / "report.md").is_file() and (out / "pca.png").is_file() and (out / "bars_depth.png").is_file()
    assert "rnd: depth AbsRel=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{missing}", "--backbone", "random:vit_small_patch14_dinov2"], "data directory not found"),
        (
            ["--data", "{data}", "--backbone", "random:vit_small_patch14_dinov2", "--tasks", "depth,flow"],
            "unknown task 'flow'",
        ),
        (["--data", "{data}", "--backbone", "{missing}/student.safetensors"], "failed to load"),
        (
            ["--data", "{data}", "--backbone", "random:vit_small_patch14_dinov2", "--eval-split", "val"],
            "split 'val' has no scenes",
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(dataset, tmp_path, capsys, args, message):
    args = [a.format(missing=tmp_path / "nope", data=dataset) for a in args]
    rc = main(["eval", *args, "--out", str(tmp_path / "out"), *FAST])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and "\n" not in err and err.startswith("splatdistill eval: error:")


def test_exit_status_from_a_real_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "splatdistill",
            "eval",
            "--backbone",
            "dinov2_vits14",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "data directory not found" in proc.stderr


def test_one_capture_without_held_out_scenes_gets_the_multi_view_tasks(tmp_path, capsys):
    """A user's single capture (train split only): probes are skipped with the reason, correspondence
    and consistency run on its views, and the report says they are not held out."""
    root = tmp_path / "capture"
    scene = make_dataset(train_scenes=1, test_scenes=0, views_per_scene=4, size=(56, 56), seed=3)[0]
    assert scene.split == "train"
    save_scene(scene, root / scene.name)
    out = tmp_path / "out"
    rc = main(["eval", "-b", "random:vit_small_patch14_dinov2", "--data", str(root), "--out", str(out), *FAST])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipped depth, normals, segmentation: the data has no held-out (val or test) scenes" in err
    doc = json.loads((out / "results.json").read_text())
    res = doc["backbones"][0]["results"]
    assert "correspondence" in res and "depth" not in res
    corr = res["correspondence"][root.name]
    assert corr["pairs"] > 0 and 0.0 <= corr["recall_10"] <= 1.0
    assert "no held-out scenes: no probes" in (out / "report.md").read_text()
    rc = main(
        [
            "eval",
            "-b",
            "random:vit_small_patch14_dinov2",
            "--data",
            str(root),
            "--out",
            str(out),
            "--tasks",
            "depth",
            *FAST,
        ]
    )
    assert rc == 2 and "the probes need them" in capsys.readouterr().err
