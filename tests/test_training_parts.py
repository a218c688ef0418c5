"""Unit tests of the training pieces: transforms, samplers, mixing, losses, EMA, pseudo labels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cogrnet.data.samplers import PatchBatcher, TrainVolume, stream_indices
from cogrnet.data.transforms import apply_patch_params, crop_pad, rot_flip, sample_patch_params
from cogrnet.methods.copy_paste import auto_fa_ratio
from cogrnet.methods.ema import make_teacher, update_ema
from cogrnet.methods.losses import ce_dice, mixed_loss, weighted_dice_loss
from cogrnet.methods.mixing import cuboid_mask, mix, sample_cuboid
from cogrnet.inference.sliding_window import largest_component
from cogrnet.methods.pseudo import _component_ids, largest_components


def test_crop_pad_zero_pads_small_volume_and_keeps_content():
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 1
    rng = np.random.default_rng(0)
    params = sample_patch_params(rng, vol.shape, (8, 4, 6), augment=False)
    out = crop_pad(vol, params.start, (8, 4, 6))
    assert out.shape == (8, 4, 6)
    assert params.start[0] == -2  # centred padding on the short axis
    assert (out[:2] == 0).all() and (out[6:] == 0).all()
    np.testing.assert_array_equal(out[2:6], vol[:, params.start[1]:params.start[1] + 4])


def test_rot_flip_matches_numpy_and_keeps_label_alignment():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(6, 6, 3)).astype(np.float32)
    lab = (img > 0).astype(np.uint8)
    for k in range(4):
        for axis in (None, 0, 1):
            r_img, r_lab = rot_flip(img, k, axis), rot_flip(lab, k, axis)
            np.testing.assert_array_equal(r_lab, (r_img > 0).astype(np.uint8))
    np.testing.assert_array_equal(rot_flip(img, 1, None), np.rot90(img, 1, axes=(0, 1)))


def test_non_square_patch_never_gets_odd_rotation():
    rng = np.random.default_rng(0)
    ks = {sample_patch_params(rng, (40, 30, 20), (32, 16, 16)).rot90_k for _ in range(50)}
    assert ks <= {0, 2}
    vol = np.zeros((40, 30, 20), np.float32)
    p = sample_patch_params(rng, vol.shape, (32, 16, 16))
    assert apply_patch_params(vol, p, (32, 16, 16)).shape == (32, 16, 16)


def test_stream_indices_visit_every_item_once_per_epoch():
    seen = stream_indices(seed=3, stream=0, first=0, count=10, n_items=5)
    assert sorted(seen[:5]) == list(range(5)) and sorted(seen[5:]) == list(range(5))
    assert stream_indices(3, 0, 2, 3, 5) == seen[2:5]


def test_patch_batcher_is_a_pure_function_of_iteration():
    rng = np.random.default_rng(0)
    lab = [TrainVolume(f"l{i}", rng.normal(size=(20, 20, 18)).astype(np.float32),
                       {"label": (rng.random((20, 20, 18)) > 0.5).astype(np.uint8)}) for i in range(3)]
    unl = [TrainVolume(f"u{i}", rng.normal(size=(20, 20, 18)).astype(np.float32)) for i in range(4)]
    b = PatchBatcher(lab, unl, (16, 16, 16), 2, 2, seed=5)
    one, two = b.batch(7), b.batch(7)
    assert one["image"].shape == (4, 1, 16, 16, 16) and one["label"].shape == (2, 16, 16, 16)
    for k in one:
        np.testing.assert_array_equal(one[k], two[k])
    assert not np.array_equal(b.batch(8)["image"], one["image"])
    # two ranks of a world of 2 together draw the single-process batch's streams
    r0 = PatchBatcher(lab, unl, (16, 16, 16), 1, 1, seed=5, rank=0, world=2)
    assert r0.batch(0)["image"].shape == (2, 1, 16, 16, 16)


def test_cuboid_mask_size_and_mix():
    rng = np.random.default_rng(0)
    start, size = sample_cuboid(rng, (12, 12, 9), 2 / 3)
    assert size == (8, 8, 6)
    m = cuboid_mask((12, 12, 9), start, size)
    assert int((m == 0).sum()) == 8 * 8 * 6
    a, b = torch.ones(1, 1, 12, 12, 9), torch.zeros(1, 1, 12, 12, 9)
    mixed = mix(a, b, m)
    assert torch.equal(mixed[0, 0], m)
    with pytest.raises(ValueError):
        sample_cuboid(rng, (12, 12, 9), 0.0)


def test_losses_respect_voxel_weights():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8, 8))
    region = torch.zeros(2, 8, 8, 8)
    region[:, :4] = 1
    # changing the target where the labeled region has weight 0 and u_weight = 0 changes nothing
    other = target.clone()
    other[:, 4:] = 1 - other[:, 4:]
    assert torch.isclose(mixed_loss(logits, target, region, 0.0), mixed_loss(logits, other, region, 0.0))
    assert not torch.isclose(mixed_loss(logits, target, region, 0.5), mixed_loss(logits, other, region, 0.5))
    # the labeled region at weight 1, the rest at u_weight
    want = ce_dice(logits, target, region) + 0.25 * ce_dice(logits, target, 1 - region)
    torch.testing.assert_close(mixed_loss(logits, target, region, 0.25), want)
    assert not torch.allclose(mixed_loss(logits, target, 1 - region, 0.25), want)
    perfect = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float() * 50
    assert weighted_dice_loss(perfect, target) < 1e-3
    assert ce_dice(perfect, target) < 1e-3


def test_ema_update_formula():
    student = torch.nn.Linear(2, 1)
    teacher = make_teacher(student)
    with torch.no_grad():
        student.weight.fill_(1.0)
        teacher.weight.fill_(0.0)
    update_ema(teacher, student, decay=0.99, step=1)  # alpha = min(1 - 1/2, 0.99) = 0.5
    assert torch.allclose(teacher.weight, torch.full_like(teacher.weight, 0.5))
    update_ema(teacher, student, decay=0.99, step=10_000)
    assert torch.allclose(teacher.weight, torch.full_like(teacher.weight, 0.5 * 0.99 + 0.01))
    assert not any(p.requires_grad for p in teacher.parameters())


def test_gpu_style_largest_component_equals_scipy():
    rng = np.random.default_rng(0)
    masks = rng.random((3, 12, 10, 8)) > 0.7
    masks[2] = False
    ref = np.stack([largest_component(m) for m in masks])
    ids = _component_ids(torch.from_numpy(masks))
    out = []
    for i in range(3):
        vals, counts = torch.unique(ids[i][ids[i] > 0], return_counts=True)
        out.append((ids[i] == vals[counts.argmax()]).numpy() if len(vals) else np.zeros_like(masks[i]))
    # sizes equal (ties between equally large components may pick another one)
    assert [o.sum() for o in out] == [r.sum() for r in ref]
    np.testing.assert_array_equal(largest_components(torch.from_numpy(masks)).numpy(), ref)


def test_auto_fa_ratio_is_the_clamped_foreground_fraction():
    assert auto_fa_ratio([0.1, 0.2], 0.6, 0.733) == 0.6
    assert auto_fa_ratio([0.7, 0.66], 0.6, 0.733) == pytest.approx(0.68)
    assert auto_fa_ratio([0.9], 0.6, 0.733) == 0.733


def test_the_two_dice_forms_on_a_batch_with_a_known_answer():
    """Sample 0 predicted exactly, sample 1 exactly inverted (probabilities 0/1 up to
    exp(-50)). Per sample and class the Dice is 1 on sample 0 and 0 on sample 1: the
    per-sample linear loss is 0.5. Pooled over the batch, class c's Dice is
    2 n0_c / (2 n0_c + n1 + n1) with n_c voxels of class c in sample 0 and n1 = 512 voxels
    of sample 1 (each wrong once in the prediction, once in the target)."""
    target = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    target[:, :2] = 1  # 128 foreground voxels per sample
    onehot = torch.nn.functional.one_hot(target, 2).movedim(-1, 1).float()
    logits = torch.stack([onehot[0], 1 - onehot[1]]) * 100 - 50
    assert weighted_dice_loss(logits, target, form="per_sample_linear").item() == pytest.approx(0.5, abs=1e-5)
    fg, bg = 128, 384
    pooled = 1 - np.mean([2 * fg / (2 * fg + fg + (512 - fg)), 2 * bg / (2 * bg + bg + (512 - bg))])
    assert weighted_dice_loss(logits, target).item() == pytest.approx(pooled, abs=1e-5)
    assert weighted_dice_loss(logits, target, form="pooled_squared").item() == pytest.approx(pooled, abs=1e-5)
    # voxel weights count in both forms: weight 0 on sample 1 leaves only the perfect sample
    # (per sample, a sample without weighted voxels scores Dice 1 through the smoothing)
    w = torch.stack([torch.ones(8, 8, 8), torch.zeros(8, 8, 8)])
    for form in ("pooled_squared", "per_sample_linear"):
        assert weighted_dice_loss(logits, target, w, form=form).item() == pytest.approx(0.0, abs=1e-4), form
    with pytest.raises(ValueError, match="unknown Dice form"):
        weighted_dice_loss(logits, target, form="cubed")
