"""Typed view batches: what flows from the sampler to the trainer, the lifters, the baseline and evaluation.

:class:`Views` holds V posed views of one scene as tensors (or a batch ``(B, V, ...)`` of them): images,
intrinsics, poses, depth, segments and semantics together, so that "the context views at render
resolution" is one call (:meth:`Views.at`) and their :class:`~splatdistill.geometry.Cameras` another.
:class:`Sample` is one training sample (context + target views of one scene); :func:`collate_samples`
batches samples. Every module that turns :class:`~splatdistill.data.scene.ViewData` into tensors goes
through :meth:`Views.from_view_data`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from splatdistill.errors import UserError
from splatdistill.geometry.cameras import Cameras

from .masks import segments_for_view
from .scene import ViewData


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def parse_size(value: int | str | Sequence[int], name: str = "size") -> int | tuple[int, int]:
    """A size option: ``224`` (the short side; the aspect ratio is kept) or ``"HxW"`` / ``(H, W)`` (exact)."""
    try:
        if isinstance(value, (list, tuple)):
            h, w = (int(v) for v in value)
            out: int | tuple[int, int] = (h, w)
        elif isinstance(value, str) and "x" in value.lower():
            h, w = (int(v) for v in value.lower().split("x"))
            out = (h, w)
        else:
            out = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be an integer (the short side) or HxW (e.g. 574x868), got {value!r}") from None
    if min(out if isinstance(out, tuple) else (out,)) < 1:
        raise UserError(f"{name} must be positive, got {value!r}")
    return out


def fit_size(spec: int | str | Sequence[int], height: int, width: int) -> tuple[int, int]:
    """(h, w) for a view of ``height x width``: an int is the short side (aspect kept), HxW is exact."""
    size = parse_size(spec)
    if isinstance(size, tuple):
        return size
    s = size / min(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def crop_to_aspect(view: ViewData, aspect: float, tolerance: float = 0.01) -> ViewData:
    """Centre-crop a view to ``aspect`` = width / height (principal point shifted), so that a resize to a
    size of that aspect does not squash it; views within ``tolerance`` of it are returned as they are."""
    H, W = view.height, view.width
    if abs(W / H - aspect) <= tolerance * aspect:
        return view
    if aspect < W / H:  # too wide: crop the sides
        w, h = max(1, round(H * aspect)), H
    else:
        w, h = W, max(1, round(W / aspect))
    x0, y0 = (W - w) // 2, (H - h) // 2
    K = view.K.copy()
    K[0, 2] -= x0
    K[1, 2] -= y0

    def crop(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[y0 : y0 + h, x0 : x0 + w])

    return ViewData(
        image=crop(view.image),
        K=K,
        cam_to_world=view.cam_to_world,
        depth=crop(view.depth),
        normals=crop(view.normals),
        instance=crop(view.instance),
        semantic=crop(view.semantic),
        name=view.name,
        instance_missing=view.instance_missing,
    )


def resize_maps(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Integer or depth maps (..., H, W) to (..., h, w) by nearest sampling (no mixing across edges)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    lead = x.shape[:-2]
    out = F.interpolate(x.reshape(-1, 1, *x.shape[-2:]).double(), size=size, mode="nearest-exact")
    return out.reshape(*lead, *size).to(x.dtype)


def resize_view(view: ViewData, size: tuple[int, int] | None) -> ViewData:
    """Resize a view to (height, width): bilinear (antialiased) image, nearest maps, K scaled to match.
    A view of another aspect ratio is centre-cropped to the target's first (:func:`crop_to_aspect`): never squashed."""
    if size is None or (view.height, view.width) == tuple(size):
        return view
    h, w = size
    view = crop_to_aspect(view, w / h)
    if (view.height, view.width) == (h, w):
        return view
    sx, sy = w / view.width, h / view.height
    S = np.diag([sx, sy, 1.0])
    # PIL's bilinear filter widens its support when shrinking (antialiased); per channel in float.
    img = np.stack(
        [
            np.asarray(Image.fromarray(np.ascontiguousarray(view.image[..., c])).resize((w, h), Image.BILINEAR))
            for c in range(view.image.shape[2])
        ],
        -1,
    )
    ys = np.minimum(((np.arange(h) + 0.5) / sy).astype(int), view.height - 1)
    xs = np.minimum(((np.arange(w) + 0.5) / sx).astype(int), view.width - 1)

    def nearest(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.ascontiguousarray(a[ys][:, xs])

    return ViewData(
        image=np.clip(img, 0, 1).astype(np.float32),
        K=S @ view.K,
        cam_to_world=view.cam_to_world,
        depth=nearest(view.depth),
        normals=nearest(view.normals),
        instance=nearest(view.instance),
        semantic=nearest(view.semantic),
        name=view.name,
        instance_missing=view.instance_missing,
    )


def _map_field(value, fn):
    """``fn`` over a field: tensors directly, :class:`Cameras` over their Ks and viewmats, None kept."""
    if value is None:
        return None
    if isinstance(value, Cameras):
        return value.map(fn)
    return fn(value)


@dataclass
class Views:
    """V posed views as tensors; every field has the same leading dims (``(V,)`` or ``(B, V)``).

    The one container of views from the sampler to the trainer, the lifters, the lifter's training, the
    FiT3D baseline and evaluation: poses travel only as :attr:`cameras`; what a consumer does not need
    (depth, labels, teacher features) is ``None``.
    """

    images: Tensor  # (..., 3, H, W) float in [0, 1]
    cameras: Cameras  # (...) intrinsics at H x W and world-to-camera poses (OpenCV)
    depths: Tensor | None = None  # (..., H, W) metres, 0 = unknown
    segments: Tensor | None = None  # (..., H, W) int64 segment labels (upsampling and blending)
    semantic: Tensor | None = None  # (..., H, W) int64 classes, -1 = ignore
    ids: Tensor | None = None  # (...) view indices in their scene
    normals: Tensor | None = None  # (..., H, W, 3) camera frame, when loaded
    features: Tensor | None = None  # (..., C, H, W) teacher features at the views' pixels (mask-aware upsampled)
    tokens: Tensor | None = None  # (..., C, h, w) teacher patch tokens (any grid), e.g. a predictor's guide
    scene_index: Tensor | None = None  # (...) scene number of each view, when views of several scenes are held

    @classmethod
    def from_view_data(
        cls,
        views: Sequence[ViewData],
        ids: Sequence[int] | None = None,
        mask_mode: str | None = "auto",
        size: int | Sequence[int] | None = None,
        normals: bool = False,
        scene: str = "",
        semantic: bool = True,
    ) -> Views:
        """Stack loaded views (resized to ``size`` first, K scaled to match; see :func:`resize_view`).

        ``normals=True`` loads them too (zeros for a view without). ``mask_mode`` picks the segments
        (:func:`~splatdistill.data.masks.segments_for_view`); ``None`` skips them (``segments`` is None) for
        consumers that need none, as ``semantic=False`` skips the classes.
        """
        views = [resize_view(v, None if size is None else _size(size)) for v in views]
        h, w = views[0].height, views[0].width
        if any((v.height, v.width) != (h, w) for v in views):
            raise UserError(f"scene {scene or '?'}: views of different sizes in one sample; pass size=(H, W) to resize")
        # Built in numpy, handed to torch without copies (small torch ops are slow in loader workers).
        Ks = torch.from_numpy(np.stack([v.K for v in views]).astype(np.float32))
        c2w = torch.from_numpy(np.stack([v.cam_to_world for v in views]).astype(np.float32))
        return cls(
            images=torch.from_numpy(
                np.ascontiguousarray(np.stack([v.image for v in views]).transpose(0, 3, 1, 2), dtype=np.float32)
            ),
            cameras=Cameras.from_cam_to_world(Ks, c2w, w, h),
            depths=torch.from_numpy(
                np.stack([v.depth if v.depth is not None else np.zeros((h, w), np.float32) for v in views]).astype(
                    np.float32
                )
            ),
            segments=torch.from_numpy(np.stack([segments_for_view(v, mask_mode) for v in views]).astype(np.int64))
            if mask_mode
            else None,
            semantic=torch.from_numpy(
                np.stack(
                    [v.semantic if v.semantic is not None else np.full((h, w), -1, np.int32) for v in views]
                ).astype(np.int64)
            )
            if semantic
            else None,
            ids=torch.as_tensor(list(range(len(views))) if ids is None else [int(i) for i in ids]),
            normals=torch.from_numpy(
                np.stack(
                    [v.normals if v.normals is not None else np.zeros((h, w, 3), np.float32) for v in views]
                ).astype(np.float32)
            )
            if normals
            else None,
        )

    # -- shape -------------------------------------------------------------------------------------
    @property
    def height(self) -> int:
        return int(self.images.shape[-2])

    @property
    def width(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def has_depth(self) -> bool:
        return self.depths is not None and bool((self.depths > 0).any())

    @property
    def guide(self) -> Tensor | None:
        """The teacher features a feed-forward predictor matches on: the patch tokens, else the pixel features."""
        return self.tokens if self.tokens is not None else self.features

    # -- transforms ----------------------------------------------------------------------------------
    def map(self, fn) -> Views:
        """A copy with ``fn`` applied to every tensor (the cameras' Ks and viewmats included)."""
        return Views(**{f.name: _map_field(getattr(self, f.name), fn) for f in fields(self)})

    def to(self, device: torch.device | str) -> Views:
        return self.map(lambda t: t.to(device))

    def __getitem__(self, index) -> Views:
        """Index the leading dimension (a batch item, or a subset of views)."""
        return self.map(lambda t: t[index])

    def at(self, size: int | Sequence[int]) -> Views:
        """The views at (h, w): images bilinear (antialiased), maps nearest, K scaled to match.
        This is how the trainer gets its render-resolution context and target views. Pixel features are
        tied to their resolution (mask-aware upsampled): views that carry them cannot be resized.
        """
        h, w = _size(size)
        if (h, w) == (self.height, self.width):
            return self
        if self.features is not None:
            raise ValueError(
                f"views carry {self.height}x{self.width} teacher pixel features; they cannot be resized "
                f"to {h}x{w}: upsample the tokens again at that size"
            )
        lead = self.images.shape[:-3]
        images = F.interpolate(
            self.images.reshape(-1, *self.images.shape[-3:]), size=(h, w), mode="bilinear", antialias=True
        ).reshape(*lead, 3, h, w)
        cams = self.cameras
        scale = torch.tensor([w / self.width, h / self.height, 1.0], dtype=cams.Ks.dtype, device=cams.Ks.device)

        def maps(x: Tensor | None) -> Tensor | None:
            return None if x is None else resize_maps(x, (h, w))

        normals = None if self.normals is None else resize_maps(self.normals.movedim(-1, -3), (h, w)).movedim(-3, -1)
        return replace(
            self,
            images=images,
            cameras=Cameras(cams.Ks * scale[:, None], cams.viewmats, w, h, cams.c2w),
            depths=maps(self.depths),
            segments=maps(self.segments),
            semantic=maps(self.semantic),
            normals=normals,
        )

    @staticmethod
    def stack(items: Sequence[Views]) -> Views:
        """Stack along a new leading (batch) dimension."""
        return Views._join(items, torch.stack)

    @staticmethod
    def cat(items: Sequence[Views]) -> Views:
        """Concatenate along the leading dimension (views of one size, carrying the same fields)."""
        return Views._join(items, torch.cat)

    @staticmethod
    def _join(items: Sequence[Views], join) -> Views:
        first = items[0]
        out = {}
        for f in fields(first):
            value = getattr(first, f.name)
            if value is None:
                out[f.name] = None
            elif isinstance(value, Cameras):
                cams = [v.cameras for v in items]
                out[f.name] = Cameras(
                    join([c.Ks for c in cams]),
                    join([c.viewmats for c in cams]),
                    value.width,
                    value.height,
                    None if value.c2w is None else join([c.c2w for c in cams]),
                )
            else:
                out[f.name] = join([getattr(v, f.name) for v in items])
        return Views(**out)


@dataclass
class Sample:
    """One training sample: two context views and T target views of one scene (or a batch of them)."""

    context: Views  # (2, ...) or (B, 2, ...)
    target: Views  # (T, ...) or (B, T, ...)
    scene: str | list[str]
    scene_index: Tensor  # () or (B,)

    def to(self, device: torch.device | str) -> Sample:
        return Sample(self.context.to(device), self.target.to(device), self.scene, self.scene_index.to(device))

    def pin_memory(self) -> Sample:
        """A copy in page-locked memory (a torch DataLoader with ``pin_memory=True`` calls this)."""
        pin = Tensor.pin_memory
        return Sample(self.context.map(pin), self.target.map(pin), self.scene, self.scene_index.pin_memory())

    def __getitem__(self, i: int) -> Sample:
        """Batch item ``i`` of a collated sample."""
        scene = self.scene[i] if isinstance(self.scene, list) else self.scene
        return Sample(self.context[i], self.target[i], scene, self.scene_index[i])


def collate_samples(batch: Sequence[Sample]) -> Sample:
    """Stack samples: tensors gain a leading batch dimension, ``scene`` becomes a list of names."""
    sizes = {(b.context.height, b.context.width) for b in batch}
    if len(sizes) > 1:
        raise UserError(
            f"one batch holds views of different sizes {sorted(sizes)} (scenes "
            f"{', '.join(sorted({str(b.scene) for b in batch}))}); pass image_size=HxW or batch_size=1"
        )
    return Sample(
        Views.stack([b.context for b in batch]),
        Views.stack([b.target for b in batch]),
        [b.scene for b in batch],
        torch.stack([torch.as_tensor(b.scene_index) for b in batch]),
    )
