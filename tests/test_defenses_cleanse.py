"""Neural Cleanse: the MAD anomaly index against a hand computation, batched reverse-engineering
against one-label-at-a-time runs, and detection + unlearning on a hand-built backdoored model."""

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from tradeoff.backdoor_defenses.cleanse import CleanseOptions, anomaly_indices, reverse_engineer, stamp, unlearn
from tradeoff.data import ImageSet


def test_anomaly_index_by_hand():
    """|x - median| / (1.4826 * median(|x - median|)), computed with numpy."""
    norms = torch.tensor([3.0, 20.0, 22.0, 18.0, 25.0, 19.0, 21.0, 23.0, 24.0, 17.0])
    x = norms.double().numpy()
    med = np.median(x)
    mad = 1.4826 * np.median(np.abs(x - med))
    np.testing.assert_allclose(anomaly_indices(norms).numpy(), np.abs(x - med) / mad, rtol=1e-9)


def test_stamp_formula():
    """x' = (1 - m) x + m p, per label and image, by explicit loops over a tiny batch."""
    g = torch.Generator().manual_seed(0)
    x, m, p = torch.rand(3, 2, 4, 4, generator=g), torch.rand(2, 1, 1, 4, 4, generator=g), torch.rand(2, 1, 2, 4, 4, generator=g)
    out = stamp(x[None], m, p)
    for k in range(2):
        for i in range(3):
            assert torch.allclose(out[k, i], (1 - m[k, 0]) * x[i] + m[k, 0] * p[k, 0])


class RegionModel(nn.Module):
    """Label k's logit is a gain times the sum of the pixels of its own region; label 0's region is
    a 2x2 corner patch with a large gain (a planted backdoor), the others are 4x4 blocks."""

    def __init__(self):
        super().__init__()
        w = torch.zeros(4, 8, 8)
        w[0, 6:, 6:] = 6.0
        for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0)], start=1):
            w[k, r:r + 4, c:c + 4] = 1.0
        self.weight = nn.Parameter(w.flatten(1))

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def test_batched_equals_one_label_at_a_time():
    """Optimising all labels in one batched pass gives the same triggers as separate passes."""
    model = RegionModel()
    x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.3
    opts = CleanseOptions(epochs=3, batch_size=20)
    images = ImageSet(x, torch.zeros(len(x), dtype=torch.long))
    together = reverse_engineer(model, images, [0, 1, 2, 3], opts, seed=5)
    apart = reverse_engineer(model, images, [0, 1, 2, 3], replace(opts, labels_per_pass=1), seed=5)
    assert torch.allclose(together.masks, apart.masks, atol=1e-5)
    assert torch.allclose(together.patterns, apart.patterns, atol=1e-5)


def test_planted_backdoor_label_has_the_smallest_mask_and_unlearning_removes_it():
    """The backdoored label's reversed mask is the smallest; fine-tuning with its stamped images under
    their true labels lowers the stamped images' target predictions."""
    model = RegionModel()
    g = torch.Generator().manual_seed(2)
    x = torch.rand(200, 1, 8, 8, generator=g) * 0.3
    y = 1 + model(x)[:, 1:].argmax(1)  # "true" labels among the clean labels
    rev = reverse_engineer(model, ImageSet(x, y), [0, 1, 2, 3], CleanseOptions(epochs=8, batch_size=50, init_cost=1e-2),
                           seed=0)
    assert bool(rev.reached.all())
    assert int(rev.l1.argmin()) == 0 and rev.l1[0] < 0.5 * rev.l1[1:].min()
    stamped = stamp(x[None], rev.masks[:1, None], rev.patterns[:1, None])[0]
    before = (model(stamped).argmax(1) == 0).float().mean()
    cleaned = unlearn(model, ImageSet(x, y), rev.masks[:1], rev.patterns[:1],
                      CleanseOptions(unlearn_epochs=30, unlearn_lr=1.0, unlearn_fraction=0.5), seed=2)
    after = (cleaned(stamped).argmax(1) == 0).float().mean()
    assert before > 0.99 and after < 0.5
