"""The test set as a backdoor defence sees it: sealed. A defence receives its run with
``run.data.test`` replaced by :class:`SealedTestSet`, whose every use raises one sentence, and
reaches the test set only through ``run.evaluation``, a :class:`TestEvaluation`: the pipeline's
evaluation of a model the defence hands over (accuracy, backdoor success, robust accuracy on
triggered inputs, with the run's evaluation attack where asked), and, for an input-level
detector, its scores on the clean and the triggered test images. No defence can look at a test
image's label or at test-set attack success before it has fixed its model, its thresholds and
its hyper-parameters; the numbers it reports afterwards are the pipeline's.

The one exception is explicit: Neural Cleanse's ``clean_data: test-split`` (the original code's
fallback for runs without a training holdout) takes a seeded share of the test set as the
defender's data through :meth:`TestEvaluation.split`, and measures on the rest."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from tradeoff.core.errors import TradeoffError
from tradeoff.evaluation.metrics import evaluate
from tradeoff.records.handoff import TrainedRun

SEALED = ("backdoor defences never see the test set: use the defender's held-out training images "
          "(data.holdout_per_class) and hand the model to run.evaluation to be measured.")


class SealedTestSet:
    """Stands where a defence would find the test set; any use of it raises."""

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)  # copy, pickle and repr probes are answered as for any object
        raise TradeoffError(SEALED)

    def __len__(self):
        raise TradeoffError(SEALED)

    def __iter__(self):
        raise TradeoffError(SEALED)

    def __getitem__(self, index):
        raise TradeoffError(SEALED)


class TestEvaluation:
    """The pipeline's measurement of models on a run's test set (``images``: the whole test set,
    or what a ``test-split`` leaves to measure)."""

    __test__ = False  # not a pytest class

    def __init__(self, run: TrainedRun, images=None):
        self._run = run
        self._images = run.data.test if images is None else images

    def __len__(self) -> int:
        return len(self._images)

    def measure(self, model, adversarial: bool = False, show_progress: bool = False) -> dict:
        """``evaluate`` of ``model`` with the run's trigger, target and evaluation spec; without
        ``adversarial``, no adversarial or certified evaluation."""
        run = self._run
        spec = run.spec.eval if adversarial else dataclasses.replace(run.spec.eval, adversarial=False,
                                                                      certified_eps=None)
        return evaluate(model, self._images, run.data.trigger, run.data.backdoor_target, spec, run.device,
                        show_progress=show_progress)

    def scores(self, score: Callable[[torch.Tensor], torch.Tensor], batch_size: int,
               triggered: bool = False) -> torch.Tensor:
        """``score(images)`` of every clean test image, or (``triggered``) of every test image whose
        label is not its backdoor target, stamped with the run's trigger: what an input-level
        detector fixed beforehand says of them, on the CPU."""
        data, out = self._run.data, []
        for xb, yb in self._images.loader(batch_size, device=self._run.device):
            if triggered:
                xb = data.trigger.apply(xb[yb != data.backdoor_target.of(yb)])
            if len(xb):
                out.append(score(xb).cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def split(self, fraction: float, seed: int) -> tuple[object, "TestEvaluation"]:
        """(the defender's clean data, the evaluation of what is left): a seeded split of the test
        set, for Neural Cleanse's explicit ``clean_data: test-split`` only."""
        perm = torch.randperm(len(self._images), generator=torch.Generator().manual_seed(seed + 2))
        cut = int(round(fraction * len(self._images)))
        if cut < 1 or cut >= len(self._images):
            raise TradeoffError(f"holdout_fraction {fraction} leaves no images on one side of a "
                                f"{len(self._images)}-image test set.")
        return (self._images.take(perm[:cut].sort().values),
                TestEvaluation(self._run, self._images.take(perm[cut:].sort().values)))


def sealed(run: TrainedRun) -> TrainedRun:
    """``run`` as a defence receives it: the same model, record, holdout and artifacts, the test set
    sealed, ``run.evaluation`` the pipeline's measurement on it."""
    evaluation = TestEvaluation(run)
    return dataclasses.replace(run, data=dataclasses.replace(run.data, test=SealedTestSet()), evaluation=evaluation)
