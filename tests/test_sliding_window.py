"""Sliding-window maths, batching, padding, the Gaussian map and post-processing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cogrnet.errors import ConfigError
from cogrnet.inference.sliding_window import (gaussian_importance_map, largest_component,
                                              pad_to_patch, postprocess, predict_volume,
                                              sliding_window_inference, strides_from_overlap,
                                              window_grid, window_starts)
from cogrnet.networks import build_network, network_config


def test_window_starts_reference_formula():
    assert window_starts(112, 112, 18) == [0]
    # LA-sized axis: ceil((183-112)/18)+1 = 5 windows, the last one ends at the border
    assert window_starts(183, 112, 18) == [0, 18, 36, 54, 71]
    assert window_starts(88, 80, 4) == [0, 4, 8]
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(10, 4, 4) == [0, 4, 6] and window_starts(4, 4, 100) == [0]
    with pytest.raises(ConfigError, match="stride 100 is larger than the patch 4"):
        window_starts(10, 4, 100)  # [0, 6] would leave voxels 4 and 5 without a window
    with pytest.raises(ConfigError):
        window_starts(5, 8, 2)
    grid = window_grid((183, 140, 88), (112, 112, 80), (18, 18, 4))
    assert len(grid) == 5 * 3 * 3


def test_strides_from_overlap():
    assert strides_from_overlap((112, 112, 80), 0.5) == (56, 56, 40)
    assert strides_from_overlap((3, 3, 3), 0.9) == (1, 1, 1)
    with pytest.raises(ConfigError):
        strides_from_overlap((8, 8, 8), 1.0)


def test_gaussian_importance_map():
    w = gaussian_importance_map((16, 12, 8))
    assert w.shape == (16, 12, 8) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0, abs=1e-6) and w.min() > 0
    assert np.allclose(w, w[::-1, ::-1, ::-1])  # symmetric about the centre
    # separable Gaussian with sigma = patch / 8 along each axis
    line = w[:, 6, 4] / w[:, 6, 4].max()
    x = np.arange(16) - 7.5
    expect = np.exp(-0.5 * (x / 2.0) ** 2)
    assert np.allclose(line, expect / expect.max(), atol=1e-6)


def test_pad_to_patch_and_crop_back():
    x = torch.arange(5 * 6 * 3, dtype=torch.float32).reshape(1, 1, 5, 6, 3)
    padded, crop = pad_to_patch(x, (8, 6, 4))
    assert padded.shape[-3:] == (8, 6, 4)
    assert torch.equal(padded[(..., *crop)], x)
    assert padded[..., 0, :, :].abs().sum() == 0  # zero padding


class Scale(torch.nn.Module):
    """A position-dependent toy predictor: logits = (0, a * x + b * coordinate of z)."""

    def forward(self, x):
        z = torch.linspace(-1, 1, x.shape[-1]).to(x)
        fg = 3.0 * x[:, :1] + z
        return torch.cat([torch.zeros_like(fg), fg], dim=1)


@pytest.mark.parametrize("mode", ["constant", "gaussian"])
def test_batched_equals_one_window_at_a_time(mode):
    torch.manual_seed(0)
    net = build_network(network_config(n_filters=4, dropout=0.0)).eval()
    x = torch.randn(1, 1, 23, 19, 18)
    kw = dict(strides=(7, 3, 2), mode=mode)  # 2 x 2 x 2 windows
    single = sliding_window_inference(x, (16, 16, 16), 1, net, **kw)
    batched = sliding_window_inference(x, (16, 16, 16), 3, net, **kw)
    assert single.shape == (1, 2, 23, 19, 18)
    assert torch.allclose(single, batched, atol=1e-5)
    assert torch.allclose(single.sum(1), torch.ones(1, 23, 19, 18), atol=1e-5)
    assert not single.requires_grad


def test_average_equals_manual_loop():
    """The constant mode is the plain mean of each window's softmax (reference protocol)."""
    x = torch.randn(1, 1, 10, 9, 7)
    pred = Scale()
    roi, st = (6, 5, 4), (3, 2, 2)
    out = sliding_window_inference(x, roi, 3, pred, strides=st)[0]
    acc = torch.zeros(2, 10, 9, 7)
    cnt = torch.zeros(10, 9, 7)
    for cx, cy, cz in window_grid((10, 9, 7), roi, st):
        s = (slice(cx, cx + 6), slice(cy, cy + 5), slice(cz, cz + 4))
        acc[(slice(None),) + s] += torch.softmax(pred(x[(0, slice(None)) + s][None]), 1)[0]
        cnt[s] += 1
    assert torch.allclose(out, acc / cnt, atol=1e-6)


def test_small_volume_is_padded_and_cropped_back():
    x = torch.randn(2, 1, 7, 5, 3)
    out = sliding_window_inference(x, (8, 8, 4), 2, Scale(), overlap=0.5)
    assert out.shape == (2, 2, 7, 5, 3)
    # the toy predictor is a pointwise function of the image plus z position in the window:
    # with one window the result is that function of the padded input, cropped
    padded, crop = pad_to_patch(x, (8, 8, 4))
    want = torch.softmax(Scale()(padded), 1)[(slice(None), slice(None)) + crop]
    assert torch.allclose(out, want, atol=1e-6)


def test_predict_volume_restores_mode_and_shapes():
    net = build_network(network_config(n_filters=4))
    net.train()
    img = np.random.default_rng(0).normal(size=(20, 18, 10)).astype(np.float32)
    prob = predict_volume(net, img, (16, 16, 16), strides=(4, 8, 8), sw_batch_size=2)
    assert prob.shape == (2, 20, 18, 10) and prob.dtype == np.float32
    assert net.training
    prob2 = predict_volume(net, img, (16, 16, 16), strides=(4, 8, 8))
    assert np.allclose(prob, prob2, atol=1e-5)  # eval mode: dropout off, deterministic


def test_largest_component_and_postprocess():
    m = np.zeros((10, 10, 10), bool)
    m[1:4, 1:4, 1:4] = True
    m[6:8, 6:8, 6:8] = True
    m[4, 4, 4] = True  # touches the big cube by a corner: 26-connected
    keep = largest_component(m)
    assert keep[4, 4, 4] and not keep[6, 6, 6] and keep.sum() == 28
    prob = np.stack([1 - m.astype(np.float32), m.astype(np.float32)])
    assert postprocess(prob, nms=True).sum() == 28
    assert postprocess(prob, nms=False).sum() == m.sum()
    assert postprocess(np.stack([np.ones((3, 3, 3)), np.zeros((3, 3, 3))])).sum() == 0
