"""Kill-fuzzing of the commands that write long-lived state: SIGKILL at random moments, rerun (``--resume``
where the command has it) until the command finishes, then compare with an uninterrupted run.

Used by tests/test_kill_fuzz.py (a few kills per command); ``python tests/_kill_fuzz.py DATA KILLS`` prints
the figures with more kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TINY_TRAIN = [
    "backbone=random:vit_tiny_patch16_224",
    "image_size=64",
    "render_size=32",
    "prototypes=64",
    "head_hidden=64",
    "head_bottleneck=32",
    "ema_every=2",
    "lr=1e-3",
    "progress=false",
    "deterministic=true",
    "seed=7",
    "val_samples=0",
]


@dataclass
class FuzzResult:
    command: str
    kills: int = 0
    finished_before_kill: int = 0
    reruns: int = 0
    temp_files_after_kills: int = 0  # found after a kill, removed by the next run
    temp_files_left: int = 0
    max_abs_diff: float = float("nan")
    kill_times: list[float] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.command}: {self.kills} kills ({self.finished_before_kill} runs finished first), "
            f"{self.reruns} reruns, temp files seen after kills {self.temp_files_after_kills}, left at the end "
            f"{self.temp_files_left}, max |difference| of the final state {self.max_abs_diff:g}"
        )


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""), SPLATDISTILL_THREADS="1")


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "splatdistill", *args]


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp") if p.is_file()] if folder.exists() else []


def fuzz(
    name: str,
    first: Callable[[Path], list[str]],
    again: Callable[[Path], list[str]],
    state: Callable[[Path], dict],
    distance: Callable[[dict, dict], float],
    work: Path,
    kills: int,
    rng: random.Random,
) -> FuzzResult:
    """``first(out)``/``again(out)``: the command line of a fresh run / a rerun; ``state(out)``: the final state
    to compare; ``distance``: max |difference| between two states."""
    res = FuzzResult(name)
    ref = work / f"{name}-reference"
    t0 = time.perf_counter()
    done = subprocess.run(_cli(first(ref)), capture_output=True, text=True, env=_env(), timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: the uninterrupted run failed: {done.stderr[-2000:]}")
    duration = time.perf_counter() - t0
    out = work / f"{name}-killed"
    started = False
    while res.kills < kills:
        cmd = again(out) if started else first(out)
        proc = subprocess.Popen(_cli(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
        started = True
        delay = rng.uniform(0.3, 1.0) * duration
        try:
            proc.wait(timeout=delay)
            res.finished_before_kill += 1
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: a rerun failed ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            # this machine ran faster than during the reference run: aim earlier, so the number of kills never
            # depends on the machine's load (a kill at any moment is a valid test, even before the first step)
            duration *= 0.5
            started, out = False, work / f"{name}-killed-{res.kills}-{res.finished_before_kill}"  # start over
            continue
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            res.kills += 1
            res.kill_times.append(round(delay, 2))
            res.temp_files_after_kills += len(_temp_files(out))
    while True:  # rerun until it finishes
        res.reruns += 1
        proc = subprocess.run(
            _cli(again(out) if started else first(out)), capture_output=True, text=True, env=_env(), timeout=900
        )
        if proc.returncode == 0:
            break
        raise RuntimeError(f"{name}: the final rerun failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res.temp_files_left = len(_temp_files(out))
    res.max_abs_diff = distance(state(ref), state(out))
    return res


# ---- the three commands ----------------------------------------------------------------------------


def _tensors(*paths: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for p in paths:
        out.update({f"{p.name}:{k}": v for k, v in load_file(str(p)).items()})
    return out


def _tensor_distance(a: dict, b: dict) -> float:
    if a.keys() != b.keys():
        return float("inf")
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def fuzz_train(data: Path, work: Path, kills: int, rng: random.Random, steps: int = 10) -> FuzzResult:
    base = [f"data={data}", f"steps={steps}", "checkpoint_every=1", *TINY_TRAIN]
    return fuzz(
        "train",
        lambda out: ["train", *base, f"out={out}"],
        lambda out: (
            ["train", "--resume", "--out", str(out)]
            if (out / "checkpoint.pt").exists()
            else ["train", *base, f"out={out}"]
        ),
        lambda out: _tensors(out / "student.safetensors", out / "teacher.safetensors"),
        _tensor_distance,
        work,
        kills,
        rng,
    )


def fuzz_lifter(data: Path, work: Path, kills: int, rng: random.Random, steps: int = 8) -> FuzzResult:
    base = [
        "lifter",
        "train",
        "--data",
        str(data),
        "--steps",
        str(steps),
        "--checkpoint-every",
        "1",
        "--image-size",
        "32",
        "--eval-pairs",
        "1",
        "--backbone",
        "random:vit_tiny_patch16_224",
        "--seed",
        "3",
        "-q",
    ]
    return fuzz(
        "lifter-train",
        lambda out: [*base, "--out", str(out)],
        lambda out: [*base, "--out", str(out)] + (["--resume"] if (out / "train_state.pt").exists() else []),
        lambda out: _tensors(out / "predictor.safetensors"),
        _tensor_distance,
        work,
        kills,
        rng,
    )


def _results(out: Path) -> dict:
    doc = json.loads((out / "results.json").read_text())
    return {b["label"]: b["results"] for b in doc["backbones"]}


def _json_distance(a, b) -> float:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return float("inf")
        return max([_json_distance(a[k], b[k]) for k in a] or [0.0])
    if isinstance(a, list) and isinstance(b, list):
        return float("inf") if len(a) != len(b) else max([_json_distance(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b)) if a == a or b == b else 0.0  # NaN == NaN here
    return 0.0 if a == b else float("inf")


def fuzz_eval(data: Path, work: Path, kills: int, rng: random.Random) -> FuzzResult:
    """Kills during the feature extraction and its cache writes; a rerun reuses what the cache holds."""

    def cmd(out: Path) -> list[str]:
        return [
            "eval",
            "-b",
            "a=random:vit_small_patch14_dinov2",
            "-b",
            "b=random:vit_tiny_patch16_224",
            "--data",
            str(data),
            "--out",
            str(out),
            "--resolution",
            "56",
            "--probe-steps",
            "5",
            "--pairs",
            "3",
            "--keep",
            "50",
            "--points",
            "50",
            "--no-middlebury",
            "--no-figures",
            "-q",
        ]

    return fuzz("eval", cmd, cmd, _results, _json_distance, work, kills, rng)


def main(argv: list[str]) -> int:
    data, kills = Path(argv[0]), int(argv[1])
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="kill_fuzz_"))
    rng = random.Random(int(argv[2]) if len(argv) > 2 else 0)
    for run in (fuzz_train, fuzz_lifter, fuzz_eval):
        print(run(data, work, kills, rng).line(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
