"""Iterative refinement of a feed-forward lifter during Splat-and-Distill training.

Why: the seed's step 5, "as the student improves, its predictions can be fed back to refine the depth
estimates used for lifting". A predictor that matches on backbone features (``features=backbone``)
already follows the teacher: the trainer hands it the *current* EMA teacher's features of the context
views. :class:`OnlineRefiner` adds the optional second half: every ``every`` steps it fine-tunes the
predictor on the batch's own context views with the self-supervised photometric loss (posed images
alone, :func:`~splatdistill.lifters.losses.self_supervised_losses`), so the geometry adapts to the
training data and to the teacher's features as they change. Its state is part of the trainer's
checkpoint, so a resumed run continues bit for bit.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from splatdistill.data.views import Views
from splatdistill.errors import UserError
from splatdistill.lifters.losses import self_supervised_losses
from splatdistill.lifters.predictor import PredictorLifter


class OnlineRefiner:
    """Photometric fine-tuning of a :class:`PredictorLifter`'s network, one step every ``every`` calls."""

    def __init__(self, lifter: Any, every: int, lr: float = 1e-4):
        if not isinstance(lifter, PredictorLifter):
            raise UserError(
                "lifter_refine_every > 0 refines a learned predictor: use lifter=auto or "
                f"lifter=predictor:PATH (got a {type(lifter).__name__})"
            )
        if every < 1 or lr <= 0:
            raise UserError(f"need lifter_refine_every >= 1 and lifter_refine_lr > 0, got {every}, {lr}")
        self.lifter, self.every = lifter, int(every)
        self.model = lifter.model
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=1e-4)
        self.steps = 0

    def maybe_step(self, step: int, context: Views) -> dict[str, float]:
        """At every ``every``-th ``step``: one optimiser step on the (B, V) ``context`` views (images, cameras,
        and the teacher's ``tokens``, which guide a predictor that matches on them)."""
        if step % self.every:
            return {}
        cfg = self.model.config
        if context.height % 4 or context.width % 4:
            raise UserError(
                f"lifter refinement needs a render size that is a multiple of 4, got {(context.height, context.width)}"
            )
        cams = context.cameras.to(dtype=torch.float32)
        batch = Views(context.images.float(), cams)
        guide = context.tokens.float() if (cfg.uses_backbone and context.tokens is not None) else None
        self.model.train()
        with torch.enable_grad():
            out = self.model(replace(batch, images=batch.images.clamp(0, 1), tokens=guide))
            losses = self_supervised_losses(out, batch, cfg, splat_weight=0.0)
            self.optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
        self.model.eval()
        self.steps += 1
        return {"lifter_photometric": float(losses["warp"].detach())}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
