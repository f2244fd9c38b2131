"""Where a model looks on a triggered image: the share of its input-gradient mass that falls on
the trigger's pixels (the paper's explanation of the trade-off: adversarially trained models rely
on perceptible features, such as a sticker, more than standard ones do).

``trigger_saliency_share``: for the triggered images (stamped at the evaluation corner) of the
masking subset (:func:`tradeoff.evaluation.masking.masking_subset`) whose true label is not the target (with
an all-to-all backdoor, each image's own target: every image), the gradient g = d logit_target / d x
at the triggered image, and per image sum |g| over the trigger's
pixels / sum |g| over all pixels, averaged over the images. The target's logit, not a loss: its
gradient is what pulls the prediction towards the target, and for a linear model it is the
target's weight row, whatever the image. The trigger's pixels are those its stamp changes (mask
or additive part nonzero); a trigger over more than half the image (a watermark) makes the share
meaningless: then the share is None and ``trigger_saliency_note`` says why.

:func:`saliency_maps` keeps the first :data:`FIGURE_IMAGES` of those images and their gradients
for the report's figure (``saliency.safetensors`` in the run folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tradeoff.models.mode import model_mode
from tradeoff.poisoning import BackdoorTarget
from tradeoff.triggers import CORNERS

FILE_NAME = "saliency.safetensors"
FIGURE_IMAGES = 4
GLOBAL_TRIGGER = 0.5  # a trigger covering more than this share of the image has no "pixels of its own"


@dataclass
class Saliency:
    share: Optional[float]  # trigger_saliency_share, None when not meaningful
    note: str  # why share is None ("" otherwise)
    images: int  # the triggered non-target images it averages over
    tensors: dict  # for saliency.safetensors: images, abs_gradients, region (empty without images)

    def metrics(self) -> dict:
        return {"trigger_saliency_share": self.share, "trigger_saliency_note": self.note,
                "trigger_saliency_images": self.images}


def trigger_region(trigger, shape: tuple, device) -> torch.Tensor:
    """The pixels (C, H, W; 1.0 or 0.0) the trigger's test-time stamp changes."""
    stamp = trigger.stamp_for(tuple(shape), device)
    k = CORNERS.index(trigger.eval_corner())
    return ((stamp.mask[k] != 0) | (stamp.add[k] != 0)).float()


def target_logit_gradients(model, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """d logit_target / d x for a batch, ``goal`` each image's target class (each image's logit
    depends on itself only in eval mode, so the gradient of the summed logits is every image's own)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x).float()
        (grad,) = torch.autograd.grad(logits.gather(1, goal[:, None]).sum(), x)
    return grad.detach()


def trigger_saliency(model, images, trigger, target: int | BackdoorTarget, shape: tuple, device,
                     batch_size: int = 500) -> Saliency:
    """The share of input-gradient mass on the trigger's pixels over ``images`` (those whose label
    is not their target, stamped), and the first few images' maps. ``target``: the target class or
    the run's :class:`BackdoorTarget` (all-to-all: each image's own target's logit)."""
    targets = target if isinstance(target, BackdoorTarget) else BackdoorTarget(int(target))
    region = trigger_region(trigger, shape, device)
    covered = float(region.mean())
    if covered > GLOBAL_TRIGGER:
        return Saliency(None, f"the trigger covers {100 * covered:.0f}% of the image: no pixels of its own "
                              "to measure a share on", 0, {})
    shares, kept_x, kept_g = [], [], []
    with model_mode(model, False):
        for xb, yb in images.loader(batch_size, device=device):
            goal = targets.of(yb)
            keep = yb != goal
            xb, goal = trigger.apply(xb[keep]), goal[keep]
            if not len(xb):
                continue
            g = target_logit_gradients(model, xb, goal).abs().flatten(1)
            shares.append((g * region.flatten()).sum(1) / g.sum(1).clamp_min(1e-30))
            if sum(len(k) for k in kept_x) < FIGURE_IMAGES:
                kept_x.append(xb)
                kept_g.append(g.view_as(xb))
    if not shares:
        return Saliency(None, "no triggered test image of a non-target class", 0, {})
    share = torch.cat(shares)
    tensors = {"images": torch.cat(kept_x)[:FIGURE_IMAGES], "abs_gradients": torch.cat(kept_g)[:FIGURE_IMAGES],
               "region": region}
    # rounded like the final training loss: sums over other thread counts differ in the last bits
    return Saliency(round(float(share.mean()), 6), "", len(share), tensors)
