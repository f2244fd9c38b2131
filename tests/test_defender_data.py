"""Defender-side data only: a backdoor defence gets its run with the test set sealed and measures
through the pipeline's evaluation; defences that train or calibrate on held-out images are refused,
in one sentence, by a spec or a run folder that keeps none; Neural Cleanse's test-set fallback runs
only when it is named."""

import json
import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from tiny_spec import TINY
from tradeoff.backdoor_defenses import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.sealed import SEALED, SealedTestSet, TestEvaluation
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.core.errors import TradeoffError
from tradeoff.data import ImageSet
from tradeoff.pipeline.experiment import run_experiment

# every defence that trains or calibrates on the defender's held-out images (Neural Cleanse too,
# unless clean_data: test-split is named); a new one must say so with needs_holdout
HOLDOUT_DEFENSES = {"anp", "fine-pruning", "fine-tuning", "ft-sam", "i-bau", "nad", "sau", "strip"}


def test_the_sealed_test_set_raises_one_sentence_on_every_use():
    sealed = SealedTestSet()
    for use in (len, iter, lambda s: s[0], lambda s: s.loader(10), lambda s: s.take(torch.arange(2)),
                lambda s: s.labels):
        with pytest.raises(TradeoffError, match="never see the test set"):
            use(sealed)


@pytest.fixture
def probing_defenses():
    """Two registered defences: one that reads the test set, one that measures the run's own model
    through the pipeline's evaluation."""

    @dataclass
    class NoOptions:
        pass

    def peek(run, opts, log, show_progress):
        next(iter(run.data.test.loader(10)))
        return {}

    def remeasure(run, opts, log, show_progress):
        m = run.evaluation.measure(run.model)
        return {f"remeasure_{k}": m[k] for k in ("accuracy", "backdoor_success_rate", "backdoor_robust_accuracy")}

    BACKDOOR_DEFENSES.register("peek", options=NoOptions)(peek)
    BACKDOOR_DEFENSES.register("remeasure", options=NoOptions)(remeasure)
    yield
    BACKDOOR_DEFENSES.unregister("peek")
    BACKDOOR_DEFENSES.unregister("remeasure")


def test_a_defense_cannot_read_the_test_set_and_the_pipeline_measures_for_it(probing_defenses, one_thread):
    """A defence that reads ``run.data.test`` gets ``<prefix>_error`` naming the rule, the run keeps
    its metrics; the pipeline's evaluation of the unchanged model gives the pipeline's own numbers
    on the same test set (the independent reference: the run's evaluation)."""
    spec = load_spec(None, {"backdoor_defenses": [{"name": "peek"}, {"name": "remeasure"}]}, base=TINY)
    m = run_experiment(spec, show_progress=False).metrics
    assert m["peek_error"].startswith("backdoor defence peek could not run") and SEALED in m["peek_error"]
    for key in ("accuracy", "backdoor_success_rate", "backdoor_robust_accuracy"):
        assert m[f"remeasure_{key}"] == m[key]


def test_holdout_defenses_are_refused_when_the_spec_is_built_without_a_holdout():
    """Every registered defence that declares ``needs_holdout`` (exactly the purifiers and STRIP),
    and Neural Cleanse by default, is one sentence naming data.holdout_per_class before any data is
    read; with a holdout each builds, and Neural Cleanse builds on the test split when named."""
    declared = {name for name in BACKDOOR_DEFENSES.names()
                if getattr(BACKDOOR_DEFENSES.entry(name).options, "needs_holdout", False)}
    assert declared == HOLDOUT_DEFENSES
    for name in sorted(HOLDOUT_DEFENSES | {"neural-cleanse"}):
        with pytest.raises(TradeoffError, match=rf"backdoor_defenses\.{name} needs the defender's clean images.*"
                                                r"data\.holdout_per_class.*\.$"):
            load_spec(None, {"backdoor_defenses": [{"name": name}]})
        load_spec(None, {"data": {"holdout_per_class": 2}, "backdoor_defenses": [{"name": name}]})
    load_spec(None, {"backdoor_defenses": [{"name": "neural-cleanse", "clean_data": "test-split"}]})
    for name in ("spectral", "activation-clustering"):  # they filter the training set itself
        load_spec(None, {"backdoor_defenses": [{"name": name}]})


def test_the_test_split_is_seeded_disjoint_and_complete():
    """Neural Cleanse's explicit fallback: the defender's share and the measured rest partition the
    test set, the share is the fraction asked, and the same seed gives the same split."""
    images = ImageSet(torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1), torch.arange(40) % 4)
    evaluation = TestEvaluation(SimpleNamespace(data=SimpleNamespace(test=images)))
    defender, rest = evaluation.split(0.25, seed=3)
    taken = defender.x.flatten().long().tolist()
    measured = rest._images.x.flatten().long().tolist()
    assert len(taken) == 10 and len(rest) == 30 and sorted(taken + measured) == list(range(40))
    assert evaluation.split(0.25, seed=3)[0].x.flatten().long().tolist() == taken
    assert evaluation.split(0.25, seed=4)[0].x.flatten().long().tolist() != taken


@pytest.fixture(scope="module")
def folder_without_holdout(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    spec = load_spec(None, {}, base=TINY)
    spec.name = "tiny"
    run_experiment(spec, out, show_progress=False)
    return out / "tiny"


def test_defend_refuses_a_folder_without_a_holdout_unless_clean_data_is_named(folder_without_holdout, capsys):
    """`tradeoff defend` with a purifier on a folder trained without a holdout: exit 2, one sentence
    naming data.holdout_per_class, no traceback, the folder untouched; Neural Cleanse runs there
    only with clean_data: test-split, and says so in its metrics."""
    run = folder_without_holdout
    before = (run / "metrics.json").read_text()
    for name in ("anp", "neural-cleanse"):
        assert main(["defend", str(run), "--defense", name, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "data.holdout_per_class" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
        assert (run / "metrics.json").read_text() == before
    assert main(["defend", str(run), "--defense", "neural-cleanse", "--option", "clean_data=test-split",
                 "--option", "epochs=1", "--option", "unlearn_epochs=1", "--option", "reverse_images=20",
                 "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    found = re.fullmatch(r"(\d+) test images \(clean_data test-split, holdout_fraction 0\.5\)", metrics["cleanse_clean_data"])
    assert found and abs(int(found[1]) - metrics["cleanse_measured_images"]) <= 1  # half the test set each
