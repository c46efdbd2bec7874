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
    cfg = TrainConfig.load(None, ["optim.lr=3e-4", "blend_alpha=1", "fit3d.iterations=7", "lora.r=4", "data=x"])
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
    with pytest.raises(UserError, match="image_size must be an integer .the short side. or HxW"):
        TrainConfig.load(None, ["image_size=true"])
    with pytest.raises(UserError, match="render_size must be positive"):
        TrainConfig.load(None, ["render_size=10x0"])
    with pytest.raises(UserError, match="option run.preset must be cpu or paper, got 'gpu'"):
        TrainConfig.load(None, ["preset=gpu"])
    with pytest.raises(UserError, match="eval_split must be auto, train, val or test"):
        load_config(EvalConfig, None, ["eval_split=dev"])


def test_command_line_precedence_and_print_config(tmp_path, capsys):
    (tmp_path / "e.yaml").write_text("probe_steps: 11\nresolution: 98\n")
    assert (
        main(["eval", "--config", str(tmp_path / "e.yaml"), "--resolution", "112", "probe_steps=13", "--print-config"])
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (
        printed["data"]["resolution"] == 112 and printed["probe"]["probe_steps"] == 13
    )  # flags over file, key=value over both
    for cmd in (["train"], ["lifter", "train"], ["demo"]):
        assert main([*cmd, "--print-config", "seed=3" if cmd != ["demo"] else "steps=2"]) == 0
        out = yaml.safe_load(capsys.readouterr().out)
        assert out.get("run", out).get("seed", out.get("steps")) in (3, 2)
    assert main(["eval", "--print-config"]) == 0  # no backbone or data needed to see the config
    capsys.readouterr()
    assert main(["eval", "--data", "rooms"]) == 2
    assert "missing --backbone, --out" in capsys.readouterr().err


def test_sizes_take_a_short_side_or_hxw():
    from splatdistill.data.views import fit_size

    cfg = TrainConfig.load(None, ["image_size=574x868", "render_size=576x880"])
    assert (cfg.data.image_size, cfg.data.render_size) == ("574x868", "576x880")
    assert TrainConfig.load(None, ["image_size=224"]).data.image_size == 224
    assert fit_size("574x868", 1000, 1500) == (574, 868)  # exact
    assert fit_size(224, 400, 600) == (224, 336) and fit_size(112, 600, 400) == (168, 112)  # short side


def test_ema_horizon_sets_the_momentum_for_the_run_length():
    from splatdistill.distill.config import ema_momentum_from_horizon

    # the paper: 0.999 every 10 steps of 300k = a time constant of 10k steps = 1/30 of the run
    assert abs(ema_momentum_from_horizon(1 / 30, 300_000, 10) - 0.999) < 1e-12
    m = TrainConfig.load(None, []).method
    assert m.ema_momentum is None and abs(m.ema_momentum_for(1000) - 0.7) < 1e-12  # 10 / (1 - 0.7) = 33 steps
    assert abs(m.ema_momentum_for(300_000) - 0.999) < 1e-12
    assert ema_momentum_from_horizon(1 / 30, 100, 10) == 0.0  # shorter than one update: copy the student
    frozen = TrainConfig.load(None, ["ema_momentum=1"]).method
    assert frozen.ema_momentum_for(1000) == 1.0 == frozen.ema_momentum_for(10)
    with pytest.raises(UserError, match="ema_horizon must be > 0"):
        TrainConfig.load(None, ["ema_horizon=0"])


def test_paper_preset_sets_the_reference_values_and_explicit_keys_win(tmp_path, capsys):
    from splatdistill.distill.config import PAPER_PRESET

    cpu = TrainConfig.load(None, [])
    paper = TrainConfig.load(None, ["preset=paper", "lifter=auto"])
    from splatdistill.config import key_aliases

    aliases = key_aliases(TrainConfig)
    for key, value in PAPER_PRESET.items():
        node = paper
        for part in aliases[key]:
            node = getattr(node, part)
        assert node == value, key
    assert (paper.data.image_size, paper.data.render_size, paper.data.sampler) == ("574x868", "576x880", "frames")
    assert paper.method.prototypes == 65536 and paper.method.prototype_gain == "trainable"
    assert paper.method.ema_momentum_for(paper.optim.steps) == 0.999
    assert cpu.method.prototypes == 4096 and cpu.data.image_size == 224 and cpu.run.preset == "cpu"
    # class defaults < preset < file < key=value
    (tmp_path / "p.yaml").write_text("preset: paper\nsteps: 50\nlifter: mvsplat:re10k.ckpt:1:100\n")
    mixed = TrainConfig.load(tmp_path / "p.yaml", ["lr=1e-3"])
    assert (mixed.optim.steps, mixed.optim.lr, mixed.method.prototypes) == (50, 1e-3, 65536)
    # the saved config (all values explicit) reloads to the same run
    (tmp_path / "saved.yaml").write_text(dump_yaml(mixed))
    assert TrainConfig.load(tmp_path / "saved.yaml") == mixed
    assert main(["train", "--print-config", "preset=paper", "lifter=auto"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lora"]["target_modules"] == PAPER_PRESET["target_modules"]
    assert printed["optim"]["steps"] == 300_000


def test_paper_preset_refuses_the_default_lifter(tmp_path, capsys):
    """preset=paper names its lifter: without an explicit lifter= it stops with one line naming MVSplat; an
    explicit lifter (even auto) is the user's choice."""
    with pytest.raises(UserError, match=r"preset=paper needs lifter=\.\.\. set explicitly: .*lifter=mvsplat:CKPT"):
        TrainConfig.load(None, ["preset=paper"])
    (tmp_path / "p.yaml").write_text("preset: paper\n")
    with pytest.raises(UserError, match="preset=paper needs lifter="):
        TrainConfig.load(tmp_path / "p.yaml")
    assert main(["train", "--print-config", "preset=paper"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lifter=mvsplat:CKPT" in err[0] and "depth-anything-v2" in err[0]
    assert TrainConfig.load(None, ["preset=paper", "lifter=auto"]).method.lifter == "auto"
    assert TrainConfig.load(tmp_path / "p.yaml", ["lifter=depth"]).method.lifter == "depth"
    assert TrainConfig.load(None, []).method.lifter == "auto"  # the cpu preset keeps the default


@pytest.mark.parametrize(
    "option, message",
    [
        ("checkpoint_every=0", "checkpoint_every must be >= 1"),
        ("lr=.nan", "lr must be a finite number > 0"),
        ("lr=-1", "lr must be a finite number > 0"),
        ("lr=.inf", "lr must be a finite number > 0"),
        ("gaussian_opacity=5", "gaussian_opacity must be in"),
        ("lora.r=0", "lora.r must be >= 1"),
        ("lora.dropout=2", "lora.dropout must be in"),
        ("head_lr=-1", "head_lr must be"),
        ("teacher_temp=0", "teacher_temp and student_temp must be > 0"),
        ("center_momentum=1", "center_momentum"),
    ],
)
def test_out_of_range_training_options_fail_up_front(option, message):
    with pytest.raises(UserError, match=message):
        TrainConfig.load(None, [option])


def _printed(capsys, argv):
    assert main([*argv, "--print-config"]) == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def test_flags_are_generated_from_the_fields_with_their_comments_and_choices(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "--optim.steps INT (default: 1000; also --steps)" in text
    assert "--method.loss {dino,cosine,l1,mse}" in text and "--data.split {train,val,test}" in text
    assert "target views per sample (default: 1; also --num_targets)" in text  # the field's own comment
    assert "--model.lora.r INT (default: 8; also --r)" in text
    from dataclasses import fields

    from splatdistill.config import field_help
    from splatdistill.eval.config import EvalDataConfig, EvalProbeConfig

    assert field_help(EvalDataConfig)["max_eval_views"] == "spread evenly over the held-out scenes"
    helps = field_help(EvalProbeConfig)
    assert helps["depth_flip"].startswith("average each held-out depth prediction")  # the lines above it
    assert set(helps) == {f.name for f in fields(EvalProbeConfig)}


def test_one_grammar_on_the_command_line(capsys):
    """--a.b v, --a.b=v, --tail v, --a-b v and a.b=v / tail=v all set the same field; key=value wins."""
    for argv in (["--optim.steps", "10"], ["--optim.steps=10"], ["--steps", "10"], ["optim.steps=10"], ["steps=10"]):
        assert _printed(capsys, ["train", *argv])["optim"]["steps"] == 10, argv
    printed = _printed(
        capsys,
        [
            "train",
            "--max-minutes",
            "3",
            "--lora.r",
            "4",
            "--progress",
            "false",
            "--deterministic",
            "--steps",
            "10",
            "steps=11",
        ],
    )
    assert printed["optim"]["max_minutes"] == 3.0 and printed["model"]["lora"]["r"] == 4
    assert printed["run"]["progress"] is False and printed["run"]["deterministic"] is True
    assert printed["optim"]["steps"] == 11
    assert _printed(capsys, ["train", "--deterministic", "steps=12"])["optim"]["steps"] == 12  # a bare boolean flag
    assert _printed(capsys, ["eval", "--max-train-views", "5"])["data"]["max_train_views"] == 5
    assert _printed(capsys, ["lifter", "train", "--num-depths", "8"])["model"]["num_depths"] == 8


def test_command_line_strings_stay_strings(tmp_path, capsys):
    for argv in (["out=off"], ["--out", "off"], ["--run.out=off"]):
        assert _printed(capsys, ["train", *argv])["run"]["out"] == "off", argv
    cfg = TrainConfig.load(None, ["out=off", "backbone=yes", "image_size=224", "ema_momentum=null", "cache=123"])
    assert (cfg.run.out, cfg.model.backbone, cfg.data.image_size) == ("off", "yes", 224)
    assert cfg.method.ema_momentum is None and cfg.method.fit3d.cache == "123"
    (tmp_path / "c.yaml").write_text(dump_yaml(cfg))  # the saved config reloads to the same values
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg
    (tmp_path / "bare.yaml").write_text("run:\n  out: off\n")  # YAML's own boolean: refused, not a folder "False"
    with pytest.raises(UserError, match="option run.out expects a string, got False .*quote the value"):
        TrainConfig.load(tmp_path / "bare.yaml")


def test_unknown_keys_and_choices_name_the_nearest_spelling(capsys):
    assert main(["train", "--stepz", "10"]) == 2
    assert (
        capsys.readouterr().err.strip() == "splatdistill train: error: unknown option --stepz (did you mean --steps?)"
    )
    assert main(["lifter", "train", "--num-depth", "8"]) == 2
    assert "unknown option --num-depth (did you mean --num_depths?)" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"unknown option\(s\) stepz \(did you mean steps\?\)"):
        TrainConfig.load(None, ["stepz=10"])
    with pytest.raises(UserError, match=r"data.steps \(did you mean optim.steps\?\)"):
        TrainConfig.load(None, ["data.steps=10"])
    with pytest.raises(UserError, match=r"must be dino, cosine, l1 or mse, got 'dinoo' \(did you mean dino\?\)"):
        TrainConfig.load(None, ["loss=dinoo"])
    # a checkpoint written before run.log_every was removed still loads
    assert TrainConfig.from_dict({"run": {"log_every": 10}}) == TrainConfig.load(None, [])
