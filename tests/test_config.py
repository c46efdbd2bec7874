"""The one config loader: nested groups, dotted and bare keys, flat aliases of old files, Literal checks,
and the command-line bridge (--config < flags < key=value, --print-config)."""

from __future__ import annotations

import pytest
import yaml

from splatdistill.cli import main
from splatdistill.config import dump_yaml, flat_config, load_config
from splatdistill.distill.config import TrainConfig
from splatdistill.errors import UserError
from splatdistill.eval.config import EvalConfig


def test_keys_resolve_by_dotted_path_bare_name_and_flat_alias(tmp_path):
    cfg = TrainConfig.load(None, ["optim.lr=3e-4", "blend_alpha=1", "fit3d_iterations=7", "lora_r=4", "data=x"])
    assert cfg.optim.lr == 3e-4 and cfg.method.splat.blend_alpha == 1.0
    assert cfg.method.fit3d.iterations == 7 and cfg.model.lora.r == 4 and cfg.data.root == "x"
    # a later key wins whichever spelling it uses
    assert TrainConfig.load(None, ["lr=1e-3", "optim.lr=2e-3"]).optim.lr == 2e-3
    # nested YAML (as --print-config writes it) and a flat one (as earlier releases wrote) load the same
    (tmp_path / "nested.yaml").write_text(dump_yaml(cfg))
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump(flat_config(cfg)))
    assert TrainConfig.load(tmp_path / "nested.yaml") == cfg == TrainConfig.load(tmp_path / "flat.yaml")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_values_name_the_option():
    with pytest.raises(UserError, match="option method.splat.renderer must be auto, torch or gsplat, got 'cuda'"):
        TrainConfig.load(None, ["renderer=cuda"])
    with pytest.raises(UserError, match="unknown option"):
        TrainConfig.load(None, ["alpha_blend=1"])
    with pytest.raises(UserError, match="option data.image_size expects int"):
        TrainConfig.load(None, ["image_size=true"])
    with pytest.raises(UserError, match="eval_split must be auto, train, val or test"):
        load_config(EvalConfig, None, ["eval_split=dev"])


def test_command_line_precedence_and_print_config(tmp_path, capsys):
    (tmp_path / "e.yaml").write_text("probe_steps: 11\nresolution: 98\n")
    assert main(["eval", "--config", str(tmp_path / "e.yaml"), "--resolution", "112", "probe_steps=13",
                 "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["resolution"] == 112 and printed["probe_steps"] == 13  # flags over file, key=value over both
    for cmd in (["train"], ["lifter", "train"], ["demo"]):
        assert main([*cmd, "--print-config", "seed=3" if cmd != ["demo"] else "minutes=2"]) == 0
        out = yaml.safe_load(capsys.readouterr().out)
        assert out.get("run", out).get("seed", out.get("minutes")) in (3, 2.0)
    assert main(["eval", "--print-config"]) == 0  # no backbone or data needed to see the config
    capsys.readouterr()
    assert main(["eval", "--data", "rooms"]) == 2
    assert "missing --backbone, --out" in capsys.readouterr().err
