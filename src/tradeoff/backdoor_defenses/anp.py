"""Adversarial Neuron Pruning (Wu & Wang, NeurIPS 2021): the neurons that an adversarial
perturbation most easily turns into a backdoor's are the ones to prune.

Every neuron k (a batch-norm channel where the model has batch norm, else a convolution's output
channel: :mod:`tradeoff.models.neurons`) gets a mask m_k in [0, 1] (from 1) on its scale and a
multiplicative perturbation of its scale and bias: scale x (m_k + delta_k), bias x (1 + xi_k),
|delta_k|, |xi_k| <= ``eps``. Each iteration, on a batch of the defender's clean images: the
perturbation starts uniform in [-eps, eps] and takes ``perturb_steps`` SGD steps of size
eps / perturb_steps up the clean loss (clipped back to the bound); then the masks take one SGD step
(``mask_lr``, momentum 0.9) down alpha x CE(unperturbed) + (1 - alpha) x CE(perturbed), clipped to
[0, 1]. As the original, the network runs in train mode there (batch statistics), on a scratch
copy whose weights are not trained. Pruning sets the scale of every neuron whose mask ended below
``threshold`` to zero (``prune_count``: the N lowest instead), the bias kept as the original's
pruning does; nothing is chosen by looking at the test set. Defender data: the held-out clean
training images (``data.holdout_per_class``), in memory or streamed.
"""

from __future__ import annotations

import copy
import functools
import itertools
import time
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.measure import purification_metrics
from tradeoff.core.progress import progress_bar
from tradeoff.core.registry import SyntheticCut
from tradeoff.core.spec import option
from tradeoff.models.mode import model_mode
from tradeoff.models.neurons import NeuronLayer, neuron_kind, neuron_layers, zero_neurons
from tradeoff.records.handoff import TrainedRun


@dataclass
class AnpOptions:
    needs_holdout: ClassVar[bool] = True  # trains or calibrates on data.holdout_per_class only
    metric_prefix: ClassVar[str] = "anp"
    eps: float = option(0.4, doc="bound of the multiplicative perturbation of each neuron's scale and bias", min=0)
    perturb_steps: int = option(1, doc="ascent steps of the perturbation per iteration", min=0)
    alpha: float = option(0.2, doc="trade-off: alpha x clean loss + (1 - alpha) x perturbed loss", min=0, max=1)
    mask_lr: float = option(0.2, doc="SGD learning rate of the neuron masks", above=0)
    mask_momentum: float = option(0.9, doc="SGD momentum of the neuron masks", min=0)
    iterations: int = option(2000, doc="mask-learning iterations (batches of the defender's clean images)", min=1)
    batch_size: int = option(128, doc="mask-learning batch", min=1)
    threshold: float = option(0.2, doc="prune every neuron whose mask ends below this", min=0, max=1)
    prune_count: Optional[int] = option(None, doc="prune this many neurons, the lowest masks, instead of by "
                                                  "threshold", min=1)


@dataclass
class NeuronMasks:
    """Per layer: the masks, and the perturbations of scale and bias, each (channels,)."""

    layers: list[NeuronLayer]
    masks: list[torch.Tensor]
    scale_noise: list[torch.Tensor]
    bias_noise: list[torch.Tensor]

    @classmethod
    def start(cls, layers: list[NeuronLayer], device) -> "NeuronMasks":
        def fresh(fill: float) -> list[torch.Tensor]:
            return [torch.full((layer.channels,), fill, device=device, requires_grad=True) for layer in layers]
        return cls(layers, fresh(1.0), fresh(0.0), fresh(0.0))

    def flat(self) -> torch.Tensor:
        """Every neuron's mask, layer after layer."""
        return torch.cat([m.detach() for m in self.masks])

    def parameters(self, model: nn.Module, perturbed: bool) -> dict[str, torch.Tensor]:
        """The neurons' scales and biases as masked (and perturbed), for ``functional_call``."""
        params = dict(model.named_parameters())
        out = {}
        for layer, mask, d_scale, d_bias in zip(self.layers, self.masks, self.scale_noise, self.bias_noise):
            weight = params[layer.weight_name]
            factor = mask + d_scale if perturbed else mask
            out[layer.weight_name] = weight * factor.view(-1, *([1] * (weight.dim() - 1)))
            if layer.bias_name is not None and perturbed:
                out[layer.bias_name] = params[layer.bias_name] * (1 + d_bias)
        return out


def learn_masks(model: nn.Module, images, opts: AnpOptions, seed: int, show_progress: bool = False) -> NeuronMasks:
    """ANP's mask learning on ``images`` (the defender's clean images): the masks of every neuron
    of ``model`` after ``opts.iterations`` iterations; ``model`` itself is not changed."""
    scratch = copy.deepcopy(model)
    scratch.requires_grad_(False)
    device = next(scratch.parameters()).device
    state = NeuronMasks.start(neuron_layers(scratch), device)
    mask_opt = torch.optim.SGD(state.masks, lr=opts.mask_lr, momentum=opts.mask_momentum)
    noise = state.scale_noise + state.bias_noise
    noise_opt = torch.optim.SGD(noise, lr=opts.eps / max(opts.perturb_steps, 1))
    generator = torch.Generator(device=device).manual_seed(seed)
    batches = images.unaugmented().batches(opts.batch_size, seed, device)
    stream = itertools.chain.from_iterable(batches.epoch(e) for e in itertools.count())
    bar = progress_bar(total=opts.iterations, desc="anp", unit="step", enabled=show_progress)

    def loss(x, y, perturbed: bool) -> torch.Tensor:
        return F.cross_entropy(functional_call(scratch, state.parameters(scratch, perturbed), (x,)), y)

    with model_mode(scratch, True):
        for x, y in itertools.islice(stream, opts.iterations):
            if opts.eps > 0:
                _perturb(noise, noise_opt, functools.partial(loss, x, y, True), opts, generator)
            mask_opt.zero_grad(set_to_none=True)
            robust = loss(x, y, True) if opts.eps > 0 else 0.0
            (opts.alpha * loss(x, y, False) + (1 - opts.alpha) * robust).backward()
            mask_opt.step()
            with torch.no_grad():
                for m in state.masks:
                    m.clamp_(0, 1)
            bar.update(1)
    bar.close()
    return state


def _perturb(noise: list[torch.Tensor], noise_opt, perturbed_loss, opts: AnpOptions, generator) -> None:
    """The perturbation from uniform in [-eps, eps], then ``perturb_steps`` SGD steps up
    ``perturbed_loss()`` (the clean batch's loss under the perturbation), clipped to the bound
    after each."""
    with torch.no_grad():
        for d in noise:
            d.copy_((torch.rand(d.shape, generator=generator, device=d.device) * 2 - 1) * opts.eps)
    for _ in range(opts.perturb_steps):
        noise_opt.zero_grad(set_to_none=True)
        (-perturbed_loss()).backward()
        noise_opt.step()
        with torch.no_grad():
            for d in noise:
                d.clamp_(-opts.eps, opts.eps)


def pruned_neurons(masks: torch.Tensor, opts: AnpOptions) -> torch.Tensor:
    """Indices (into the flat masks) of the neurons to prune: the ``prune_count`` lowest masks
    (ties by index), else every mask below ``threshold``."""
    if opts.prune_count is not None:
        order = torch.sort(masks, stable=True).indices
        return order[:min(opts.prune_count, len(masks))]
    return (masks < opts.threshold).nonzero().flatten()


def prune(model: nn.Module, layers: list[NeuronLayer], flat_indices: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with the neurons at ``flat_indices`` (layer after layer) zeroed."""
    pruned = copy.deepcopy(model)
    start = 0
    flat_indices = flat_indices.cpu()
    for layer in layers:
        chosen = flat_indices[(flat_indices >= start) & (flat_indices < start + layer.channels)] - start
        if len(chosen):
            zero_neurons(pruned, layer, chosen)
        start += layer.channels
    return pruned.eval()


def neuron_names(layers: list[NeuronLayer], flat_indices: torch.Tensor) -> list[str]:
    """``layer:channel`` of each flat index, for the record."""
    names = [f"{layer.name}:{c}" for layer in layers for c in range(layer.channels)]
    return [names[int(i)] for i in flat_indices]


def pruned_list(names: list[str], shown: int = 50) -> str:
    """The pruned neurons for the record, the first ``shown`` of them named (all are in
    ``anp_masks.safetensors``)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return " ".join(names[:shown]) + more


# on generated data: two mask-learning iterations
@BACKDOOR_DEFENSES.register("anp", options=AnpOptions, synthetic=SyntheticCut(options={"iterations": 2}))
def anp_defense(run: TrainedRun, opts: AnpOptions, log, show_progress) -> dict:
    """Learn the neuron masks on the held-out clean images, prune, measure."""
    clean = holdout_images(run, "anp")
    start = time.perf_counter()
    state = learn_masks(run.model, clean, opts, run.spec.seed, show_progress)
    masks = state.flat()
    chosen = pruned_neurons(masks, opts)
    purified = prune(run.model, state.layers, chosen)
    seconds = time.perf_counter() - start
    kind = neuron_kind(run.model)
    log(f"anp: {len(chosen)} of {len(masks)} {kind}s pruned after {opts.iterations} iterations on "
        f"{describe_holdout(clean)}")
    run.add_artifact("anp_model.safetensors", purified.state_dict())
    run.add_artifact("anp_masks.safetensors", {"masks": masks.cpu()})
    return {"anp_clean_data": describe_holdout(clean), "anp_neuron": kind, "anp_neurons": len(masks),
            "anp_pruned": len(chosen), "anp_pruned_neurons": pruned_list(neuron_names(state.layers, chosen)),
            **purification_metrics("anp", run, purified, seconds, show_progress)}
