"""The prepared GPU check: every figure a GPU session should take, run once, written to one markdown file.

Sections (each a subprocess with its own time limit, so one failure or hang costs only its own figures; the
whole check stops at ``--budget`` seconds): gsplat's first use alone (a plain
wheel compiles its kernels then; if it fails, the rest runs with ``renderer=torch``); the CUDA tests; gsplat against
the CPU splatter at 3, 64 and 384 channels; one process group of one GPU through the DDP code path
(``torchrun --nproc_per_node=1``, NCCL for CUDA tensors, gloo for the CPU flags); ``bench step`` at 224,
448 and the paper's 574x868 with ViT-S and ViT-B (random weights) in fp32 and bf16, whose paper-size rows
also give the lift+splat throughput at 576x880; a 200-step ``train`` on rooms at 448.

``--cpu`` is the dry run: the same sections end to end on the CPU at toy sizes, the CUDA-only ones reported
as skipped. ``scripts/gpu_check.sh`` installs the project and gsplat offline and runs this (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from splatdistill.bench.render import make_workload
from splatdistill.errors import UserError
from splatdistill.render import render_features

VIT_S, VIT_B = "random:vit_small_patch14_dinov2", "random:vit_base_patch14_dinov2"
#: (image_size, render_size) of the step rows; the last is the paper's (its render size: lift+splat at 576x880)
STEP_SIZES = [("224", "224"), ("448", "448"), ("574x868", "576x880")]
CPU_STEP_SIZES = [("112", "56")]
SMALL_HEAD = ["prototypes=1024", "head_hidden=512", "head_bottleneck=128"]  # the --cpu dry run's toy head


@dataclass
class Section:
    title: str
    argv: list[str]
    timeout: float
    skip: str = ""  # why it does not run (then argv is not run)
    summary: dict[str, str] = field(default_factory=dict)  # label -> figure, filled from its output
    status: str = "not run"
    seconds: float = 0.0
    output: str = ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU at toy sizes, CUDA parts skipped")
    p.add_argument("--out", default="gpu_check.md", help="markdown file of figures (default %(default)s)")
    p.add_argument("--data", default=None, help="dataset folder (default: .gpu_check/rooms if present, else rooms)")
    p.add_argument(
        "--budget",
        type=float,
        default=450,
        help="seconds for all sections together; a section still running then is stopped (default 450)",
    )
    p.add_argument("--section", default=None, help=argparse.SUPPRESS)  # internal: one in-process section


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "splatdistill.cli", *args]


def _cuda_test_files(tests: Path) -> list[str]:
    """Test files with CUDA tests (collecting only these: other test files may import what this machine lacks)."""
    return sorted(str(f) for f in tests.glob("test_*.py") if "mark.cuda" in f.read_text())


def plan(cpu: bool, data: str, work: Path, renderer: list[str]) -> list[Section]:
    """The sections after the gsplat warm-up, in the order they run (cheap and decisive first); ``renderer``
    is ``["renderer=torch"]`` when gsplat did not come up, so that the rest still runs."""
    no_cuda = "--cpu dry run: needs CUDA" if cpu else ""
    files = _cuda_test_files(Path("tests")) if Path("tests").is_dir() else []
    secs = [
        Section(
            "CUDA tests (pytest -m cuda)",
            [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files],
            180,
            skip=no_cuda or ("" if files else "no CUDA test files here"),
        )
    ]
    secs.append(
        Section(
            "gsplat vs the CPU splatter (3, 64, 384 channels)",
            _cli("bench", "gpu", "--section", "gsplat"),
            120,
            skip=no_cuda or ("gsplat did not come up" if renderer else ""),
        )
    )
    secs.append(_ddp_section(cpu, data, work, renderer))
    train = _train_section(cpu, data, work, renderer)
    # the paper's size first (its rows carry the goals), then the 200-step run, then the smaller sizes
    for k, (image, render) in enumerate(reversed(CPU_STEP_SIZES if cpu else STEP_SIZES)):
        for backbone in (VIT_S,) if cpu else (VIT_S, VIT_B):
            for precision in ("fp32", "bf16"):
                secs.append(_step_section(cpu, data, backbone, image, render, precision, renderer))
        if k == 0:
            secs.append(train)
    return secs


def _ddp_section(cpu: bool, data: str, work: Path, renderer: list[str]) -> Section:
    """A few training steps in a one-GPU process group: the DDP code path of multi-GPU runs."""
    toy = [*SMALL_HEAD, "image_size=112", "render_size=56"] if cpu else ["image_size=224"]
    return Section(
        "one-GPU process group through the DDP code path (torchrun --nproc_per_node=1)",
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=1",
            "-m",
            "splatdistill.cli",
            "train",
            f"data={data}",
            f"out={work / 'ddp'}",
            "steps=4",
            f"backbone={VIT_S}",
            "progress=false",
            "val_samples=0",
            *toy,
            *renderer,
        ],
        150,
    )


def _train_section(cpu: bool, data: str, work: Path, renderer: list[str]) -> Section:
    """A real training run on rooms (200 steps at 448 px on a GPU; a 4-step toy in the --cpu dry run)."""
    steps, size = ("4", "112") if cpu else ("200", "448")
    return Section(
        f"train {steps} steps on rooms at {size}",
        _cli(
            "train",
            f"data={data}",
            f"out={work / 'train'}",
            f"steps={steps}",
            f"image_size={size}",
            f"backbone={VIT_S}",
            "progress=false",
            *(SMALL_HEAD + ["render_size=56", "val_samples=2"] if cpu else []),
            *renderer,
        ),
        300,
    )


def _step_section(
    cpu: bool, data: str, backbone: str, image: str, render: str, precision: str, renderer: list[str]
) -> Section:
    """``bench step`` of one backbone, size and precision."""
    name = "ViT-S" if backbone == VIT_S else "ViT-B"
    return Section(
        f"bench step {name} {image} {precision}",
        _cli(
            "bench",
            "step",
            "--data",
            data,
            "--steps",
            "2" if cpu else "6",
            f"backbone={backbone}",
            f"image_size={image}",
            f"render_size={render}",
            f"precision={precision}",
            *(SMALL_HEAD if cpu else []),
            *renderer,
        ),
        120,
    )


def warm_up(cpu: bool) -> Section:
    """gsplat's first use, alone: a plain gsplat wheel compiles its CUDA kernels here (minutes)."""
    skip = (
        "--cpu dry run: needs CUDA" if cpu else ("" if importlib.util.find_spec("gsplat") else "gsplat not installed")
    )
    return Section(
        "gsplat first use (a plain wheel compiles its kernels)",
        _cli("bench", "gpu", "--section", "warm-up"),
        360,
        skip=skip,
    )


#: figures read off each section's output (label -> regex with one group)
FIGURES = {
    "step s": r"whole step: median ([\d.]+) s",
    "data %": r"data \(wait for the batch\)\s+[\d.]+ s\s+([\d.]+)%",
    "3D %": r"3D part share: ([\d.]+)%",
    "lift+splat views/s": r"lift\+splat ([\d.]+) target views/s",
    "step / backbones": r"whole step / backbone = ([\d.]+)x",
    "peak GiB": r"peak GPU memory: ([\d.]+) GiB",
    "max rel. error": r"max relative error ([\d.e+-]+)",
    "loss": r"loss ([\d.]+ -> [\d.]+)",
    "tests": r"(\d+ passed[^\n]*)",
}


def run_section(sec: Section, deadline: float) -> None:
    if sec.skip:
        sec.status = f"skipped ({sec.skip})"
        return
    left = deadline - time.monotonic()
    if left <= 0:
        sec.status = "skipped (the check's time budget was spent)"
        return
    t = time.monotonic()
    sec.timeout = min(sec.timeout, left)  # the budget bounds the whole check, this section included
    try:
        res = subprocess.run(sec.argv, capture_output=True, text=True, timeout=sec.timeout)
        sec.output = (res.stdout + ("\n" + res.stderr if res.returncode else "")).strip()
        sec.status = "ok" if res.returncode == 0 else f"FAILED (exit {res.returncode})"
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        sec.output, sec.status = out.strip(), f"FAILED (over its {sec.timeout:.0f} s limit)"
    sec.seconds = time.monotonic() - t
    for label, pattern in FIGURES.items():
        found = re.findall(pattern, sec.output)
        if found:
            # every channel count's error; the training loss, not the held-out one printed after it
            sec.summary[label] = ", ".join(found) if label == "max rel. error" else found[0 if label == "loss" else -1]


def _environment(cpu: bool) -> list[str]:
    lines = [f"- python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}"]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(
            f"- GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, "
            f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}, CUDA {torch.version.cuda}"
        )
    else:
        lines.append("- GPU: none visible to torch" + (" (--cpu dry run)" if cpu else ""))
    try:
        import gsplat

        lines.append(f"- gsplat {gsplat.__version__}")
    except ImportError:
        lines.append("- gsplat: not installed")
    return lines


def write_report(path: Path, sections: list[Section], cpu: bool, seconds: float) -> None:
    lines = [
        "# splatdistill GPU check" + (" (--cpu dry run: toy sizes on the CPU; no GPU figure)" if cpu else ""),
        "",
        f"Written by `splatdistill bench gpu{' --cpu' if cpu else ''}` in {seconds:.0f} s "
        f"on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        *_environment(cpu),
        "",
        "| section | status | s | figures |",
        "| --- | --- | ---: | --- |",
    ]
    for s in sections:
        figures = "; ".join(f"{k} {v}" for k, v in s.summary.items()) or "-"
        lines.append(f"| {s.title} | {s.status} | {s.seconds:.0f} | {figures} |")
    lines += ["", "## Output of each section", ""]
    for s in sections:
        if s.output:
            tail = "\n".join(s.output.splitlines()[-25:])
            lines += [f"### {s.title}", "", f"`{' '.join(s.argv[1:])}`", "", "```", tail, "```", ""]
    path.write_text("\n".join(lines) + "\n")


def gsplat_agreement() -> int:
    """gsplat on the GPU against the torch splatter on the CPU, one workload per channel count."""
    for channels in (3, 64, 384):
        gauss, cam = make_workload(128, channels, 1.0, 0.95, "cpu")
        args = (gauss.means, gauss.covariances, gauss.opacities, gauss.features, cam.viewmats, cam.Ks)
        render_features(*args, cam.width, cam.height, backend="torch")  # warm-up (numba compiles once)
        t = time.perf_counter()
        ref, ref_alpha = render_features(*args, cam.width, cam.height, backend="torch")
        cpu_s = time.perf_counter() - t
        gpu_args = tuple(a.cuda() for a in args)
        render_features(*gpu_args, cam.width, cam.height, backend="gsplat")  # warm-up (and any kernel build)
        torch.cuda.synchronize()
        t = time.perf_counter()
        img, alpha = render_features(*gpu_args, cam.width, cam.height, backend="gsplat")
        torch.cuda.synchronize()
        gpu_s = time.perf_counter() - t
        err = float((img.cpu().double() - ref.double()).abs().max() / ref.double().abs().max().clamp_min(1e-12))
        err_a = float((alpha.cpu().double() - ref_alpha.double()).abs().max())
        print(
            f"{channels:4d} channels, {len(gauss):,} Gaussians, 128x128: max relative error {err:.2e} "
            f"(alpha max abs {err_a:.2e}); CPU torch {cpu_s * 1e3:.1f} ms, gsplat {gpu_s * 1e3:.2f} ms"
        )
    return 0


def gsplat_warm_up() -> int:
    t = time.perf_counter()
    gauss, cam = make_workload(32, 3, 1.0, 0.95, "cuda")
    render_features(
        gauss.means,
        gauss.covariances,
        gauss.opacities,
        gauss.features,
        cam.viewmats,
        cam.Ks,
        cam.width,
        cam.height,
        backend="gsplat",
    )
    torch.cuda.synchronize()
    print(f"gsplat's first render: {time.perf_counter() - t:.1f} s")
    return 0


def _run_and_say(sec: Section, start: float, budget: float) -> Section:
    print(f"[{time.monotonic() - start:5.0f} s] {sec.title} ...", flush=True)
    run_section(sec, start + budget)
    print(f"        {sec.status} ({sec.seconds:.0f} s) {sec.summary}", flush=True)
    return sec


def run(args: argparse.Namespace) -> int:
    if args.section == "gsplat":
        return gsplat_agreement()
    if args.section == "warm-up":
        return gsplat_warm_up()
    if args.section is not None:
        raise UserError(f"unknown section {args.section!r}")
    if not args.cpu and not torch.cuda.is_available():
        raise UserError("no CUDA device visible to torch: run on a GPU machine, or pass --cpu for the dry run")
    data = args.data or (".gpu_check/rooms" if Path(".gpu_check/rooms").is_dir() else "rooms")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        first = _run_and_say(warm_up(args.cpu), start, args.budget)
        renderer = [] if first.status == "ok" or args.cpu else ["renderer=torch"]
        sections = [first, *plan(args.cpu, data, Path(work), renderer)]
        for sec in sections[1:]:
            _run_and_say(sec, start, args.budget)
    out = Path(args.out)
    write_report(out, sections, args.cpu, time.monotonic() - start)
    print(f"wrote {out}")
    return 0 if all(s.status == "ok" or s.status.startswith("skipped") for s in sections) else 1
