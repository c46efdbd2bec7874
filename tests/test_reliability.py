"""Nothing lost, nothing silent: run-folder locks, the checkpoint's config on resume, finite weights,
temporary files, file modes, thread counts, skipped tasks said aloud, and a report.html that renders."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from splatdistill.cli import main


def tiny_run() -> list[str]:
    from _train_worker import TINY_RUN

    return TINY_RUN


# ---- the run folder ---------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_note(tmp_path, capsys):
    import socket

    from splatdistill.run_folder import LOCK_NAME, open_run_folder

    (tmp_path / LOCK_NAME).write_text(
        json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "command": "splatdistill train"})
    )
    lock = open_run_folder(tmp_path, "splatdistill train")
    assert "took over the lock of pid" in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: the record cleared, the file kept (one inode)
    open_run_folder(tmp_path, "splatdistill train").release()
    assert "took over" not in capsys.readouterr().err


def test_a_lock_held_by_a_live_process_refuses_a_second_owner(tmp_path):
    from splatdistill.errors import UserError
    from splatdistill.run_folder import open_run_folder

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from splatdistill.run_folder import open_run_folder; "
                f"open_run_folder({str(tmp_path)!r}, 'splatdistill train'); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"in use by pid {holder.pid} \(splatdistill train"):
            open_run_folder(tmp_path, "splatdistill eval")
    finally:
        holder.kill()
        holder.wait()
    open_run_folder(tmp_path, "splatdistill eval").release()  # the kernel dropped the dead holder's lock


def test_resume_uses_the_checkpoints_config_and_reports_a_damaged_config_yaml(rooms, tmp_path, capsys):
    out = tmp_path / "run"
    base = [f"data={rooms}", f"out={out}", "val_samples=0", "checkpoint_every=1", *tiny_run()]
    assert main(["train", *base, "steps=2", "lr=3e-3", "seed=11"]) == 0
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(text[: len(text) // 3])  # truncated, as by a crash of an editor or a disk
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "steps=3"]) == 0
    err = capsys.readouterr().err
    assert "config.yaml" in err and "resuming with the checkpoint's" in err
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 3
    assert state["config"]["optim"]["lr"] == 3e-3 and state["config"]["run"]["seed"] == 11  # not the defaults
    assert "lr: 0.003" in (out / "config.yaml").read_text()  # rewritten from the resumed config


def test_resume_removes_stale_temporary_files_and_outputs_are_world_readable(rooms, tmp_path, capsys):
    out = tmp_path / "run"
    base = [f"data={rooms}", f"out={out}", "val_samples=0", "checkpoint_every=1", *tiny_run()]
    assert main(["train", *base, "steps=2"]) == 0
    stale = out / ".checkpoint.pt.x1y2z3ab.splatdistill.tmp"  # what a write killed before its rename leaves
    (out / "notes.tmp").write_text("a user's file")  # not ours: kept
    stale.write_bytes(b"\0" * 1000)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "steps=3"]) == 0
    assert "removed 1 temporary file(s)" in capsys.readouterr().err
    assert not stale.exists() and (out / "notes.tmp").exists()
    umask = os.umask(0)
    os.umask(umask)
    for name in ("student.safetensors", "teacher.safetensors", "checkpoint.pt", "config.yaml", "heads.pt"):
        mode = stat.S_IMODE((out / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


# ---- finite weights ---------------------------------------------------------------------------------


def test_an_update_that_makes_the_weights_non_finite_stops_before_any_save(rooms, tmp_path):
    """A finite loss whose update poisons the weights (an infinite gradient: Adam gives inf/inf = NaN)."""
    from splatdistill.distill.config import TrainConfig
    from splatdistill.distill.trainer import Trainer, TrainingDiverged

    cfg = TrainConfig.load(
        None, [f"data={rooms}", f"out={tmp_path / 'r'}", "steps=5", "checkpoint_every=1", "val_samples=0", *tiny_run()]
    )
    trainer = Trainer(cfg)
    lora = next(p for n, p in trainer.student.named_parameters() if p.requires_grad and "lora_B" in n)
    real = trainer.train_step

    def step(batch, times=None):
        if trainer.step == 2:
            lora.register_hook(lambda g: g * float("inf"))
        return real(batch, times)

    trainer.train_step = step
    with pytest.raises(
        TrainingDiverged,
        match=r"weights became non-finite \(after the update, step 3\) though the "
        r"loss was finite.*last good checkpoint \(.*checkpoint.pt, step 2\)",
    ):
        trainer.fit()
    state = torch.load(trainer.checkpoint_path, weights_only=False)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["student"].values())
    assert not (tmp_path / "r" / "student.safetensors").exists()  # nothing exported from the poisoned weights


# ---- threads ----------------------------------------------------------------------------------------


def test_thread_count_follows_affinity_quota_and_override(tmp_path, monkeypatch):
    from splatdistill import threads
    from splatdistill.errors import UserError

    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads._cgroup_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads._cgroup_quota(tmp_path) is None
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 2.5)
    assert threads.available_cores() == 3  # 6 cores allowed by affinity, 2.5 CPUs of quota
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.default_threads() == 6
    monkeypatch.setenv(threads.THREADS_ENV, "2")
    assert threads.default_threads() == 2 and threads.resolve_threads(5) == 5
    monkeypatch.setenv(threads.THREADS_ENV, "0")
    with pytest.raises(UserError, match="SPLATDISTILL_THREADS='0'"):
        threads.default_threads()


def test_openmp_spin_wait_is_short_unless_the_user_chose(monkeypatch):
    from splatdistill.threads import SPIN_COUNT, prepare_openmp

    env: dict[str, str] = {}
    prepare_openmp(env)
    assert env == {"GOMP_SPINCOUNT": SPIN_COUNT}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    prepare_openmp(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}
    # the CLI sets it before torch loads, so its worker processes inherit it; a plain import leaves it alone
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = "import os, splatdistill; print(os.environ.get('GOMP_SPINCOUNT'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    assert out.splitlines()[0] == "None"
    code = (
        "import os, contextlib; from splatdistill.cli import main\nwith contextlib.suppress(SystemExit): "
        "main(['--version'])\nprint(os.environ.get('GOMP_SPINCOUNT'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout
    assert out.splitlines()[-1] == SPIN_COUNT


# ---- eval says what it skipped; report.html renders --------------------------------------------------


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.text: list[str] = []
        self.img_src: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "img":
            self.img_src.append(dict(attrs).get("src", ""))
        if tag in ("style", "code"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("style", "code"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def parse_report(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


def assert_rendered(page: _Page, min_tables: int) -> None:
    text = "".join(page.text)
    assert page.tags.get("table", 0) >= min_tables and page.tags.get("th", 0) > 0
    assert "|---" not in text and "---|" not in text and "**" not in text and "![" not in text
    assert page.tags.get("pre", 0) == 0  # nothing dumped as preformatted markdown
    assert page.img_src and all(s.startswith("data:image/png;base64,") for s in page.img_src)  # self-contained


def test_eval_says_which_tasks_it_skipped_and_writes_a_rendered_report(tmp_path, capsys):
    from splatdistill.data.formats.native import save_scene
    from splatdistill.eval.synthetic import make_dataset

    for scene in make_dataset(train_scenes=2, test_scenes=1, views_per_scene=4, size=(56, 56), seed=2):
        for rec in scene.views:
            load = rec.loader

            def without_depth(load=load):
                v = load()
                v.depth = None
                return v

            rec.loader = without_depth
        save_scene(scene, tmp_path / "data" / scene.name)
    rc = main(
        [
            "eval",
            "-b",
            "random:vit_small_patch14_dinov2",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "--resolution",
            "28",
            "--probe-steps",
            "5",
            "--pairs",
            "3",
            "--keep",
            "50",
            "--points",
            "50",
            "--no-middlebury",
            "-q",
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipped depth: no depth ground truth in the train split" in err
    assert "skipped correspondence on" in err and "no view has depth ground truth" in err
    page = parse_report(tmp_path / "out" / "report.html")
    assert_rendered(page, min_tables=2)
    assert "skipped" in "".join(page.text)


def test_report_tables_align_words_left_and_numbers_right(tmp_path):
    from splatdistill.eval.report import markdown_table
    from splatdistill.report_html import markdown_to_html_body

    table = markdown_table(
        ["blend", "noblend"],
        [{"lifter": "auto", "steps": 713}, {"lifter": "depth", "steps": None}],
        [("lifter", "lifter", "{}"), ("steps", "steps", "{}")],
        higher={},
        first="variant",
    )
    assert table.splitlines()[1] == "|---|---|---:|"
    body = markdown_to_html_body(table, tmp_path)
    assert '<th style="text-align:right">steps</th>' in body and '<th style="text-align:right">lifter' not in body
