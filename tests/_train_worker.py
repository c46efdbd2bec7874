"""Runs a short training in a subprocess for the resume and DDP tests.

usage: python _train_worker.py DATA OUT [--kill-at K] [--resume] [--dump] [key=value ...]
--kill-at K: SIGKILL this process right after step K (no clean-up, like a crash).
--dump: each rank writes rank<R>.pt with its final weights and the samples it drew.
"""

from __future__ import annotations

import os
import signal
import sys

import torch


def main(argv: list[str]) -> None:
    from splatdistill.distill.config import TrainConfig
    from splatdistill.distill.trainer import Trainer, sample_indices

    data, out, *rest = argv
    kill_at, resume, dump, overrides = None, False, False, []
    it = iter(rest)
    for a in it:
        if a == "--kill-at":
            kill_at = int(next(it))
        elif a == "--resume":
            resume = True
        elif a == "--dump":
            dump = True
        else:
            overrides.append(a)
    cfg = TrainConfig.load(None, [f"data={data}", f"out={out}", *TINY_RUN, *overrides])
    trainer = Trainer(cfg, resume=resume)
    drawn = []

    def on_step(tr, metrics):
        drawn.extend(
            sample_indices(
                len(tr.dataset), cfg.run.seed, tr.step - 1, cfg.optim.batch_size, tr.dist.rank, tr.dist.world
            )
        )
        if kill_at is not None and tr.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    trainer.fit(on_step=on_step)
    if dump:
        state = {n: p.detach().clone() for n, p in trainer.student.named_parameters() if p.requires_grad}
        state.update(
            {f"teacher.{n}": p.detach().clone() for n, p in trainer.teacher.module.named_parameters() if n in state}
        )
        torch.save({"weights": state, "drawn": drawn}, os.path.join(out, f"rank{trainer.dist.rank}.pt"))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


TINY_RUN = [
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
]

if __name__ == "__main__":
    main(sys.argv[1:])
