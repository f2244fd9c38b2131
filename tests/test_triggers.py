"""Pixel-exact trigger placement, checked against hand-written expected images."""

import numpy as np
import pytest
import torch

from tradeoff.config.build import section
from tradeoff.core.errors import TradeoffError
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


def test_picture_pattern_is_a_fixed_smooth_bright_shape_on_dark():
    """MNIST's watermark stand-in (trigger.pattern: picture): a (C, 28, 28) grey picture in [0, 1],
    the same on every call and every channel; bright (1 at its brightest, a third of the image
    above 0.5) inside, dark (under 0.05) along a 2-pixel frame; smooth: neighbouring pixels differ by
    at most 0.35 (a 0/1 random pattern's neighbours differ by 1 about half the time)."""
    from tradeoff.triggers.watermark import WATERMARK_PATTERNS, random_pattern

    make = WATERMARK_PATTERNS.get("picture")
    p = make((3, 28, 28), 0)
    assert p.shape == (3, 28, 28) and p.dtype == torch.float32
    assert torch.equal(p, make((3, 28, 28), 7))  # deterministic; the seed plays no part
    assert torch.equal(p[0], p[1]) and torch.equal(p[0], p[2])
    assert p.min() >= 0 and p.max() <= 1 and p.max() > 0.95
    frame = torch.ones(28, 28, dtype=torch.bool)
    frame[2:26, 2:26] = False
    assert p[0][frame].max() < 0.05
    assert 0.2 < (p[0] > 0.5).float().mean() < 0.5
    assert p[0, 12:18, 10:18].min() > 0.7  # the middle is bright
    steps = torch.cat([(p[0, 1:] - p[0, :-1]).abs().flatten(), (p[0, :, 1:] - p[0, :, :-1]).abs().flatten()])
    assert steps.max() <= 0.35
    noisy = random_pattern((1, 28, 28), 0)[0]
    assert (noisy[1:] - noisy[:-1]).abs().mean() > 0.4


def test_mnist_picture_watermark_is_added_over_the_whole_image():
    """trigger {watermark, pattern: picture, amplitude: 0.3, border: 0} (MNIST's Table 2(a) trigger)
    stamps x' = clip(x + 0.3 * P) everywhere, P the generated picture; a user's file replaces it."""
    from tradeoff.triggers.watermark import picture_pattern

    spec = section("trigger", kind="watermark", pattern="picture", amplitude=0.3, border=0)
    x = torch.rand(4, 1, 28, 28)
    out = make_trigger(spec, (1, 28, 28)).apply(x)
    assert torch.allclose(out, (x + 0.3 * picture_pattern((1, 28, 28))).clamp(0, 1))


def test_a_pattern_file_replaces_the_generated_picture(tmp_path):
    p = np.zeros((28, 28), dtype=np.float32)
    p[10, 12] = 1
    np.save(tmp_path / "apple.npy", p)
    spec = section("trigger", kind="watermark", pattern="picture", amplitude=0.2, border=0,
                   pattern_file=str(tmp_path / "apple.npy"))
    out = make_trigger(spec, (1, 28, 28)).apply(torch.zeros(1, 1, 28, 28))
    expected = torch.zeros(1, 1, 28, 28)
    expected[0, 0, 10, 12] = 0.2
    assert torch.allclose(out, expected)


def test_an_unknown_watermark_pattern_is_a_clear_error():
    from tradeoff.config.build import load_spec

    with pytest.raises(TradeoffError, match="pattern"):
        load_spec(None, ["trigger.kind=watermark", "trigger.pattern=apple"])


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
