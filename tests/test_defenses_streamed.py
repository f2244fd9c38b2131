"""Backdoor defences on streamed (ImageFolder) data and the per-class training holdout: the
representations read batch by batch against a one-image-at-a-time reference, one class in memory
at a time, the original's layer per model, the holdout against a brute-force choice, and a whole
run with spectral signatures, activation clustering, Neural Cleanse and retraining on streamed
data."""

from __future__ import annotations

import torch

from test_folder_data import folder_spec, make_folder_dataset
from tradeoff.backdoor_defenses import spectral
from tradeoff.backdoor_defenses.common import representation_module, representations
from tradeoff.config.build import load_spec
from tradeoff.core.errors import TradeoffError
from tradeoff.data import ImageSet, load_data
from tradeoff.data.folder import eval_transform
from tradeoff.data.imageset import hold_out_per_class
from tradeoff.models.base import build_model
from tradeoff.pipeline.experiment import run_experiment


def test_streamed_representations_match_images_read_one_by_one(tmp_path):
    """Batched, streamed representations of a class equal the model's features of the same files
    decoded and centre-cropped one at a time (the evaluation transform, not the training one)."""
    make_folder_dataset(tmp_path, "imagenet", per_class=7, size=40)
    train = load_data(folder_spec(tmp_path).data).train
    assert train.train  # the training split augments; the defences must not see that
    model = build_model("small-cnn", (3, 32, 32), 3)
    idx = (train.labels == 1).nonzero().flatten()
    reference = torch.stack([eval_transform(train.read(int(i)), 32) for i in idx]).float() / 255
    got = representations(model, train.take(idx), batch_size=3)
    with torch.no_grad():
        assert torch.allclose(got, model.features(reference), atol=1e-6)


def test_each_class_is_read_on_its_own(tmp_path, monkeypatch):
    """Spectral signatures over every class hold one class's representations at a time."""
    sizes = []
    original = spectral.representations

    def recording(model, images, *args, **kwargs):
        sizes.append(len(images))
        return original(model, images, *args, **kwargs)

    monkeypatch.setattr(spectral, "representations", recording)
    make_folder_dataset(tmp_path, "imagenet", per_class=6, size=36)
    spec = folder_spec(tmp_path)
    spec.train.steps = 1
    spec.eval.adversarial = False
    spec.backdoor_defenses = [{"name": "spectral", "classes": "all", "retrain": False}]
    run = run_experiment(spec, show_progress=False)
    labels = run.data.train.labels
    assert sorted(sizes) == sorted(int((labels == c).sum()) for c in range(3))
    assert run.metrics["spectral_removed"] > 0


def test_models_name_the_layer_the_original_reads():
    """CIFAR's pre-activation ResNet: the output of the last stage's second unit (the original's
    unit_3_1: 8x8x64 = 4096 values after the residual add); ResNet-50: the first bottleneck of
    its last stage (torchvision's layer4[0]); other models: the penultimate features."""
    torch.manual_seed(0)
    model = build_model("preact-resnet", (3, 32, 32), 10).eval()
    x = torch.rand(2, 3, 32, 32)
    images = ImageSet(x, torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        by_hand = model.features[:14](x)  # standardise, stem conv, 5 + 5 units, then unit_3_0 and unit_3_1
    assert by_hand.shape == (2, 64, 8, 8)
    assert torch.allclose(representations(model, images), by_hand.flatten(1), atol=1e-6)
    resnet = build_model("resnet50", (3, 64, 64), 10)
    assert representation_module(resnet, None) is resnet.features[8][0]
    assert resnet.features[8][0].conv3.out_channels == 2048
    small = build_model("small-cnn", (1, 28, 28), 10)
    assert representation_module(small, None) is small.features


def test_holdout_is_the_last_images_of_every_class():
    """The held-out images are each class's last N in file order (brute force per class); the
    rest keeps its order; a class left with nothing is one clear error."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (60,), generator=g)
    images = ImageSet(torch.arange(60.0).view(60, 1, 1, 1), y)
    rest, held = hold_out_per_class(images, 3, 4)
    expected = sorted(i for c in range(4) for i in (y == c).nonzero().flatten().tolist()[-3:])
    assert held.x.flatten().long().tolist() == expected
    assert rest.x.flatten().long().tolist() == [i for i in range(60) if i not in expected]
    try:
        hold_out_per_class(images, int(torch.bincount(y).min()), 4)
    except TradeoffError as e:
        assert "nothing to train on" in str(e)
    else:
        raise AssertionError("a class left without training images must be refused")


def test_whole_run_of_every_defense_on_streamed_data(tmp_path):
    """A streamed run with a per-class holdout trains on the rest, and spectral signatures (with
    retraining), activation clustering and Neural Cleanse (with unlearning) all complete; Neural
    Cleanse uses the held-out training images and measures on the whole validation split."""
    make_folder_dataset(tmp_path, "imagenet", per_class=12, size=36)
    spec = load_spec(None, {
        "data": {"dataset": "imagenet", "root": str(tmp_path), "image_size": 32, "workers": 0, "holdout_per_class": 3},
        "poison": {"method": "dirty-label", "fraction_of_training_set": 0.2, "target": 1},
        "model": {"name": "small-cnn"}, "train": {"steps": 2, "batch_size": 8}, "eval": {"adversarial": False},
        "backdoor_defenses": [
            {"name": "spectral", "retrain": True},
            {"name": "activation-clustering", "retrain": False},
            {"name": "neural-cleanse", "labels": "all", "epochs": 1, "unlearn_epochs": 1, "batch_size": 8,
             "unlearn_batch_size": 8}]})
    run = run_experiment(spec, out_dir=tmp_path / "runs", show_progress=False)
    m = run.metrics
    assert m["train_images"] == 3 * (12 - 3)
    poisons_in_target = int(run.data.poison_mask[run.data.train.labels == run.data.backdoor_target.label].sum())
    assert m["spectral_removed"] == poisons_in_target + 1  # the paper's rule: poisons + 1
    assert m["spectral_accuracy_after"] is not None and m["clustering_removed"] > 0
    assert m["cleanse_clean_data"] == "9 held-out training images"
    assert m["cleanse_measured_images"] == len(run.data.test) == 3 * 4
    assert 0 <= m["cleanse_backdoor_success_rate_after"] <= 1
    assert 0 <= m["spectral_der"] <= 1 and 0 <= m["cleanse_der"] <= 1  # retraining's and unlearning's DER
    assert m["spectral_backdoor_robust_accuracy_after"] is not None and not [k for k in m if k.endswith("_error")]
    assert (tmp_path / "runs" / spec.name / "cleanse_model.safetensors").is_file()
