"""The prepared GPU check's plan and its report, without running the sections (the --cpu dry run does)."""

from __future__ import annotations

import sys
from pathlib import Path

from splatdistill.bench.gpu import Section, plan, run_section, write_report


def test_the_gpu_plan_covers_every_figure_the_issue_asks_for(tmp_path):
    secs = plan(cpu=False, data="rooms", work=tmp_path, renderer=[])
    steps = [" ".join(s.argv) for s in secs if s.title.startswith("bench step")]
    assert len(steps) == 12  # ViT-S and ViT-B x 224, 448, 574x868 x fp32, bf16
    for size in ("image_size=224", "image_size=448", "image_size=574x868 render_size=576x880"):
        assert sum(size in a for a in steps) == 4
    assert sum("precision=bf16" in a for a in steps) == 6
    assert sum("vit_base_patch14_dinov2" in a for a in steps) == 6
    argv = {s.title: " ".join(s.argv) for s in secs}
    assert any("--nproc_per_node=1" in a and " train " in a for a in argv.values())
    assert any("steps=200" in a and "image_size=448" in a for a in argv.values())
    assert not any(s.skip for s in secs if "CUDA" in s.title)
    dry = plan(cpu=True, data="rooms", work=tmp_path, renderer=[])
    assert all(s.skip for s in dry if s.title.startswith(("CUDA", "gsplat")))
    assert not any(s.skip for s in dry if not s.title.startswith(("CUDA", "gsplat")))
    torch_only = plan(cpu=False, data="rooms", work=tmp_path, renderer=["renderer=torch"])
    assert all("renderer=torch" in s.argv for s in torch_only if "train" in s.argv or "step" in s.argv)


def test_a_section_reports_its_figures_its_failure_and_its_time_limit(tmp_path):
    out = (
        "  whole step: median 0.250 s\\n  data (wait for the batch)      0.010 s    4.0%\\n"
        "  3D part share: 12.5% (goal <= 25%); lift+splat 123.4 target views/s at render 576x880\\n"
        "  peak GPU memory: 7.25 GiB"
    )
    ok = Section("ok", [sys.executable, "-c", f"print('{out}')"], 60)
    failed = Section("failed", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], 60)
    slow = Section("slow", [sys.executable, "-c", "import time; time.sleep(30)"], 0.5)
    late = Section("late", [sys.executable, "-c", "pass"], 60)
    for sec, deadline in ((ok, 1e18), (failed, 1e18), (slow, 1e18), (late, 0.0)):
        run_section(sec, deadline)
    assert ok.status == "ok" and ok.summary == {
        "step s": "0.250",
        "data %": "4.0",
        "3D %": "12.5",
        "lift+splat views/s": "123.4",
        "peak GiB": "7.25",
    }
    assert failed.status == "FAILED (exit 3)" and "boom" in failed.output
    assert slow.status.startswith("FAILED (over its")
    assert late.status.startswith("skipped")
    report = Path(tmp_path / "check.md")
    write_report(report, [ok, failed, slow, late], cpu=True, seconds=1.0)
    text = report.read_text()
    assert "| ok | ok |" in text and "lift+splat views/s 123.4" in text and "FAILED (exit 3)" in text
