"""Regularisers that compose with any objective (see :class:`tradeoff.adversarial_defenses.base.Regularized`).

A regulariser is ``(model, inputs) -> scalar``, evaluated on the inputs the objective's loss was
computed on (the adversarial examples under adversarial training).
"""

from __future__ import annotations

import torch

from tradeoff.adversarial_defenses.base import REGULARIZERS


@REGULARIZERS.register("cross-lipschitz")
def cross_lipschitz(model, inputs: torch.Tensor) -> torch.Tensor:
    """Hein & Andriushchenko 2017, as the protocol:
    R = 2 / (K^2 n) * sum_i sum_{l<m} || grad_x f_l(x_i) - grad_x f_m(x_i) ||^2
    over the K logits f and the n inputs, differentiable in the weights (double backpropagation).

    Uses sum_{l<m} ||g_l - g_m||^2 = K sum_l ||g_l||^2 - ||sum_l g_l||^2, so it needs the K
    input-gradients of the batch-summed logits (one backward pass per class; samples are
    independent except through batch norm in training mode, as in the original).
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        n, k = logits.shape
        grads = torch.stack([torch.autograd.grad(logits[:, c].sum(), x, create_graph=True)[0].flatten(1)
                             for c in range(k)])  # (K, n, D)
        pair_sum = k * grads.pow(2).sum() - grads.sum(0).pow(2).sum()
    return 2.0 / (k * k * n) * pair_sum
