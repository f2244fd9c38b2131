"""NAD, neural attention distillation (Li et al., ICLR 2021): a teacher is fine-tuned from the
backdoored model on the defender's held-out clean training images (``data.holdout_per_class``),
then the backdoored model is fine-tuned on the same images with cross-entropy plus the distance
between its attention maps and the teacher's.

An attention map of a feature group's output ``a`` (N, C, H, W) is ``mean_c |a_c|^p`` flattened and
L2-normalised per image; the loss per group is ``beta * mean((A_student - A_teacher)^2)``, summed
over the groups. The paper distils the outputs of a wide ResNet's three residual groups (one per
resolution); here a **feature group** is, for every model family, a maximal run of consecutive
modules of ``model.features`` whose outputs keep the same spatial size, and its output is that of
its last module: the residual stages of the pre-activation ResNets and ResNet-50 (one per
resolution, as the paper), and each convolution-ReLU block before its pooling (plus the last pooled
map) in the Madry and small CNNs. One ``beta`` weighs every group (the paper: 500, 1,000, 1,000 for
its three)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.backdoor_defenses.base import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.defender import describe_holdout, holdout_images
from tradeoff.backdoor_defenses.finetune import FineTuneOptions, Tuning, fine_tune
from tradeoff.backdoor_defenses.measure import purification_metrics
from tradeoff.core.errors import TradeoffError
from tradeoff.core.spec import option
from tradeoff.records.handoff import TrainedRun


@dataclass
class NadOptions(FineTuneOptions):  # the student's budget: tune_epochs, tune_lr, ...
    metric_prefix: ClassVar[str] = "nad"
    teacher_epochs: int = option(10, doc="epochs of plain fine-tuning that make the teacher", min=0)
    beta: float = option(1000.0, doc="weight of each feature group's attention distance", min=0)
    power: float = option(2.0, doc="exponent p of the attention map mean_c |a_c|^p", above=0)


def attention_map(activation: torch.Tensor, power: float) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W): ``mean_c |a_c|^p``, L2-normalised per image."""
    return F.normalize(activation.abs().pow(power).mean(1).flatten(1), dim=1)


def attention_loss(student: list, teacher: list, beta: float, power: float) -> torch.Tensor:
    """Sum over feature groups of ``beta * mean((A_s - A_t)^2)`` (teacher maps held fixed)."""
    return sum(beta * (attention_map(s, power) - attention_map(t.detach(), power)).pow(2).mean()
               for s, t in zip(student, teacher))


def feature_groups(model: nn.Module, sample: torch.Tensor) -> list[int]:
    """Indices into ``model.features`` whose outputs end a run of same-resolution 4-D outputs."""
    shapes, x = [], sample[:1]
    with torch.no_grad():
        for module in model.features:
            x = module(x)
            shapes.append(tuple(x.shape[2:]) if x.dim() == 4 else None)
    ends = [i for i, s in enumerate(shapes) if s is not None and (i + 1 == len(shapes) or shapes[i + 1] != s)]
    if not ends:
        raise TradeoffError("backdoor defence nad needs a model whose features have spatial (N, C, H, W) outputs.")
    return ends


def group_outputs(model: nn.Module, x: torch.Tensor, groups: list[int]) -> tuple[torch.Tensor, list]:
    """The logits and the outputs of the feature groups, in one forward pass."""
    outputs = []
    for i, module in enumerate(model.features):
        x = module(x)
        if i in groups:
            outputs.append(x)
    return model.classifier(x), outputs


@BACKDOOR_DEFENSES.register("nad", options=NadOptions)
def nad_defense(run: TrainedRun, opts: NadOptions, log, show_progress) -> dict:
    """Fine-tune a teacher, distil its attention into the backdoored model, measure."""
    clean = holdout_images(run, "nad")
    tuning = Tuning.of(opts)
    start = time.perf_counter()
    teacher = fine_tune(run.model, clean, lambda model, x, y: F.cross_entropy(model(x), y),
                        Tuning(opts.teacher_epochs, tuning.batch_size, tuning.lr, tuning.momentum, tuning.weight_decay),
                        run.spec.seed, show_progress, desc="nad teacher")
    groups = feature_groups(teacher, next(iter(clean.loader(1, device=run.device)))[0])

    def distillation_loss(model, x, y):
        logits, student_maps = group_outputs(model, x, groups)
        with torch.no_grad():
            _, teacher_maps = group_outputs(teacher, x, groups)
        return F.cross_entropy(logits, y) + attention_loss(student_maps, teacher_maps, opts.beta, opts.power)

    tuned = fine_tune(run.model, clean, distillation_loss, tuning, run.spec.seed + 1, show_progress, desc="nad")
    seconds = time.perf_counter() - start
    log(f"nad: teacher {opts.teacher_epochs} epochs, student {opts.tune_epochs} epochs on {describe_holdout(clean)}, "
        f"feature groups {groups}")
    run.add_artifact("nad_model.safetensors", tuned.state_dict())
    return {"nad_clean_data": describe_holdout(clean), "nad_feature_groups": ",".join(f"features.{i}" for i in groups),
            **purification_metrics("nad", run, tuned, seconds, show_progress)}
