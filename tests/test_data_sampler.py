"""View sampler, PyTorch Dataset/collate and segment masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _data_helpers import tiny_rooms
from splatdistill.data import load_dataset
from splatdistill.data.formats.middlebury import load_middlebury
from splatdistill.data.masks import segments_for_view
from splatdistill.data.sampler import MultiViewDataset, SamplerConfig, ViewSampler, collate_views
from splatdistill.errors import UserError
from splatdistill.geometry.cameras import rotation_angle_deg


@pytest.fixture(scope="session")
def scenes(tmp_path_factory):
    return load_dataset(tiny_rooms(tmp_path_factory))


def test_default_sampler_baseline_and_targets_between(scenes):
    sampler = ViewSampler(scenes, seed=1)
    for k in range(40):
        s = sampler.sample_at(k)
        i, j = s.context
        lo, hi = min(i, j), max(i, j)
        views = scenes[s.scene].views
        turned = sum(rotation_angle_deg(views[m].cam_to_world, views[m + 1].cam_to_world) for m in range(lo, hi))
        assert 25 <= turned <= 65
        assert all(lo < t < hi for t in s.targets)
    assert [sampler.sample_at(k) for k in range(10)] == [ViewSampler(scenes, seed=1).sample_at(k) for k in range(10)]
    assert [sampler.sample_at(k) for k in range(10)] != [sampler.sample_at(k, epoch=1) for k in range(10)]


def test_fixed_gap_and_overlap_targets(scenes):
    s = ViewSampler(scenes, SamplerConfig(gap=4, num_targets=2), seed=0).sample_at(3)
    assert abs(s.context[0] - s.context[1]) == 4 and len(s.targets) == 2
    ov = ViewSampler(scenes, SamplerConfig(gap=2, target="overlap", min_overlap=0.3), seed=0)
    for k in range(10):
        smp = ov.sample_at(k)
        t, (i, j) = smp.targets[0], smp.context
        assert t not in (i, j)
        assert max(ov._overlap(smp.scene, t, i), ov._overlap(smp.scene, t, j)) >= 0.3
    with pytest.raises(UserError, match="no scene has a context pair"):
        ViewSampler(scenes, SamplerConfig(gap=50))


def test_dataset_item_shapes_and_resized_intrinsics(scenes):
    ds = MultiViewDataset(scenes, SamplerConfig(num_targets=1), seed=0, size=(56, 70))
    item = ds[0]
    assert item.context.images.shape == (2, 3, 56, 70) and item.context.images.dtype == torch.float32
    assert item.target.images.shape == (1, 3, 56, 70)
    assert item.context.cameras.Ks.shape == (2, 3, 3) and item.context.cameras.viewmats.shape == (2, 4, 4)
    for key in ("depths", "segments", "semantic"):
        assert getattr(item.context, key).shape == (2, 56, 70) and getattr(item.target, key).shape == (1, 56, 70)
    assert item.context.segments.dtype == torch.int64
    c2w = torch.from_numpy(np.stack([scenes[item.scene_index].views[int(i)].cam_to_world for i in item.context.ids]))
    torch.testing.assert_close(
        item.context.cameras.viewmats @ c2w.float(), torch.eye(4).expand(2, 4, 4), atol=1e-5, rtol=0
    )
    # K follows the crop to the 5:4 aspect (rows, centred) and the resize; never a squash
    scene = scenes[item.scene_index]
    rec = scene.views[int(item.context.ids[0])]
    K = item.context.cameras.Ks[0].double().numpy()
    crop_h = round(rec.width * 56 / 70)
    y0 = (rec.height - crop_h) // 2
    np.testing.assert_allclose(K[0], rec.K[0] * 70 / rec.width, rtol=1e-6)
    np.testing.assert_allclose(K[1, 1], rec.K[1, 1] * 56 / crop_h, rtol=1e-6)
    np.testing.assert_allclose(K[1, 2], (rec.K[1, 2] - y0) * 56 / crop_h, rtol=1e-6)
    assert abs(K[0, 0] / K[1, 1] - rec.K[0, 0] / rec.K[1, 1]) < 0.01  # square pixels stay square
    import pickle

    again = pickle.loads(pickle.dumps(ds))  # DataLoader workers may need to pickle it
    assert torch.equal(again[0].target.images, item.target.images)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_views)
    batch = next(iter(loader))
    assert batch.context.images.shape == (3, 2, 3, 56, 70) and len(batch.scene) == 3
    assert batch.target.ids.shape == (3, 1)


def test_masks_modes(scenes):
    v = scenes[0].load_view(0)
    inst = segments_for_view(v, "instance")
    assert inst.dtype == np.int32 and inst.min() == 0 and inst.max() == len(np.unique(v.instance)) - 1
    assert np.array_equal(segments_for_view(v, "auto"), inst)
    slic = segments_for_view(v, "slic", n_segments=30)
    assert slic.shape == inst.shape and 5 <= slic.max() + 1 <= 60
    fz = segments_for_view(v, "felzenszwalb")
    assert fz.shape == inst.shape and fz.max() >= 2
    real = load_middlebury(width=160).load_view(0)
    assert real.instance is None and segments_for_view(real, "auto").max() >= 5  # superpixels on photos
    with pytest.raises(UserError, match="no instance map"):
        segments_for_view(real, "instance")


def test_views_at_render_resolution_match_loading_at_that_size(scenes):
    """``Views.at`` (what the trainer uses for its render resolution) scales K and samples the maps
    exactly as loading the views at that size does; images agree up to the two resamplers."""
    from splatdistill.data.views import Views

    scene = scenes[0]
    loaded = [scene.load_view(i) for i in range(3)]
    full = Views.from_view_data(loaded, mask_mode=None)
    small = Views.from_view_data(loaded, mask_mode=None, size=40)
    at = full.at(40)
    torch.testing.assert_close(at.cameras.Ks, small.cameras.Ks)
    assert torch.equal(at.depths, small.depths) and torch.equal(at.semantic, small.semantic)
    assert (at.images - small.images).abs().mean() < 0.02
    cams = at.cameras
    assert (cams.width, cams.height) == (40, 40)
    c2w = torch.from_numpy(np.stack([v.cam_to_world for v in loaded])).float()  # the loaded poses
    torch.testing.assert_close(cams.viewmats @ c2w, torch.eye(4).expand(3, 4, 4), atol=1e-5, rtol=0)
    assert full.at(full.height) is full and len(at[1:]) == 2


def test_frames_sampler_follows_the_reference_numbering():
    """mode=frames: contexts exactly `gap` apart in the frame numbers of the names (a removed frame is a hole
    that no pair bridges), targets between them inclusive, whatever order the views are listed in."""
    from splatdistill.data.sampler import frame_number
    from splatdistill.data.scene import Scene, ViewRecord

    numbers = [n for n in range(30) if n not in (4, 13, 14)]  # frames 4, 13 and 14 were removed
    rng = np.random.default_rng(0)
    order = rng.permutation(len(numbers))
    views = [
        ViewRecord(f"dslr/DSC{numbers[k]:05d}.JPG", np.eye(3), np.eye(4), 8, 8, loader=lambda: None) for k in order
    ]
    scene = Scene("s", views)
    sampler = ViewSampler([scene], SamplerConfig(mode="frames", gap=8, num_targets=2), seed=0)
    num = [frame_number(v.name, k) for k, v in enumerate(views)]
    pairs = {(num[i], num[j]) for i, j in sampler.pairs[0]}
    expected = {(a, a + 8) for a in numbers if a + 8 in numbers}
    assert pairs == expected and (3, 11) in pairs and all(a != 4 and b != 4 for a, b in pairs)
    for k in range(60):
        s = sampler.sample_at(k)
        a, b = num[s.context[0]], num[s.context[1]]
        assert b - a == 8
        assert all(a <= num[t] <= b for t in s.targets) and len(set(s.targets)) == 2
    seen = {num[t] for k in range(300) for t in sampler.sample_at(k).targets}
    assert {0, 8}.issubset(seen)  # the contexts themselves can be targets (inclusive)
    assert SamplerConfig().mode == "rotation"
    with pytest.raises(UserError, match="unknown sampler"):
        ViewSampler([scene], SamplerConfig(mode="nope"))
