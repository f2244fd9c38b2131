"""Streamed folder-per-class datasets ('imagefolder', 'imagenet') and the ResNet-50 checkpoint
mapping: layout, transforms against torchvision, on-the-fly poisoning against a hand-stamped
reference, the rank partition of batches, an end-to-end run, and memory that does not grow
with the number of images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tradeoff.config.build import load_spec
from tradeoff.core.errors import TradeoffError
from tradeoff.data import load_data
from tradeoff.data.folder import FolderSet, decode, eval_transform, random_resized_box, resize, train_transform
from tradeoff.data.generated import write_image_folder
from tradeoff.poisoning import plan_poison
from tradeoff.triggers import make_trigger

CLASSES = ("ant", "bee", "cat")


def make_folder_dataset(root: Path, name: str, per_class: int, size: int, val_classes=CLASSES, seed=0) -> Path:
    """JPEGs of varying sizes under root/name/{train,val}/<class>/; each class has its own tint."""
    write_image_folder(root / name, CLASSES, per_class, size=(size, size * 3 // 2), seed=seed, val_classes=val_classes)
    return root


def folder_spec(root: Path, **data) -> object:
    raw = {"data": {"dataset": "imagenet", "root": str(root), "image_size": 32, "workers": 0, **data},
           "poison": {"target": 1}, "model": {"name": "small-cnn"}}
    return load_spec(None, raw)


def test_layout_labels_and_missing_folder(tmp_path):
    """Classes are the sorted train sub-folders and every file's label is its folder's index
    (reference: os.walk); val may hold fewer classes; a missing folder is one clear error."""
    make_folder_dataset(tmp_path, "imagenet", per_class=4, size=40, val_classes=("cat", "ant"))
    bundle = load_data(folder_spec(tmp_path).data)
    assert bundle.streamed and bundle.num_classes == 3 and bundle.shape == (3, 32, 32)
    for split, dataset in (("train", bundle.train), ("val", bundle.test)):
        expected = sorted((f"{cls}/{f}", sorted(CLASSES).index(cls))
                          for cls in os.listdir(tmp_path / "imagenet" / split)
                          for f in os.listdir(tmp_path / "imagenet" / split / cls))
        got = sorted((p.decode(), int(t)) for p, t in zip(dataset.paths, dataset.targets))
        assert got == expected
    with pytest.raises(TradeoffError, match="imagefolder not found"):
        load_data(load_spec(None, {"data": {"dataset": "imagefolder", "root": str(tmp_path)}}).data)
    # data.folder points 'imagefolder' at any folder
    other = load_data(folder_spec(tmp_path, dataset="imagefolder", folder="imagenet").data)
    assert len(other.train) == len(bundle.train)


def test_eval_transform_matches_torchvision(tmp_path):
    """Resize-short-side + centre crop equals torchvision's Resize(round(S*256/224)) + CenterCrop(S)
    on the same images within one grey level (uint8 rounding)."""
    from torchvision.transforms import v2

    make_folder_dataset(tmp_path, "imagenet", per_class=3, size=50)
    for path in sorted((tmp_path / "imagenet" / "train").rglob("*.jpg")):
        img = decode(str(path))
        ours = eval_transform(img, 32)
        ref = v2.CenterCrop(32)(v2.Resize(37, antialias=True)(img.float() / 255))
        assert ours.shape == (3, 32, 32)
        assert (ours.float() / 255 - ref).abs().max() <= 1 / 255 + 1e-6


def test_random_resized_box_follows_its_definition():
    """Every random-resized crop lies inside the image and covers 8-100% of its area with an
    aspect ratio in [3/4, 4/3] (brute-force check of the definition over many draws)."""
    torch.manual_seed(0)
    for h, w in ((300, 200), (64, 64), (50, 400)):
        for _ in range(300):
            top, left, ch, cw = random_resized_box(h, w)
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
            if (h, w) != (50, 400):  # extreme shapes may fall back to the central crop
                assert 0.08 * h * w - h - w <= ch * cw <= h * w
                assert 3 / 4 - 0.05 <= cw / ch <= 4 / 3 + 0.05


def test_train_transform_without_flip_is_the_resized_crop_alone():
    """flip=False: the training transform is the random-resized crop of the same draws, never
    mirrored (against the crop computed by hand from the same generator state); with flips on,
    some of 40 draws are the mirrored crop."""
    image = torch.rand(3, 40, 50)
    mirrored = 0
    for seed in range(40):
        top, left, ch, cw = random_resized_box(40, 50, generator=torch.Generator().manual_seed(seed))
        crop = resize(image[:, top:top + ch, left:left + cw], (16, 16))
        assert torch.equal(train_transform(image, 16, torch.Generator().manual_seed(seed), flip=False), crop)
        flipped = train_transform(image, 16, torch.Generator().manual_seed(seed))
        assert torch.equal(flipped, crop) or torch.equal(flipped, crop.flip(-1))
        mirrored += not torch.equal(flipped, crop)
    assert 0 < mirrored < 40


def test_poisoning_is_applied_on_the_fly_before_the_transform(tmp_path):
    """A poisoned index reads as transform(image with a 3x3 white square stamped at its own
    resolution, bottom-right) with the target label (dirty-label); other indices read unchanged.
    Reference: numpy slice assignment on the decoded pixels. The dataset holds no pixels."""
    make_folder_dataset(tmp_path, "imagenet", per_class=6, size=40)
    spec = load_spec(None, {"data": {"dataset": "imagenet", "root": str(tmp_path), "image_size": 32,
                                     "workers": 0, "augment": False},
                            "poison": {"method": "dirty-label", "target": 1, "fraction_of_training_set": 0.25}})
    bundle = load_data(spec.data)
    train: FolderSet = bundle.train
    trigger = make_trigger(spec.trigger, bundle.shape)
    plan = plan_poison(train.targets, spec.poison, trigger, bundle.num_classes, spec.seed)
    train = train.poisoned(plan, trigger)
    assert len(plan.indices) == round(0.25 * len(train))
    for i in range(len(train)):
        x, label = train[i]
        pixels = np.asarray(decode(os.path.join(train.base, train.paths[i].decode())).permute(1, 2, 0)).copy()
        if plan.mask[i]:
            pixels[-3:, -3:, :] = 255
            assert label == 1
        else:
            assert label == int(train.targets[i])
        ref = eval_transform(torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), 32)
        assert torch.equal(x, ref)
    held = [v for v in vars(train).values() if isinstance(v, (np.ndarray, torch.Tensor))]
    assert sum(v.nbytes for v in held) < 100 * len(train)  # index arrays only


def test_streamed_batches_split_each_global_batch_across_ranks(tmp_path):
    """With 1 and 2 ranks, the streamed batch source visits each global batch of the epoch's
    permutation (reference: tradeoff.train.epoch_permutation), the ranks' slices partition it,
    and last_global_size is that batch's size."""
    from tradeoff.data.batches import epoch_permutation

    make_folder_dataset(tmp_path, "imagenet", per_class=4, size=36)
    train = load_data(folder_spec(tmp_path).data).train
    n, bs = len(train), 5
    perm = epoch_permutation(n, 3, 1)
    label_of = {int(i): int(train.targets[i]) for i in range(n)}
    slices = {}
    for rank in range(2):
        source = train.batches(bs, seed=3, device="cpu", rank=rank, world=2)
        slices[rank] = [(yb.tolist(), source.last_global_size) for _, yb in source.epoch(1)]
    single = train.batches(bs, seed=3, device="cpu")
    whole = [(xb, yb.tolist(), single.last_global_size) for xb, yb in single.epoch(1)]
    assert len(whole) == single.steps_per_epoch == -(-n // bs)
    for k, (xb, labels, size) in enumerate(whole):
        expected = [label_of[int(i)] for i in perm[k * bs:(k + 1) * bs]]
        assert labels == expected and size == len(expected)
        assert xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
        if k < len(slices[0]):
            assert slices[0][k][0] == expected[0::2] and slices[1][k][0] == expected[1::2]
            assert slices[0][k][1] == size


def test_streamed_augmentation_is_the_same_in_any_process_and_after_a_resume(tmp_path):
    """Each training image's crop and flip come from its own (seed, epoch, image) draw: the batches
    are identical with 0 and 2 loader processes, and an epoch started at batch k (a resume) gives
    the uninterrupted epoch's batches from k on."""
    make_folder_dataset(tmp_path, "imagenet", per_class=4, size=36)
    train = load_data(folder_spec(tmp_path).data).train
    train.workers = 0
    in_process = [(xb, yb) for xb, yb in train.batches(5, seed=3, device="cpu").epoch(1)]
    train.workers = 2
    source = train.batches(5, seed=3, device="cpu")
    with_workers = list(source.epoch(1))
    resumed = list(source.epoch(1, first=2))
    assert len(in_process) == len(with_workers) > 2
    for (xa, ya), (xb, yb) in zip(in_process, with_workers):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(in_process[2:], resumed, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other_epoch = [xb for xb, _ in train.batches(5, seed=3, device="cpu").epoch(2)]
    assert not torch.equal(other_epoch[0], in_process[0][0])  # a new epoch draws anew


def test_end_to_end_run_on_a_generated_folder(tmp_path):
    """The ImageNet path runs: generated JPEGs, on-the-fly poisoning, a loader worker, small-cnn at
    32 px, one step, evaluation on every val image, a finished run folder."""
    from tradeoff.pipeline.experiment import run_experiment

    make_folder_dataset(tmp_path / "data", "imagenet", per_class=8, size=40)
    spec = folder_spec(tmp_path / "data", workers=1)
    spec.train.steps, spec.train.batch_size = 1, 8
    spec.name = "folder"
    outcome = run_experiment(spec, tmp_path / "runs", show_progress=False)
    m = json.loads((tmp_path / "runs" / "folder" / "metrics.json").read_text())
    assert m["test_images"] == 3 * 2 and m["train_steps"] == 1 and m["poisoned_images"] == 4
    assert 0 <= m["accuracy"] <= 1 and m["adversarial_robustness"] is not None
    assert outcome.run_dir == tmp_path / "runs" / "folder"


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from test_folder_data import folder_spec, make_folder_dataset
    from pathlib import Path
    from tradeoff.pipeline.experiment import run_experiment
    peaks = []
    for per_class in (4, 12, 48):  # the first run warms up (imports, allocator pools)
        root = make_folder_dataset(Path(sys.argv[2]) / str(per_class), "imagenet", per_class, size=256)
        spec = folder_spec(root)
        spec.train.epochs, spec.train.batch_size, spec.eval.adversarial = 1, 24, False
        run_experiment(spec, None, show_progress=False)
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(peaks))
""")


def test_memory_stays_flat_as_the_folder_grows(tmp_path):
    """Peak RSS after a full epoch + evaluation over 36 and then 144 JPEGs of 256-384 px (after a
    warm-up run): growing the dataset 4x adds less than 8 MB, where keeping the extra 108 decoded
    images would add about 30 MB (as uint8; 4x that as floats)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(Path(__file__).parent), str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    _, small, large = json.loads(out.stdout.strip().splitlines()[-1])
    assert large - small < 8, (small, large)


def test_torchvision_resnet50_checkpoint_maps_onto_our_layout(tmp_path):
    """A torchvision-format ResNet-50 state dict (conv1.*, layer1.*, fc.*) loads into our
    FeatureClassifier: same logits as torchvision's model on normalised input (reference:
    torchvision itself); a 1000-class head is left out for a 3-class model while every other
    weight loads; DDP's 'module.' prefix is accepted."""
    from torchvision.models import resnet50

    from tradeoff.models import model_for

    torch.manual_seed(0)
    tv = resnet50(num_classes=3).eval()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "tv.pth"
    torch.save({f"module.{k}": v for k, v in tv.state_dict().items()}, path)
    spec = load_spec(None, {"model": {"name": "resnet50", "checkpoint": str(path)}})
    ours = model_for(spec, (3, 64, 64), 3, torch.device("cpu")).eval()
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv((x - mean) / std), rtol=1e-4, atol=1e-4)

    big = resnet50(num_classes=1000)
    torch.save(big.state_dict(), path)
    ours = model_for(spec, (3, 64, 64), 3, torch.device("cpu"))
    state = ours.state_dict()
    assert torch.equal(state["features.1.weight"], big.conv1.weight)
    assert torch.equal(state["features.8.2.conv3.weight"], big.layer4[2].conv3.weight)
    assert state["classifier.weight"].shape == (3, 2048)
