"""``--device`` for ``lifter train``, ``lifter eval`` and ``lifter check``.

Without a GPU the plumbing is checked on PyTorch's ``meta`` device: the project's resolver accepts it like
any device name, and a tensor or parameter that a command forgot to move stays on the CPU, which a
recording forward sees. The ``cuda``-marked test (run by the prepared GPU check) does the real thing.
"""

from __future__ import annotations

import json

import pytest
import torch

from splatdistill.cli import main
from splatdistill.lifters.predictor import GaussianPredictor

pytestmark = pytest.mark.usefixtures("one_thread")  # small ops: no thread contention

META = torch.device("meta")


class _Reached(Exception):
    """Raised by a recorder once it has seen what it came for (meta tensors hold no values to go on with)."""


def _record_forward(monkeypatch, stop: bool) -> list[dict]:
    """Record the devices of every tensor handed to the predictor and of its parameters and buffers."""
    calls: list[dict] = []
    real = GaussianPredictor.forward

    def forward(self, views):
        calls.append(
            {
                "inputs": {
                    t.device
                    for t in (views.images, views.cameras.Ks, views.cameras.viewmats, views.guide)
                    if t is not None
                },
                "params": {t.device for t in (*self.parameters(), *self.buffers())},
            }
        )
        if stop:
            raise _Reached
        return real(self, views)

    monkeypatch.setattr(GaussianPredictor, "forward", forward)
    return calls


def _tiny_train(rooms, out, device: str, steps: int = 2):
    from splatdistill.config import build_config
    from splatdistill.lifters.train_predictor import LifterTrainConfig

    return build_config(
        LifterTrainConfig,
        dict(
            data=str(rooms),
            out=str(out),
            steps=steps,
            batch_size=2,
            image_size=32,
            num_depths=8,
            channels=16,
            eval_pairs=1,
            checkpoint_every=100,
            progress=False,
            seed=3,
            device=device,
        ),
        validate=False,
    )


def test_train_and_eval_put_the_predictor_and_its_inputs_on_the_device(rooms, tmp_path, monkeypatch):
    from splatdistill.lifters.evaluate import evaluate_saved_predictor
    from splatdistill.lifters.train_predictor import train_predictor

    calls = _record_forward(monkeypatch, stop=True)
    with pytest.raises(_Reached):
        train_predictor(_tiny_train(rooms, tmp_path / "t", "meta"), log=lambda *_: None)
    assert calls == [{"inputs": {META}, "params": {META}}]
    with pytest.raises(_Reached):
        evaluate_saved_predictor("shipped", str(rooms), pairs_per_scene=1, progress=False, device="meta")
    assert calls[1:] == [{"inputs": {META}, "params": {META}}]
    # the recorder can fail: on the CPU it sees the CPU
    with pytest.raises(_Reached):
        evaluate_saved_predictor("shipped", str(rooms), pairs_per_scene=1, progress=False, device="cpu")
    assert calls[2:] == [{"inputs": {torch.device("cpu")}, "params": {torch.device("cpu")}}]


def test_check_lifts_on_the_device(rooms, scenes, tmp_path, monkeypatch):
    from splatdistill.lifters import build_lifter, check
    from splatdistill.splat import SplatSettings

    seen: dict[str, torch.device] = {}

    def lift(pair, lifter, **_):
        seen.update(
            images=pair.images.device,
            Ks=pair.cameras.Ks.device,
            viewmats=pair.cameras.viewmats.device,
            depths=pair.depths.device,
        )
        raise _Reached

    with monkeypatch.context() as m:
        m.setattr(check, "lift_scene", lift)
        with pytest.raises(_Reached):
            check.check_lifter(build_lifter("auto", SplatSettings()), scenes[0], "auto", size=16, device="meta")
    assert seen and set(seen.values()) == {META}, seen
    # through the command on the CPU: the same report as the default (auto = the CPU here)
    calls = _record_forward(monkeypatch, stop=False)
    reports = []
    for extra in ([], ["--device", "cpu"]):
        out = tmp_path / f"check{len(extra)}.json"
        assert main(["lifter", "check", "auto", "--data", str(rooms), "--size", "16", "--json", str(out), *extra]) == 0
        reports.append(json.loads(out.read_text()))
    if not torch.cuda.is_available():
        assert reports[0] == reports[1]
    assert len(calls) == 2 and all(
        c == {"inputs": {torch.device("cpu")}, "params": {torch.device("cpu")}} for c in calls
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_one_line_before_any_work(rooms, tmp_path, capsys):
    out = tmp_path / "never"
    for argv in (
        ["lifter", "train", "--data", str(rooms), "--out", str(out), "--steps", "1", "-q"],
        ["lifter", "eval", "shipped", "--data", str(rooms), "-q"],
        ["lifter", "check", "auto", "--data", str(rooms)],
    ):
        assert main([*argv, "--device", "cuda"]) == 2
        cap = capsys.readouterr()
        assert cap.err.count("\n") == 1 and "device cuda requested but CUDA is not available" in cap.err, cap.err
        assert "Traceback" not in cap.err and cap.out == ""
    assert main(["lifter", "train", "--data", str(rooms), "--out", str(out), "--device", "tpu:7", "-q"]) == 2
    assert "unknown device 'tpu:7'" in capsys.readouterr().err
    assert not out.exists()  # refused before the output folder was made


def test_info_reports_the_lifter_commands_device(capsys):
    from splatdistill.devices import describe, resolve_device

    assert main(["info"]) == 0
    lines = [ln.strip() for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("lifter train")]
    assert lines == [f"{'lifter train, eval, check':32s} {describe(resolve_device('auto'), 'fp32')}"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lifter_commands_on_cuda_match_the_cpu(rooms, tmp_path, monkeypatch):
    """Train, evaluate and check on the GPU (TF32 off) against the same runs on the CPU."""
    from splatdistill.lifters.evaluate import evaluate_saved_predictor
    from splatdistill.lifters.train_predictor import train_predictor

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    calls = _record_forward(monkeypatch, stop=False)
    logs, first = {}, {}
    for dev in ("cpu", "cuda"):
        first[dev] = len(calls)
        train_predictor(_tiny_train(rooms, tmp_path / dev, dev, steps=4), log=lambda *_: None)
        logs[dev] = [json.loads(ln)["total"] for ln in (tmp_path / dev / "log.jsonl").read_text().splitlines()]
    cuda = torch.device("cuda", 0)
    on_gpu = calls[first["cuda"] :]  # its 4 steps and its held-out evaluation
    assert len(on_gpu) > 4 and all(c == {"inputs": {cuda}, "params": {cuda}} for c in on_gpu)
    assert len(logs["cuda"]) == 4
    assert logs["cuda"][0] == pytest.approx(logs["cpu"][0], rel=1e-4)
    assert logs["cuda"] == pytest.approx(logs["cpu"], rel=2e-2)
    ev = {
        dev: evaluate_saved_predictor(tmp_path / "cpu", str(rooms), pairs_per_scene=2, progress=False, device=dev)
        for dev in ("cpu", "cuda")
    }
    assert ev["cuda"]["device"] == "cuda:0" and ev["cpu"]["device"] == "cpu"
    for key in ("abs_rel", "rmse", "delta1"):
        assert ev["cuda"]["predictor"][key] == pytest.approx(ev["cpu"]["predictor"][key], rel=1e-3, abs=1e-4)
    reports = {}
    for dev in ("cpu", "cuda"):
        out = tmp_path / f"check_{dev}.json"
        assert (
            main(["lifter", "check", "auto", "--data", str(rooms), "--size", "32", "--device", dev, "--json", str(out)])
            == 0
        )
        reports[dev] = json.loads(out.read_text())
    for v in range(2):
        assert reports["cuda"]["depth"][v]["median"] == pytest.approx(reports["cpu"]["depth"][v]["median"], rel=1e-3)
    assert reports["cuda"]["opacity"]["mean"] == pytest.approx(reports["cpu"]["opacity"]["mean"], rel=1e-3)
    assert abs(reports["cuda"]["coverage"] - reports["cpu"]["coverage"]) <= 0.02  # gsplat vs the torch splatter
