"""ANP, fine-pruning and plain fine-tuning: on a hand-built network with one planted backdoor
neuron both pruning defences remove that neuron first; what a neuron is per model; ANP's
perturbed forward pass against the layer's weights rescaled by hand; fine-pruning's pruned
channels stay zero through fine-tuning; and the three end to end on real MNIST with a planted
sticker backdoor, in a run and on its finished folder."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_folder_data import make_folder_dataset
from tradeoff.backdoor_defenses import parse_options
from tradeoff.backdoor_defenses.anp import AnpOptions, NeuronMasks, learn_masks, pruned_neurons
from tradeoff.backdoor_defenses.fine_pruning import (
    FinePruningOptions,
    dormant_channels,
    finalise,
    pruned_copy,
)
from tradeoff.backdoor_defenses.finetune import Tuning, fine_tune
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.data import ImageSet
from tradeoff.models.base import build_model
from tradeoff.models.neurons import BATCH_NORM, CONVOLUTION, neuron_kind, neuron_layers
from tradeoff.pipeline.defend import defend_run_folder
from tradeoff.pipeline.experiment import run_experiment

SIZE, TRIGGER_PIXEL, TARGET, BACKDOOR = 5, (4, 4), 0, 3


def planted_network() -> nn.Sequential:
    """A 5x5 one-channel two-class network written by hand: a 5x5 convolution (one output per
    channel) + ReLU, then a linear layer. Channel 0 sums class 0's block (rows 0-1, columns 0-1),
    channel 1 class 1's block (rows 0-1, columns 2-3), channel 2 the whole image's brightness;
    channel 3 is the planted backdoor neuron: weight 10 on the trigger pixel (4, 4), 0.25 on every
    other pixel, bias -1.2, so it is silent on clean images (about 1.05 - 1.2 < 0) and fires on
    triggered ones, and it votes for the target class 0 with weight 5."""
    conv, head = nn.Conv2d(1, 4, SIZE), nn.Linear(4, 2)
    with torch.no_grad():
        conv.weight.zero_(), conv.bias.zero_(), head.bias.zero_()
        conv.weight[0, 0, 0:2, 0:2] = 1.0
        conv.weight[1, 0, 0:2, 2:4] = 1.0
        conv.weight[2, 0] = 0.1
        conv.weight[BACKDOOR, 0] = 0.25
        conv.weight[BACKDOOR, 0][TRIGGER_PIXEL] = 10.0
        conv.bias[BACKDOOR] = -1.2
        head.weight.copy_(torch.tensor([[2.0, 0.0, 0.1, 5.0], [0.0, 2.0, 0.1, -5.0]]))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), head)


def clean_images(n: int = 64, seed: int = 0) -> ImageSet:
    """Half class 0 (its block at 0.8), half class 1, faint noise elsewhere, the trigger pixel dark."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, SIZE, SIZE, generator=g) * 0.05
    y = torch.arange(n) % 2
    x[y == 0, 0, 0:2, 0:2] = 0.8
    x[y == 1, 0, 0:2, 2:4] = 0.8
    x[:, 0][:, TRIGGER_PIXEL[0], TRIGGER_PIXEL[1]] = 0.0
    return ImageSet(x, y)


def stamped(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, 0, TRIGGER_PIXEL[0], TRIGGER_PIXEL[1]] = 1.0
    return x


def test_the_planted_network_is_backdoored():
    """The hand-built network classifies its clean images and sends triggered class-1 images to 0."""
    model, images = planted_network(), clean_images()
    with torch.no_grad():
        assert (model(images.x).argmax(1) == images.y).all()
        assert (model(stamped(images.x[images.y == 1])).argmax(1) == TARGET).all()


def test_anp_masks_the_planted_backdoor_neuron_first():
    """Reference: the planted neuron (built by hand, see :func:`planted_network`). ANP's mask
    learning on clean images only ends with the backdoor neuron's mask the lowest of all neurons
    (convolution channels: the network has no batch norm) and below the 0.2 threshold, the benign
    ones at 1; pruning one neuron by count removes exactly it, and the pruned network no longer
    obeys the trigger."""
    model, images = planted_network(), clean_images()
    opts = AnpOptions(iterations=150, batch_size=32)
    state = learn_masks(model, images, opts, seed=0)
    masks = state.flat()
    assert [layer.name for layer in state.layers] == ["0"] and neuron_kind(model) == CONVOLUTION
    assert int(masks.argmin()) == BACKDOOR
    assert masks[BACKDOOR] < opts.threshold and (masks[:BACKDOOR] > 0.9).all()
    assert pruned_neurons(masks, dataclasses.replace(opts, prune_count=1)).tolist() == [BACKDOOR]
    assert pruned_neurons(masks, opts).tolist() == [BACKDOOR]
    assert torch.equal(model[0].weight, planted_network()[0].weight)  # learning masks leaves the model alone


def test_fine_pruning_prunes_the_planted_backdoor_neuron_first():
    """Reference: the planted neuron. Its activity on clean images is exactly zero, the lowest, so
    it is the first channel pruned (by share and by the accuracy rule, which stops before a benign
    channel costs accuracy); after fine-tuning its weights and bias are still exactly zero, the
    state dict has the model's own names, and the trigger no longer flips class 1."""
    model, images = planted_network(), clean_images()
    opts = FinePruningOptions(prune_fraction=0.25, batch_size=16)
    assert dormant_channels(model, neuron_layers(model)[0], images, opts).tolist() == [BACKDOOR]
    by_accuracy = dormant_channels(model, neuron_layers(model)[0], images,
                                   dataclasses.replace(opts, prune_fraction=None, max_accuracy_drop=0.0))
    assert by_accuracy[0] == BACKDOOR and 0 not in by_accuracy.tolist() and 1 not in by_accuracy.tolist()
    layer = neuron_layers(model)[0]
    pruned = pruned_copy(model, layer, torch.tensor([BACKDOOR]))
    tuned = finalise(fine_tune(pruned, images, lambda m, x, y: F.cross_entropy(m(x), y), Tuning(3, 16, 0.1, 0.9, 5e-4),
                               seed=0), layer)
    assert set(tuned.state_dict()) == set(model.state_dict())
    assert not tuned[0].weight[BACKDOOR].any() and tuned[0].bias[BACKDOOR] == 0
    assert tuned[0].weight[:BACKDOOR].ne(model[0].weight[:BACKDOOR]).any()  # the rest was tuned
    with torch.no_grad():
        assert (tuned(stamped(images.x[images.y == 1])).argmax(1) == 1).all()


def test_anp_perturbs_scale_and_bias_as_written():
    """The perturbed parameters equal weight x (mask + delta) per output channel and bias x
    (1 + xi), computed by hand; without the perturbation only the masked weight changes."""
    model = planted_network()
    state = NeuronMasks.start(neuron_layers(model), "cpu")
    with torch.no_grad():
        state.masks[0].copy_(torch.tensor([1.0, 0.5, 0.25, 0.0]))
        state.scale_noise[0].copy_(torch.tensor([0.1, -0.2, 0.3, -0.4]))
        state.bias_noise[0].copy_(torch.tensor([0.4, 0.0, -0.1, 0.2]))
    got = state.parameters(model, perturbed=True)
    factor = torch.tensor([1.1, 0.3, 0.55, -0.4])
    torch.testing.assert_close(got["0.weight"], model[0].weight * factor[:, None, None, None])
    torch.testing.assert_close(got["0.bias"], model[0].bias * torch.tensor([1.4, 1.0, 0.9, 1.2]))
    assert set(state.parameters(model, perturbed=False)) == {"0.weight"}


def test_a_neuron_is_a_batch_norm_channel_where_there_is_batch_norm():
    """Pre-activation ResNets: every BatchNorm2d's channels; the small CNN: every convolution's."""
    resnet, cnn = build_model("preact-resnet-small", (3, 32, 32), 10), build_model("small-cnn", (1, 28, 28), 10)
    assert neuron_kind(resnet) == BATCH_NORM and neuron_kind(cnn) == CONVOLUTION
    bns = [m for m in resnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [layer.module for layer in neuron_layers(resnet)] == bns
    assert [layer.channels for layer in neuron_layers(cnn)] == [16, 32]


def test_options_defaults_are_the_published_ones():
    """ANP: eps 0.4, alpha 0.2, mask lr 0.2, 2,000 iterations, threshold 0.2; bad values are one sentence."""
    opts = parse_options({"name": "anp"})
    assert (opts.eps, opts.alpha, opts.mask_lr, opts.iterations, opts.threshold, opts.prune_count) == (
        0.4, 0.2, 0.2, 2000, 0.2, None)
    with pytest.raises(Exception, match="backdoor_defenses.anp.alpha must be"):
        load_spec(None, {"backdoor_defenses": [{"name": "anp", "alpha": 2}]})


def test_purifiers_on_a_planted_mnist_sticker_backdoor(mnist_root, one_thread, tmp_path, capsys):
    """Real MNIST, a 10% dirty-label sticker backdoor in a small CNN (tiny budget): in the run,
    fine-pruning lowers the backdoor's success (ANP, 10 iterations pruning its 8 lowest masks, runs
    and prunes 8 convolution channels; at this budget it leaves the success where it was), every
    purifier reports clean accuracy, success, robust accuracy, DER, adversarial robustness under
    the run's evaluation attack before (= the pipeline's) and after, what it cost and its seconds;
    on the finished folder `tradeoff defend` gives the same plain fine-tuning numbers; all three
    are listed with their options."""
    spec = load_spec(None, {
        "data": {"root": mnist_root, "train_subset": 1000, "test_subset": 200, "holdout_per_class": 20},
        "poison": {"method": "dirty-label", "fraction_of_training_set": 0.1},
        "model": {"name": "small-cnn"}, "train": {"steps": 200, "batch_size": 50, "lr": 2e-3},
        "eval": {"adversarial": True, "masking_checks": False, "saliency": False, "attack": {"steps": 2}},
        "backdoor_defenses": [{"name": "fine-pruning", "tune_epochs": 2, "tune_batch_size": 50},
                              {"name": "anp", "iterations": 10, "batch_size": 100, "prune_count": 8},
                              {"name": "fine-tuning", "tune_epochs": 2, "tune_batch_size": 50}]})
    m = run_experiment(spec, tmp_path, show_progress=False, run_name="sticker").metrics
    assert m["backdoor_success_rate"] > 0.9 and m["accuracy"] > 0.8
    for prefix in ("fine_pruning", "anp", "fine_tuning"):
        assert f"{prefix}_error" not in m, m.get(f"{prefix}_error")
        assert m[f"{prefix}_clean_data"] == "200 held-out training images"
        assert m[f"{prefix}_accuracy_before"] == m["accuracy"]
        assert m[f"{prefix}_adversarial_robustness_before"] == m["adversarial_robustness"]
        assert 0 <= m[f"{prefix}_adversarial_robustness_after"] <= 1 and m[f"{prefix}_der"] is not None
        assert m[f"{prefix}_accuracy_lost"] == pytest.approx(m["accuracy"] - m[f"{prefix}_accuracy_after"])
        assert m[f"{prefix}_seconds"] > 0
    assert m["fine_pruning_backdoor_success_rate_after"] < m["fine_pruning_backdoor_success_rate_before"]
    assert m["anp_pruned"] == 8 and m["anp_neuron"] == CONVOLUTION and m["fine_pruning_layer"] == "features.3"

    again = defend_run_folder(tmp_path / "sticker", {"name": "fine-tuning", "tune_epochs": 2, "tune_batch_size": 50},
                              device="cpu", show_progress=False, echo=False)
    for key in ("accuracy_after", "backdoor_success_rate_after", "backdoor_robust_accuracy_after"):
        assert again[f"fine_tuning_{key}"] == m[f"fine_tuning_{key}"]
    assert main(["list", "backdoor-defenses"]) == 0
    listed = capsys.readouterr().out
    assert "prune_count" in listed and "max_accuracy_drop = 0.04" in listed and "fine-tuning" in listed


def test_purifiers_on_streamed_data(tmp_path):
    """Streamed (ImageFolder) data with a per-class holdout: the three purifiers run in the same
    run, read their clean images batch by batch from the held-out files and report every metric."""
    make_folder_dataset(tmp_path, "imagenet", per_class=6, size=36)
    spec = load_spec(None, {
        "data": {"dataset": "imagenet", "root": str(tmp_path), "image_size": 32, "workers": 0, "holdout_per_class": 2},
        "poison": {"target": 1}, "model": {"name": "small-cnn"}, "train": {"steps": 1},
        "eval": {"adversarial": True, "masking_checks": False, "saliency": False, "attack": {"steps": 1}},
        "backdoor_defenses": [{"name": "anp", "iterations": 2, "batch_size": 4},
                              {"name": "fine-pruning", "tune_epochs": 1, "tune_batch_size": 4},
                              {"name": "fine-tuning", "tune_epochs": 1, "tune_batch_size": 4}]})
    run = run_experiment(spec, show_progress=False)
    assert run.data.train.__class__.__name__ == "FolderSet"
    for prefix in ("anp", "fine_pruning", "fine_tuning"):
        assert f"{prefix}_error" not in run.metrics, run.metrics.get(f"{prefix}_error")
        assert run.metrics[f"{prefix}_clean_data"] == "6 held-out training images"
        assert run.metrics[f"{prefix}_adversarial_robustness_after"] is not None
