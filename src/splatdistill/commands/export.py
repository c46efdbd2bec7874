"""``splatdistill export RUN --out DIR [--push-to-hub REPO]``: a trained student as a timm model folder.

DIR holds ``model.safetensors`` (the LoRA-merged timm state dict), ``config.json`` (timm's format, written by
timm's own ``save_config_for_hf``: architecture, ``num_classes`` 0, the constructor arguments, and the
preprocessing the student was trained with in ``pretrained_cfg``) and ``README.md`` (a model card: teacher,
data, settings, the run's eval table when there is one, the licence of the weights). Anyone with timm loads it::

    model = timm.create_model("local-dir:DIR", pretrained=True)

``--push-to-hub REPO`` uploads the folder with huggingface_hub (needs the package, the network and a login).
Not to be confused with ``splatdistill data export``, which converts datasets.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from splatdistill.errors import UserError

WEIGHTS_NAME = "model.safetensors"
FILES = (WEIGHTS_NAME, "config.json", "README.md")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's student as a timm model folder (local-dir:DIR) + model card",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a training run folder (holding student.safetensors), or a student .safetensors file")
    p.add_argument("--out", required=True, help="folder to write model.safetensors, config.json and README.md into")
    p.add_argument(
        "--which",
        choices=("student", "teacher"),
        default="student",
        help="which of the run's networks (default student; the teacher is its EMA)",
    )
    p.add_argument(
        "--license",
        dest="licence",
        default=None,
        help="licence id of the weights for the model card (default: the teacher weights' licence)",
    )
    p.add_argument(
        "--eval",
        dest="eval_report",
        default=None,
        help="an eval report.md to include (default: RUN/eval/report.md, RUN/report.md, or a demo's eval)",
    )
    p.add_argument(
        "--push-to-hub",
        dest="push",
        metavar="REPO",
        default=None,
        help="also upload the folder to this hub repository (needs huggingface_hub and the network)",
    )
    p.add_argument(
        "--img-size",
        default=None,
        metavar="N|HxW",
        help="store the position table at this input size, resampled the student's own way, so timm "
        "reproduces the student exactly there (default: the table as trained, exact at its native size)",
    )
    p.add_argument("--force", action="store_true", help="replace model files already in --out")
    p.set_defaults(func=run)


def locate(run_arg: str, which: str) -> tuple[Path | None, Path]:
    """(run folder or None, the weights file) of ``RUN``."""
    path = Path(run_arg).expanduser()
    if not path.exists():
        raise UserError("no such run folder or weights file", path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise UserError("expected a run folder or a .safetensors student", path)
        run_dir = path.parent if (path.parent / "config.yaml").is_file() else None
        return run_dir, path
    weights = path / f"{which}.safetensors"
    if not weights.is_file():
        hint = (
            " (the run has not finished: its student is written at the end)"
            if (path / "checkpoint.pt").exists()
            else ""
        )
        raise UserError(f"no {weights.name} in the run folder{hint}", path)
    return path, weights


def run_settings(run_dir: Path | None) -> dict:
    """The run's config (flat ``key: value`` of config.yaml), empty when there is none."""
    if run_dir is None or not (run_dir / "config.yaml").is_file():
        return {}
    from splatdistill.distill.config import TrainConfig

    try:
        return TrainConfig.load(run_dir / "config.yaml").to_dict()
    except UserError as exc:
        raise UserError(f"unreadable run config ({exc})", run_dir / "config.yaml") from None


def find_eval_report(run_dir: Path | None, explicit: str | None) -> Path | None:
    if explicit:
        p = Path(explicit).expanduser()
        p = p / "report.md" if p.is_dir() else p
        if not p.is_file():
            raise UserError("no eval report here", p)
        return p
    if run_dir is None:
        return None
    candidates = [run_dir / "eval" / "report.md", run_dir / "report.md"]
    if run_dir.parent.name == "runs":  # a demo's variant: the demo evaluates all its runs in DEMO/eval
        candidates.append(run_dir.parent.parent / "eval" / "report.md")
    return next((c for c in candidates if c.is_file()), None)


def _get(settings: dict, key: str, default: str = "?") -> str:
    """``key`` anywhere in the nested run config (the first found, groups in order)."""
    if key in settings and not isinstance(settings[key], dict):
        return str(settings[key])
    for group in settings.values():
        if isinstance(group, dict):
            found = _get(group, key, "")
            if found:
                return found
    return default


def _size_note(info: dict) -> str:
    if info["pos_interp"] == "timm" or info["rope"]:
        return "These are the splatdistill features at any input size (timm resamples positions as training did)."
    if info["rebased"]:
        size = info["preprocessing"]["input_size"]
        return (
            f"The position table was resampled the `{info['pos_interp']}` way (training's) to {size[0]}x{size[1]} "
            "and stored at that size: there these are the splatdistill features exactly; at other sizes timm "
            "resamples it its own way, which differs slightly."
        )
    return (
        f"At the native size these are the splatdistill features exactly; at other sizes timm resamples the "
        f"position table its own way, which differs slightly from the `{info['pos_interp']}` convention of "
        "training (splatdistill's `load_backbone` keeps that convention)."
    )


def model_card(info: dict, settings: dict, eval_text: str | None) -> str:
    """README.md: YAML front matter for the hub, then what the weights are and how to use them."""
    pre = info["preprocessing"]
    lic_id, lic_text = info["licence"]
    front = [
        "---",
        "library_name: timm",
        f"license: {lic_id}",
        "pipeline_tag: image-feature-extraction",
        "tags:",
        "- timm",
        "- image-feature-extraction",
        "- splatdistill",
        "- splat-and-distill",
        "---",
        "",
    ]
    lines = [
        f"# {info['name']}",
        "",
        f"A {info['arch']} fine-tuned with {info['method']} (splatdistill): the teacher's features of context "
        "views are lifted into 3D Gaussians, splatted into a target view and distilled into this LoRA student "
        "(LoRA merged into the weights here).",
        "",
        "| | |",
        "|---|---|",
        f"| teacher | `{info['teacher']}` |",
        f"| architecture | `{info['arch']}` (timm, {info['depth']} blocks) |",
        f"| training data | `{_get(settings, 'root', 'unknown')}` |",
        f"| steps | {info['steps']} |",
        f"| loss / targets | {info['loss']} / {_get(settings, 'targets')} |",
        f"| LoRA | r={_get(settings, 'r')}, alpha={_get(settings, 'alpha')} |",
        f"| position embeddings | resampled the `{info['pos_interp']}` way in training |",
        "",
        "## Preprocessing",
        "",
        f"RGB in [0, 1], resized ({pre['interpolation']}) to a multiple of the patch size "
        f"{info['patch']}, then `(x - mean) / std` with mean {list(pre['mean'])}, std {list(pre['std'])} "
        f"(native input {pre['input_size'][0]}x{pre['input_size'][1]}; from {pre['source']}). "
        "`timm.data.resolve_data_config({}, model=model)` returns these numbers.",
        "",
        "## Use",
        "",
        "```python",
        "import timm",
        "",
        'model = timm.create_model("local-dir:PATH", pretrained=True).eval()  # or "hf-hub:REPO"',
        "cfg = timm.data.resolve_data_config({}, model=model)",
        "tokens = model.forward_features(x)  # x normalised with cfg['mean'] / cfg['std']",
        "patch_tokens = tokens[:, model.num_prefix_tokens:]  # drop CLS / register tokens",
        "```",
        "",
        _size_note(info),
        "",
    ]
    if settings:
        lines += ["## Settings", "", "```json", json.dumps(settings, indent=1, default=str), "```", ""]
    lines += ["## Evaluation", ""]
    lines += (
        [eval_text.strip(), ""] if eval_text else ["No eval table was found for this run (`splatdistill eval`).", ""]
    )
    lines += ["## Licence", "", f"`{lic_id}`: {lic_text}.", ""]
    return "\n".join(front + lines)


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        hw = [int(v) for v in text.lower().split("x")]
    except ValueError:
        hw = []
    if len(hw) not in (1, 2) or min(hw) < 1:
        raise UserError(f"--img-size takes N or HxW, got {text!r}")
    return hw[0], hw[-1]


def write_folder(
    weights: Path,
    out: Path,
    settings: dict,
    licence: str | None,
    eval_path: Path | None,
    force: bool = False,
    img_size: tuple[int, int] | None = None,
) -> dict:
    """Write the three files into ``out``; returns what the card describes."""
    from safetensors.torch import save_file
    from timm.models._hub import save_config_for_hf

    from splatdistill.atomic import atomic_write, atomic_write_text
    from splatdistill.backbones import load_backbone
    from splatdistill.backbones.checkpoints import read_metadata
    from splatdistill.backbones.families import weights_licence
    from splatdistill.backbones.vit import ViTBackbone, rebased_copy
    from splatdistill.run_folder import check_output_dir

    bb = load_backbone(str(weights))
    if not isinstance(bb, ViTBackbone):
        raise UserError(
            "this student has its own architecture plus a projection (student=SPEC): it is not a "
            "timm model; share student.safetensors, which splatdistill loads",
            weights,
        )
    pre = bb.preprocessing
    model = bb.model
    if img_size is not None:
        try:
            model = rebased_copy(bb, img_size)
        except ValueError as exc:
            raise UserError(f"--img-size: {exc}", weights) from None
        pre = replace(pre, input_size=img_size)
    check_output_dir(out, "export folder")
    existing = [f for f in FILES if (out / f).exists()]
    if existing and not force:
        raise UserError(f"the export folder already holds {', '.join(existing)}; pass --force to replace them", out)
    out.mkdir(parents=True, exist_ok=True)
    meta = read_metadata(weights)
    teacher = _get(settings, "backbone", meta.get("teacher", "unknown"))
    lic = (licence, f"set by the exporter (--license {licence})") if licence else weights_licence(teacher)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    card_cfg = {
        "pretrained_cfg": {"license": lic[0]},
        "splatdistill": {
            "teacher": teacher,
            "pos_interp": bb.pos_interp,
            "steps": meta.get("steps", "?"),
            "preprocessing_source": pre.source,
        },
    }
    atomic_write(
        out / "config.json",
        lambda tmp: save_config_for_hf(model, tmp, model_config=card_cfg, data_config=pre.timm_data_config()),
    )
    info = {
        "name": out.resolve().name,
        "arch": bb.arch,
        "depth": len(bb.model.blocks),
        "teacher": teacher,
        "method": meta.get("method", "splat-and-distill"),
        "steps": meta.get("steps", "?"),
        "loss": meta.get("loss", "?"),
        "pos_interp": bb.pos_interp,
        "patch": bb.patch_size,
        "preprocessing": pre.to_dict(),
        "licence": lic,
        "rope": getattr(bb.model, "pos_embed", None) is None,
        "rebased": img_size is not None,
    }
    eval_text = eval_path.read_text() if eval_path is not None else None
    atomic_write_text(out / "README.md", model_card(info, settings, eval_text))
    return info


def push_to_hub(folder: Path, repo: str) -> str:
    """Upload ``folder`` to ``repo``; a one-line UserError when that cannot happen here."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise UserError("--push-to-hub needs huggingface_hub (pip install huggingface_hub)") from None
    from splatdistill.backbones import hub_reachable

    if not hub_reachable():
        raise UserError(
            f"--push-to-hub {repo}: the hub is unreachable (offline, or HF_HUB_OFFLINE set); the folder "
            f"{folder} is written: upload it later"
        )
    try:
        api = HfApi()
        repo_id = api.create_repo(repo, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="splatdistill export")
    except Exception as exc:  # auth, permissions, network: all the user's to fix
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise UserError(
            f"--push-to-hub {repo} failed ({type(exc).__name__}: {first}); the folder {folder} is written"
        ) from None
    return repo_id


def run(args: argparse.Namespace) -> int:
    run_dir, weights = locate(args.run, args.which)
    settings = run_settings(run_dir)
    eval_path = find_eval_report(run_dir, args.eval_report)
    out = Path(args.out).expanduser()
    info = write_folder(weights, out, settings, args.licence, eval_path, args.force, parse_size(args.img_size))
    print(
        f"wrote {out}/{{{', '.join(FILES)}}}: {info['arch']}, mean {list(info['preprocessing']['mean'])}, "
        f'std {list(info["preprocessing"]["std"])}; load with timm.create_model("local-dir:{out}", pretrained=True)'
    )
    if eval_path is None:
        print("note: no eval table found for this run; the model card says so (pass --eval REPORT.md to add one)")
    if args.push:
        print(f"pushed to {push_to_hub(out, args.push)}")
    return 0
