"""The training configuration: nested typed groups, loadable from YAML, overridable with ``key=value``.

Groups: ``data`` (what is sampled, at which sizes), ``model`` (backbone and LoRA), ``method`` (lifting,
splatting, loss, EMA teacher, the FiT3D baseline), ``optim`` and ``run``. The pipeline's own settings
types are the groups themselves (:class:`~splatdistill.splat.lifter.SplatSettings`,
:class:`~splatdistill.distill.student.LoraSettings`, :class:`~splatdistill.baselines.fit3d.Fit3DSettings`),
so nothing is copied field by field. Keys on the command line are dotted paths (``optim.lr=2e-5``) or
unique tails of them (``lr=2e-5``, ``lora.r=4``; see :mod:`splatdistill.config`), as ``key=value`` or ``--key value``.

Defaults follow the paper (docs/design.md) except where a CPU run needs smaller numbers; each such
difference is marked "CPU default" and the paper's value is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from splatdistill.atomic import atomic_write_text
from splatdistill.baselines.fit3d import Fit3DSettings
from splatdistill.config import build_config, config_to_dict, dump_yaml, load_config
from splatdistill.data.views import parse_size
from splatdistill.distill.student import LoraSettings
from splatdistill.errors import UserError
from splatdistill.splat.lifter import SplatSettings
from splatdistill.threads import check_threads

#: the largest learning rate AdamW's float32 step takes (lr / (1 - beta1) must stay under 3.4e38)
MAX_LR = 1e30

LossName = Literal["dino", "cosine", "l1", "mse"]
LOSSES = ("dino", "cosine", "l1", "mse")
MaskMode = Literal["auto", "instance", "slic", "felzenszwalb"]


@dataclass
class DataConfig:
    root: str = "rooms"  # a dataset folder (see docs/data-format.md) or "rooms" (embedded, built on demand); key: data
    split: Literal["train", "val", "test"] = "train"
    # sizes: an int is the short side (aspect kept), HxW is exact (views of another aspect are
    # centre-cropped to it, never squashed); the paper's ScanNet++ setting is 574x868 / 576x880
    image_size: int | str = 224  # student/teacher input (the backbone snaps it to its patch size)
    render_size: int | str = 112  # resolution of the upsample / lift / splat / blend stage (CPU default)
    num_targets: int = 1  # target views per sample
    # rotation: contexts 25-65 degrees of camera rotation apart, target strictly between (the default, made for
    # the rooms' paths); frames: the reference code's ScanNet++ rule, contexts exactly context_gap (default 8)
    # apart in the frame numbers of the views' names, target between them inclusive
    sampler: Literal["rotation", "frames"] = "rotation"
    context_gap: int = 0  # frames between the two context views; 0 = the sampler's default
    mask: MaskMode = "auto"  # segments for upsampling/blending
    # held-out agreement (loss and teacher-student cosine on scenes not trained on)
    val_split: Literal["train", "val", "test"] = "val"
    val_samples: int = 16  # 0 = off
    val_every: int = 0  # steps between held-out measurements; 0 = only at the start and the end


@dataclass
class ModelConfig:
    backbone: str = "dinov2_vits14"  # the teacher (and, by default, the student's starting point)
    lora: LoraSettings = field(default_factory=LoraSettings)  # keys lora.r, lora.alpha, lora.dropout
    # "" (default): the student is a LoRA copy of the teacher and the teacher its EMA. A backbone spec
    # (mobilenetv2, timm:NAME, random:ARCH, a file): that network trains fully, through a learned projection
    # to the teacher's features and grid; the teacher then stays fixed (an EMA across architectures is not defined)
    student: str = ""


@dataclass
class MethodConfig:
    method: Literal["snd", "fit3d"] = "snd"  # snd (Splat-and-Distill) | fit3d (FiT3D-style fields, loss=l1)
    lifter: str = "auto"  # auto (shipped feed-forward predictor) | depth (dataset depth: sensor/oracle) | predictor:PATH|NAME | ply:DIR | mvsplat:CKPT | depth-anything-v2:WEIGHTS | python:MODULE:FACTORY
    splat: SplatSettings = field(default_factory=SplatSettings)  # renderer, gaussian_*, blend_alpha, min_coverage
    # iterative refinement: every this many steps, one photometric step on the learned lifter with the
    # batch's context views (0 = off; needs lifter=auto or predictor:PATH); saved as lifter/ in the run
    lifter_refine_every: int = 0
    lifter_refine_lr: float = 1e-4
    loss: LossName = "dino"  # dino (prototype head, as the paper) | cosine | l1 | mse
    # splat: the teacher's context features lifted and splatted into the target view (the method);
    # 2d: the teacher's own features of the target view (plain feature distillation, the 2D baseline);
    # splat+2d: splatted where the context views cover the token, the 2D target elsewhere (every token
    # supervised: a student of another architecture has no copy of the teacher to keep there)
    targets: Literal["splat", "2d", "splat+2d"] = "splat"
    prototypes: int = 4096  # DINO head prototypes (CPU default; the paper uses 65536)
    head_hidden: int = 2048
    head_bottleneck: int = 256
    teacher_temp: float = 1.0
    student_temp: float = 1.0
    center_momentum: float = 0.0  # DINO centering of the teacher logits (running mean; 0 = off, as the reference)
    prototype_gain: Literal["fixed", "trainable"] = "fixed"  # weight-norm gain of the prototypes (reference: trainable)
    consistency_weight: float = 0.0  # cross-view term between target views (needs num_targets >= 2)
    # with loss=dino: adds this weight x (1 - cosine) between the student's tokens and the targets themselves,
    # so the features stay aligned with the splatted teacher as well as their prototype distributions
    cosine_weight: float = 0.0
    # The teacher is an EMA of the student, updated every ema_every steps. ema_horizon sets how much of
    # the run the teacher averages over (its time constant, as a share of the steps), so that a run of
    # any length moves its teacher as the paper's does (0.999 every 10 of 300k steps = 1/30 of the run);
    # ema_momentum, when set, is the raw momentum per update instead (1 = a frozen teacher).
    ema_horizon: float = 1 / 30
    ema_momentum: float | None = None
    ema_every: int = 10

    @property
    def target_source(self) -> str:
        """Which :class:`~splatdistill.distill.targets.TargetSource` makes the targets: ``targets`` for
        method=snd, ``fit3d`` for method=fit3d (the keys of ``targets.TARGET_SOURCES``)."""
        return "fit3d" if self.method == "fit3d" else self.targets

    def ema_momentum_for(self, steps: int) -> float:
        """The momentum per update for a run of ``steps`` steps (``ema_momentum`` if set)."""
        if self.ema_momentum is not None:
            return float(self.ema_momentum)
        return ema_momentum_from_horizon(self.ema_horizon, steps, self.ema_every)

    fit3d: Fit3DSettings = field(default_factory=Fit3DSettings)  # keys fit3d.iterations, fit3d.views, ...


def ema_momentum_from_horizon(horizon: float, steps: int, every: int) -> float:
    """Momentum whose EMA time constant, ``every / (1 - m)`` steps, is ``horizon * steps`` (0 if shorter than
    one update: the teacher copies the student)."""
    return max(0.0, 1.0 - every / (horizon * steps))


@dataclass
class OptimConfig:
    steps: int = 1000
    batch_size: int = 1
    lr: float = 2e-5
    head_lr: float | None = None  # default: same as lr
    weight_decay: float = 0.0
    warmup_pct: float = 0.01
    grad_clip: float = 0.0  # 0 = off
    # stop early (cleanly, with a checkpoint; --resume continues) after this wall time; 0 = off.
    max_minutes: float = 0.0
    # steps: the warm-up + cosine schedule runs over `steps` (reproducible; a run cut short by max_minutes
    # ends before its decay). budget: its progress is the larger of the share of `steps` done and the share
    # of max_minutes used (counted across resumes), so the schedule completes inside the time budget
    # however slow the machine turns out to be (the demo's choice; the step count then depends on speed).
    schedule: Literal["steps", "budget"] = "steps"


@dataclass
class RunConfig:
    # cpu: the defaults below (a CPU budget); paper: every value of the reference code at once (PAPER_PRESET,
    # a multi-GPU recipe). Options given in a file or as key=value still win over the preset.
    preset: Literal["cpu", "paper"] = "cpu"
    out: str = "runs/snd"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # auto: bf16 autocast on a CUDA device that has it, else fp32; fp16 (CUDA, with a gradient scaler) | bf16 | fp32.
    # Autocast covers backbones and heads; loss, EMA and the splatter's compositing stay fp32 (docs/gpu.md)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    checkpoint_every: int = 100
    # data-loader worker processes per rank building the next batches while the step runs; -1 = from the
    # cores (splatdistill.devices.default_workers), 0 = in the training process. The batches are the same.
    num_workers: int = -1
    # torch CPU threads; 0 = the cores this process may use (affinity, cgroup quota; SPLATDISTILL_THREADS
    # overrides), split between the ranks of a CPU torchrun (splatdistill.threads)
    threads: int = 0
    progress: bool = True
    # stop (exit 3) when fewer than stall_share of the target tokens are supervised for stall_steps
    # consecutive steps: the targets cover nothing (no depth, wrong poses, views that do not overlap)
    stall_share: float = 0.05
    stall_steps: int = 50  # 0 = off
    # estimate a step's memory before training and refuse when it cannot fit (distill.memory_check)
    memory_check: bool = True
    extra: dict = field(default_factory=dict)  # free-form notes stored with the run


#: ``preset=paper``: the reference code's values (docs/design.md, "The reference code's exact choices").
#: The lifter is not part of it: the reference lifts with MVSplat, whose checkpoint is not shipped, so
#: ``preset=paper`` refuses to run without an explicit ``lifter=`` (PAPER_LIFTER_REQUIRED).
PAPER_LIFTER_REQUIRED = (
    "the paper lifts with MVSplat: pass lifter=mvsplat:CKPT:1:100 (its re10k checkpoint) or "
    "lifter=depth-anything-v2:WEIGHTS (docs/lifters.md); lifter=auto, the default, is the small "
    "rooms predictor"
)
PAPER_PRESET: dict[str, Any] = {
    "image_size": "574x868",  # 41 x 62 patches of 14 (the reference's 576x880 frames, snapped)
    "render_size": "576x880",
    "sampler": "frames",
    "context_gap": 8,  # ScanNet++ DSLR: contexts 8 frames apart, target between
    "num_targets": 1,
    "loss": "dino",
    "prototypes": 65536,
    "head_hidden": 2048,
    "head_bottleneck": 256,
    "teacher_temp": 1.0,
    "student_temp": 1.0,
    "center_momentum": 0.0,
    "prototype_gain": "trainable",
    "ema_momentum": 0.999,
    "ema_every": 10,
    "blend_alpha": 0.5,
    "downsample": "bilinear",
    "lora.r": 8,
    "lora.alpha": 8.0,
    "lora.dropout": 0.1,
    "target_modules": r"(.*\.)?(qkv|proj)",  # peft's ["qkv", "proj"] suffix match: also patch_embed.proj
    "lr": 2e-5,
    "warmup_pct": 0.01,
    "grad_clip": 0.0,
    "weight_decay": 0.0,
    "steps": 300_000,
    "batch_size": 14,
}


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    #: keys that are not a leaf's bare name
    ALIASES: ClassVar[dict[str, str]] = {"data": "data.root"}
    #: read by nothing, removed; checkpoints written before still resume
    RETIRED: ClassVar[tuple[str, ...]] = ("run.log_every",)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}, "paper": PAPER_PRESET}
    PRESET_REQUIRES: ClassVar[dict[str, dict[str, str]]] = {"paper": {"lifter": PAPER_LIFTER_REQUIRED}}

    def validate(self) -> TrainConfig:
        """This config, checked: every bad value or combination is a one-line :class:`UserError`."""
        _check_method(self.method)
        for name in ("image_size", "render_size"):
            parse_size(getattr(self.data, name), name)
        _check_counts(self)
        _check_rates(self.optim)
        _check_ranges(self)
        _check_run(self.run)
        _check_combinations(self)
        return self

    # --- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), dump_yaml(self))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """From nested or flat (dotted, bare-name) values."""
        return build_config(cls, values, source=source)

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
        """Defaults, then the YAML file (if any), then ``key=value`` overrides."""
        return load_config(cls, path, overrides)


def _check_method(m: MethodConfig) -> None:
    """The loss, its temperatures and the EMA settings."""
    s = m.splat
    if m.loss not in LOSSES:
        raise UserError(f"loss must be one of {', '.join(LOSSES)}, got {m.loss!r}")
    if not 0.0 <= s.blend_alpha <= 1.0:
        raise UserError(f"blend_alpha must be in [0, 1], got {s.blend_alpha}")
    if m.ema_momentum is not None and not 0.0 <= m.ema_momentum <= 1.0:
        raise UserError(f"ema_momentum must be in [0, 1], got {m.ema_momentum}")
    if not m.ema_horizon > 0:
        raise UserError(f"ema_horizon must be > 0 (a share of the run), got {m.ema_horizon}")
    if not 0.0 <= m.center_momentum < 1.0:
        raise UserError(f"center_momentum must be in [0, 1), got {m.center_momentum}")
    if m.teacher_temp <= 0 or m.student_temp <= 0:
        raise UserError("teacher_temp and student_temp must be > 0")


def _check_counts(cfg: TrainConfig) -> None:
    """The counts that must be at least 1."""
    o, d, m, r, lora = cfg.optim, cfg.data, cfg.method, cfg.run, cfg.model.lora
    for group, name in (
        (o, "steps"),
        (o, "batch_size"),
        (d, "num_targets"),
        (m, "ema_every"),
        (m, "prototypes"),
        (m, "head_hidden"),
        (m, "head_bottleneck"),
        (r, "checkpoint_every"),
        (lora, "r"),
    ):
        if getattr(group, name) < 1:
            label = "lora.r" if group is lora else name
            raise UserError(f"{label} must be >= 1, got {getattr(group, name)}")


def _check_rates(o: OptimConfig) -> None:
    """Learning rates: finite, positive (the head's may be 0) and below AdamW's float32 overflow."""
    if not (math.isfinite(o.lr) and o.lr > 0):
        raise UserError(f"lr must be a finite number > 0, got {o.lr}")
    if o.head_lr is not None and not (math.isfinite(o.head_lr) and o.head_lr >= 0):
        raise UserError(f"head_lr must be a finite number >= 0 (0 fixes the head), got {o.head_lr}")
    for name, lr in (("lr", o.lr), ("head_lr", o.head_lr or 0.0)):
        if lr > MAX_LR:  # AdamW's first step is lr / (1 - 0.9): a float32 overflow, not a divergence
            raise UserError(f"{name}={lr:g} is over {MAX_LR:g}, where AdamW's step overflows float32")


def _check_ranges(cfg: TrainConfig) -> None:
    """Shares and probabilities within their intervals; weights, clips and budgets finite and >= 0."""
    o, m, s, lora = cfg.optim, cfg.method, cfg.method.splat, cfg.model.lora
    ranges = [
        ("lora.dropout", lora.dropout, 0.0, 1.0, False),
        ("warmup_pct", o.warmup_pct, 0.0, 1.0, True),
        ("min_coverage", s.min_coverage, 0.0, 1.0, True),
        ("gaussian_opacity", s.gaussian_opacity, 0.0, 1.0, True),
    ]
    for name, value, lo, hi, closed in ranges:
        if not (lo <= value <= hi if closed else lo <= value < hi):
            raise UserError(f"{name} must be in [{lo:g}, {hi:g}{']' if closed else ')'}, got {value}")
    for name, value in (
        ("weight_decay", o.weight_decay),
        ("grad_clip", o.grad_clip),
        ("max_minutes", o.max_minutes),
        ("gaussian_scale", s.gaussian_scale),
        ("consistency_weight", m.consistency_weight),
        ("lora.alpha", lora.alpha),
    ):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be a finite number >= 0, got {value}")


def _check_run(r: RunConfig) -> None:
    """Workers, precision and threads."""
    if r.num_workers < -1:
        raise UserError(f"num_workers must be >= 0, or -1 for the default from the cores, got {r.num_workers}")
    if r.precision not in ("auto", "bf16", "fp16", "fp32"):
        raise UserError(f"precision must be auto, bf16, fp16 or fp32, got {r.precision!r}")
    if r.threads < 0:
        raise UserError(f"threads must be >= 0 (0: the cores this process may use), got {r.threads}")
    check_threads(r.threads, "threads")


def _check_combinations(cfg: TrainConfig) -> None:
    """Settings that only make sense together (schedule and budget, method and targets, loss and method)."""
    d, m, o, s = cfg.data, cfg.method, cfg.optim, cfg.method.splat
    if o.schedule == "budget" and o.max_minutes <= 0:
        raise UserError("schedule=budget runs the schedule over the time budget: set max_minutes > 0")
    if m.consistency_weight > 0 and d.num_targets < 2:
        raise UserError("consistency_weight > 0 needs num_targets >= 2")
    if m.targets not in ("splat", "2d", "splat+2d"):
        raise UserError(f"targets must be splat, 2d or splat+2d, got {m.targets!r}")
    if m.targets != "splat" and m.method != "snd":
        raise UserError(
            f"targets={m.targets} changes the splatted targets of method=snd; it does not apply to method=fit3d"
        )
    if s.renderer not in ("auto", "torch", "gsplat"):
        raise UserError(f"renderer must be auto, torch or gsplat, got {s.renderer!r}")
    if m.lifter_refine_every > 0 and m.target_source not in ("splat", "splat+2d"):
        raise UserError(
            f"lifter_refine_every > 0 refines the lifter of splatted targets; "
            f"{'method=fit3d' if m.method == 'fit3d' else 'targets=2d'} lifts nothing"
        )
    if m.cosine_weight < 0:
        raise UserError(f"cosine_weight must be >= 0, got {m.cosine_weight}")
    if m.cosine_weight > 0 and m.loss != "dino":
        raise UserError(f"cosine_weight adds a cosine term to loss=dino; loss={m.loss} has none to add it to")
    if m.method == "fit3d" and m.loss == "dino":
        raise UserError("method=fit3d distils with L1 to the field's renders (as FiT3D): pass loss=l1")
