"""Spatial adversarial examples (Engstrom et al. 2019, "Exploring the Landscape of Spatial
Robustness"): the worst rotation and translation of each image, found by a grid or by the worst
of k random draws, in batches.

A transformation is (dx, dy, angle): the image is moved by (dx, dy) pixels (x to the right, y
down), then rotated by ``angle`` degrees about its centre, as the reference code does (translate,
then rotate), sampled bilinearly with zeros outside the image: output pixel p (centred pixel
coordinates) takes the input at R(-angle) p - (dx, dy).

The worst case per image is, as in the reference code, the transformation that misclassifies it
with the highest loss, else (none misclassifies it) the one of highest loss; ties go to the first
in the grid's order. Every transformation of a batch goes through one ``affine_grid`` /
``grid_sample`` call per chunk of at most :data:`IMAGES_PER_PASS` transformed images and one
forward pass; no per-image loops.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F

from tradeoff.attacks.pgd import ATTACKS
from tradeoff.core.spec import SpatialSpec

IMAGES_PER_PASS = 8192  # transformed images per forward pass of the search


def grid_parameters(s: SpatialSpec, device=None) -> torch.Tensor:
    """The grid's transformations (T, 3) as (dx, dy, angle), in the reference code's order (dx
    slowest, angle fastest), T = translations^2 * rotations."""
    shifts = torch.linspace(-s.max_translation, s.max_translation, s.translations, dtype=torch.float64)
    angles = torch.linspace(-s.max_rotation, s.max_rotation, s.rotations, dtype=torch.float64)
    if s.translations == 1:
        shifts = torch.zeros(1, dtype=torch.float64)
    if s.rotations == 1:
        angles = torch.zeros(1, dtype=torch.float64)
    grid = [(float(dx), float(dy), float(a)) for dx, dy, a in itertools.product(shifts, shifts, angles)]
    return torch.tensor(grid, dtype=torch.float32, device=device)


def random_parameters(s: SpatialSpec, n: int, draws: int, device=None) -> torch.Tensor:
    """``draws`` transformations per image (n, draws, 3), each parameter uniform over its range
    (the global generator, as PGD's random start)."""
    limits = torch.tensor([s.max_translation, s.max_translation, s.max_rotation], device=device)
    return (torch.rand(n, draws, 3, device=device) * 2 - 1) * limits


def affine_matrices(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``affine_grid``'s (M, 2, 3) matrices (normalised coordinates, corners not aligned) of
    transformations (M, 3) for images of ``height`` x ``width``."""
    dx, dy, angle = params.float().unbind(1)
    radians = angle * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    sx, sy = 2.0 / width, 2.0 / height  # pixels -> normalised units
    # q = S R(-angle) S^-1 p - S t, with R(-angle) = [[cos, sin], [-sin, cos]]
    row_x = torch.stack([cos, sin * sx / sy, -dx * sx], 1)
    row_y = torch.stack([-sin * sy / sx, cos, -dy * sy], 1)
    return torch.stack([row_x, row_y], 1)


def transform(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Image i of x (N, C, H, W) moved and rotated by ``params[i]`` (N, 3)."""
    theta = affine_matrices(params, x.shape[2], x.shape[3]).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _better(wrong, loss, best_wrong, best_loss) -> torch.Tensor:
    """Where (wrong, loss) beats (best_wrong, best_loss): misclassified first, then a higher loss."""
    return (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))


def worst_case(model, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The worst of the transformations ``params`` for each image: (T, 3) tried on every image
    (the grid) or (N, T, 3) per image (random draws). Returns (each image's worst transformation
    (N, 3), whether the model classifies the image correctly under every one tried (N,) bool).
    The model's mode is the caller's; no gradients."""
    n = len(x)
    per_image = params.to(x.device).expand(n, -1, -1) if params.dim() == 2 else params.to(x.device)
    tried = per_image.shape[1]
    best_loss = torch.full((n,), -math.inf, device=x.device)
    best_wrong = torch.zeros(n, dtype=torch.bool, device=x.device)
    best_index = torch.zeros(n, dtype=torch.long, device=x.device)
    chunk = max(1, IMAGES_PER_PASS // max(n, 1))
    with torch.no_grad():
        for start in range(0, tried, chunk):
            p = per_image[:, start:start + chunk]
            t = p.shape[1]
            moved = transform(x[:, None].expand(n, t, *x.shape[1:]).reshape(n * t, *x.shape[1:]), p.reshape(-1, 3))
            logits = model(moved).float()
            labels = y.repeat_interleave(t)
            loss = F.cross_entropy(logits, labels, reduction="none").view(n, t)
            wrong = (logits.argmax(1) != labels).view(n, t)
            key = torch.where(wrong.any(1, keepdim=True), torch.where(wrong, loss, -math.inf), loss)
            index = key.argmax(1, keepdim=True)
            chunk_loss, chunk_wrong = loss.gather(1, index).squeeze(1), wrong.gather(1, index).squeeze(1)
            take = _better(chunk_wrong, chunk_loss, best_wrong, best_loss)
            best_loss = torch.where(take, chunk_loss, best_loss)
            best_wrong = torch.where(take, chunk_wrong, best_wrong)
            best_index = torch.where(take, index.squeeze(1) + start, best_index)
    return per_image[torch.arange(n, device=x.device), best_index], ~best_wrong


def spatial_attack(model, x: torch.Tensor, y: torch.Tensor, s: SpatialSpec, search: str = "grid",
                   draws: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """(each image at its worst transformation, robust under every one tried) over the grid of
    ``s`` (``search`` grid) or ``draws`` random draws per image (``search`` random)."""
    params = grid_parameters(s, x.device) if search == "grid" else random_parameters(s, len(x), draws, x.device)
    chosen, robust = worst_case(model, x, y, params)
    return transform(x.detach(), chosen), robust


ATTACKS.register("spatial", options=SpatialSpec, description="the worst rotation and translation of each "
                 "image over a grid (Engstrom et al. 2019; eval.spatial, the spatial and composite objectives)")(
    spatial_attack)
