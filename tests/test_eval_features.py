"""Feature extraction cache and PCA images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from splatdistill.eval.features import BackboneEntry, extract_features, get_features, model_fingerprint
from splatdistill.eval.synthetic import ColourBackbone
from splatdistill.viz import pca_rgb


@pytest.fixture()
def images() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"train": torch.rand(5, 3, 32, 40, generator=g).half(), "eval": torch.rand(2, 3, 32, 40, generator=g).half()}


def test_extract_shapes_and_cls():
    model = ColourBackbone(patch_size=8, embed_dim=6)
    patch, cls = extract_features(model, torch.rand(3, 3, 32, 40), batch_size=2, progress=False)
    assert patch.shape == (3, 6, 4, 5) and cls.shape == (3, 6)
    # batching does not change the result
    x = torch.rand(3, 3, 32, 40)
    a, _ = extract_features(model, x, batch_size=1, progress=False)
    b, _ = extract_features(model, x, batch_size=3, progress=False)
    torch.testing.assert_close(a, b)


def test_cache_hit_is_identical_and_keyed_by_data_and_weights(tmp_path, images):
    entry = BackboneEntry("colour", "colour", ColourBackbone(patch_size=8, embed_dim=6))
    first = get_features(entry, images, tmp_path, progress=False)
    assert not first.cache_hit and first.cache_path.is_file()
    second = get_features(entry, images, tmp_path, progress=False)
    assert second.cache_hit and second.cache_path == first.cache_path
    for g in images:
        assert torch.equal(first.patch[g], second.patch[g])
        assert torch.equal(first.cls[g], second.cls[g])
    # the cached values are the float16 round trip of a fresh extraction
    fresh, _ = extract_features(entry.model, images["eval"].float(), progress=False)
    torch.testing.assert_close(second.patch["eval"], fresh.half(), rtol=0, atol=0)
    assert first.patch["eval"].dtype == torch.float16  # held as stored: half the memory
    # other pixels -> other key
    changed = {k: v.clone() for k, v in images.items()}
    changed["eval"][0, 0, 0, 0] = 0
    assert get_features(entry, changed, tmp_path, progress=False).cache_path != first.cache_path
    # other weights -> other key
    other = BackboneEntry("colour", "colour", ColourBackbone(patch_size=8, embed_dim=6, seed=1))
    assert model_fingerprint(other.model) != model_fingerprint(entry.model)
    assert get_features(other, images, tmp_path, progress=False).cache_path != first.cache_path


def test_corrupt_cache_file_is_replaced(tmp_path, images):
    entry = BackboneEntry("colour", "colour", ColourBackbone(patch_size=8, embed_dim=6))
    path = get_features(entry, images, tmp_path, progress=False).cache_path
    path.write_bytes(b"not a safetensors file")
    again = get_features(entry, images, tmp_path, progress=False)
    assert not again.cache_hit and again.patch["train"].shape == (5, 6, 4, 5)
    assert get_features(entry, images, tmp_path, progress=False).cache_hit


def test_no_cache_dir_writes_nothing(tmp_path, images):
    entry = BackboneEntry("colour", "colour", ColourBackbone(patch_size=8, embed_dim=6))
    out = get_features(entry, images, None, progress=False)
    assert out.cache_path is None and not out.cache_hit and not any(tmp_path.iterdir())


def test_pca_is_joint_deterministic_and_in_range():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 5, 6, generator=g)
    imgs = pca_rgb([a, a.clone(), torch.randn(16, 4, 4, generator=g)])
    assert imgs[0].shape == (5, 6, 3) and imgs[2].shape == (4, 4, 3)
    assert all(im.min() >= 0 and im.max() <= 1 for im in imgs)
    np.testing.assert_array_equal(imgs[0], imgs[1])  # same features, same colours
    np.testing.assert_array_equal(
        pca_rgb([a, a.clone(), imgs_src := a[:, :4, :4]])[0], pca_rgb([a, a.clone(), imgs_src])[0]
    )
    # features varying along one direction map onto the first component (red channel) monotonically
    t = torch.linspace(-1, 1, 10)
    line = (t[None, :, None] * torch.ones(8, 1, 1)).expand(8, 10, 3).contiguous()
    red = pca_rgb([line])[0][..., 0]  # (10, 3): t varies down the rows, constant along a row
    column = red[:, 0]
    assert np.all(np.diff(column) >= 0) or np.all(np.diff(column) <= 0)
    assert column.max() - column.min() > 0.9  # percentile-stretched to nearly the full range
    np.testing.assert_allclose(red, np.repeat(column[:, None], 3, axis=1), atol=1e-12)


def test_raw_tokens_come_from_the_same_pass_and_have_their_own_cache_key(tmp_path):
    from splatdistill.backbones.vit import ViTBackbone, create_vit

    torch.manual_seed(0)
    model = create_vit("vit_small_patch14_dinov2", img_size=28)
    for p in model.parameters():
        if p.ndim == 1:
            p.data.normal_(0, 0.1)
    entry = BackboneEntry("vit", "toy:vit", ViTBackbone(model, "vit").eval())
    images = {"eval": torch.rand(3, 3, 28, 42, generator=torch.Generator().manual_seed(1)).half()}
    plain = get_features(entry, images, tmp_path, progress=False)
    both = get_features(entry, images, tmp_path, progress=False, raw=True)
    assert both.cache_path != plain.cache_path and not both.cache_hit
    with torch.no_grad():
        ref_raw, ref_cls = entry.model.patch_features(images["eval"].float(), return_cls=True, final_norm=False)
    torch.testing.assert_close(both.raw_patch["eval"], ref_raw.half(), rtol=0, atol=0)
    torch.testing.assert_close(both.raw_cls["eval"], ref_cls.half(), rtol=0, atol=0)
    torch.testing.assert_close(both.patch["eval"], plain.patch["eval"], rtol=0, atol=0)  # final tokens unchanged
    again = get_features(entry, images, tmp_path, progress=False, raw=True)
    assert again.cache_hit and torch.equal(again.tokens("raw")[0]["eval"], both.raw_patch["eval"])
    with pytest.raises(ValueError, match="raw tokens were not extracted"):
        plain.tokens("raw")
    # a backbone without the interface gives its tokens for both kinds
    colour = BackboneEntry("colour", "colour", ColourBackbone(patch_size=8, embed_dim=6))
    c = get_features(colour, {"eval": images["eval"]}, None, progress=False, raw=True)
    assert torch.equal(c.raw_patch["eval"], c.patch["eval"])
