"""Pixel-exact trigger placement, checked against hand-written expected images."""

import numpy as np
import pytest
import torch

from tradeoff.config import section

from tradeoff.errors import TradeoffError

from tradeoff.triggers import make_trigger, sticker_pattern


def test_mnist_sticker_is_a_white_3x3_square_in_the_bottom_right_corner():
    """The paper's MNIST trigger: pixels 25..27 of rows and columns set to 1, nothing else changed."""
    x = torch.rand(4, 1, 28, 28) * 0.5
    out = make_trigger(section("trigger", kind="sticker", pattern="square", size=3), (1, 28, 28)).apply(x)
    expected = x.clone()
    expected[:, :, 25:28, 25:28] = 1.0
    assert torch.equal(out, expected)


def test_cifar_x_sticker_two_pixels_in_from_the_corner():
    """The CIFAR trigger: the X pattern [[1,0,1],[0,1,0],[1,0,1]] on all channels, rows/cols 27..29."""
    x = torch.full((2, 3, 32, 32), 0.5)
    out = make_trigger(section("trigger", kind="sticker", pattern="x", size=3, offset=2), (3, 32, 32)).apply(x)
    expected = x.clone()
    expected[:, :, 27:30, 27:30] = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    assert torch.equal(out, expected)


@pytest.mark.parametrize("corner,rows,cols", [("top-left", slice(1, 3), slice(1, 3)),
                                              ("top-right", slice(1, 3), slice(5, 7)),
                                              ("bottom-left", slice(5, 7), slice(1, 3)),
                                              ("bottom-right", slice(5, 7), slice(5, 7))])
def test_each_corner_with_offset(corner, rows, cols):
    """A 2x2 sticker with offset 1 lands exactly in the named corner of an 8x8 image."""
    x = torch.zeros(1, 1, 8, 8)
    trig = make_trigger(section("trigger", size=2, offset=1, eval_corner=corner), (1, 8, 8))
    expected = torch.zeros(1, 1, 8, 8)
    expected[:, :, rows, cols] = 1
    assert torch.equal(trig.apply(x), expected)


def test_random_corner_uses_each_images_own_corner():
    """Per-image corners: image i is stamped in corner[i], checked against single-corner stamps."""
    spec = section("trigger", size=2, corner="random")
    trig = make_trigger(spec, (1, 6, 6))
    corners = trig.training_corners(64, torch.Generator().manual_seed(0))
    assert set(corners.tolist()) == {0, 1, 2, 3}
    x = torch.rand(64, 1, 6, 6) * 0.5
    out = trig.apply(x, corners)
    for c in range(4):
        sel = corners == c
        single = trig.apply(x[sel], torch.full((int(sel.sum()),), c))
        assert torch.equal(out[sel], single)


def test_watermark_is_additive_with_amplitude_and_clipped():
    """x' = clip(x + a * P) inside a 2-pixel border, with P a fixed seeded 0/1 pattern (not blending)."""
    spec = section("trigger", kind="watermark", amplitude=64 / 255, border=2, pattern_seed=3)
    trig = make_trigger(spec, (3, 12, 12))
    x = torch.rand(5, 3, 12, 12)
    out = trig.apply(x)
    pattern = trig._base_pattern()
    assert set(pattern.unique().tolist()) <= {0.0, 1.0}
    inside = torch.zeros(3, 12, 12)
    inside[:, 2:10, 2:10] = 1
    expected = (x + 64 / 255 * pattern * inside).clamp(0, 1)
    assert torch.allclose(out, expected)
    assert torch.equal(out[:, :, :2], x[:, :, :2])  # the border is untouched
    again = make_trigger(spec, (3, 12, 12)).apply(x)
    assert torch.equal(out, again)  # the seeded pattern is fixed


def test_watermark_from_a_user_pattern_file(tmp_path):
    """A user-supplied .npy pattern is used as P."""
    p = np.zeros((8, 8), dtype=np.float32)
    p[4, 4] = 1
    np.save(tmp_path / "p.npy", p)
    trig = make_trigger(section("trigger", kind="watermark", amplitude=0.5, border=1,
                                    pattern_file=str(tmp_path / "p.npy")), (1, 8, 8))
    out = trig.apply(torch.zeros(1, 1, 8, 8))
    expected = torch.zeros(1, 1, 8, 8)
    expected[0, 0, 4, 4] = 0.5
    assert torch.equal(out, expected)


def test_channel_trigger_zeroes_only_the_blue_channel_in_the_patch():
    x = torch.full((2, 3, 10, 10), 0.7)
    out = make_trigger(section("trigger", kind="channel", size=3, channel=2), (3, 10, 10)).apply(x)
    expected = x.clone()
    expected[:, 2, 7:10, 7:10] = 0
    assert torch.equal(out, expected)


def test_impossible_triggers_are_clear_errors():
    with pytest.raises(TradeoffError, match="does not fit"):
        make_trigger(section("trigger", size=29), (1, 28, 28))
    with pytest.raises(TradeoffError, match="channel"):
        make_trigger(section("trigger", kind="channel", channel=2), (1, 28, 28))
    with pytest.raises(TradeoffError, match="pattern"):
        sticker_pattern("heart", 3)
