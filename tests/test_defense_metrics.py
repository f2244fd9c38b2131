"""The standard metrics of the backdoor defences (detection rates, precision, AUROC, DER), checked
against brute force and hand computation; degenerate representations through the filters; a
defence that raises inside a run; the filters on a model trained without any poison."""

import csv
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from test_defenses_runfolder import TINY
from test_defenses_spectral import defend, planted, synthetic_run
from tradeoff.backdoor_defenses import BACKDOOR_DEFENSES
from tradeoff.backdoor_defenses.clustering import reduce_and_cluster
from tradeoff.backdoor_defenses.common import auroc, detection_metrics
from tradeoff.cli import main
from tradeoff.config.build import load_spec
from tradeoff.evaluation.metrics import defense_effectiveness_rating
from tradeoff.pipeline.experiment import run_experiment


def pairwise_auroc(scores, positive) -> float:
    """Brute force: the share of (poisoned, clean) pairs ranked correctly, ties counting one half."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_equals_the_pairwise_count_among_examined_images():
    """scikit-learn's AUROC over the examined images equals the pairwise count (with ties); images
    outside the examined classes do not count; one class present gives None."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (60,), generator=g).double()  # many ties
    poisoned = torch.rand(60, generator=g) < 0.3
    examined = torch.rand(60, generator=g) < 0.7
    scores[~examined] = float("nan")  # what the filters leave outside the examined classes
    keep = examined.numpy()
    expected = pairwise_auroc(scores.numpy()[keep], poisoned.numpy()[keep])
    assert auroc(scores, poisoned, examined) == pytest.approx(expected, abs=1e-12)
    assert auroc(scores, torch.zeros(60, dtype=torch.bool), examined) is None
    assert auroc(scores, examined.clone(), examined) is None  # every examined image poisoned


def test_detection_metrics_by_hand():
    """10 examined images, 4 poisoned; 5 removed of which 3 poisoned: TPR 3/4, FPR 2/6, precision
    3/5, 2 clean images removed; the 2 unexamined images count nowhere."""
    poisoned = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    removed = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    examined = torch.tensor([1] * 10 + [0, 0], dtype=torch.bool)
    out = detection_metrics("f", removed, poisoned, examined)
    assert out == {"f_examined": 10, "f_removed": 5, "f_poisons_removed": 3, "f_clean_removed": 2,
                   "f_detection_rate": 3 / 4, "f_false_positive_rate": 2 / 6, "f_precision": 3 / 5, "f_auroc": None}


def test_detection_metrics_without_poisons_or_removals():
    """A model trained without poison: every removal is a false positive (precision 0), the
    detection rate and AUROC are None (no division by zero). Nothing removed: precision None."""
    none = torch.zeros(8, dtype=torch.bool)
    removed = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0], dtype=torch.bool)
    out = detection_metrics("f", removed, none, ~none, scores=torch.arange(8.0))
    assert out["f_clean_removed"] == 2 and out["f_false_positive_rate"] == 2 / 8
    assert out["f_detection_rate"] is None and out["f_precision"] == 0.0 and out["f_auroc"] is None
    out = detection_metrics("f", none, removed, ~none)
    assert out["f_precision"] is None and out["f_detection_rate"] == 0.0 and out["f_false_positive_rate"] == 0.0


def test_der_by_hand():
    """DER = [max(0, dASR) - max(0, dACC) + 1] / 2, computed by hand for four cases."""
    assert defense_effectiveness_rating(0.99, 0.97, 1.00, 0.10) == pytest.approx((0.90 - 0.02 + 1) / 2)
    assert defense_effectiveness_rating(0.90, 0.95, 0.50, 0.60) == pytest.approx(0.5)  # both deltas clipped at 0
    assert defense_effectiveness_rating(0.90, 0.40, 0.20, 0.20) == pytest.approx((0 - 0.5 + 1) / 2)
    assert defense_effectiveness_rating(0.98, 0.98, 1.0, 0.0) == pytest.approx(1.0)
    assert defense_effectiveness_rating(None, 0.9, 1.0, 0.0) is None


def test_filters_report_auroc_on_separable_poisons():
    """Well-separated poisons: both filters' scores rank every poison above every clean image."""
    reps, labels, poisoned = planted(shift=8.0)
    spectral = defend("spectral", synthetic_run(reps, labels, poisoned), variant="textbook", retrain=False)
    clustering = defend("activation-clustering", synthetic_run(reps, labels, poisoned), rule="size", retrain=False)
    assert spectral["spectral_auroc"] == 1.0 and clustering["clustering_auroc"] == 1.0
    assert spectral["spectral_precision"] == pytest.approx(40 / 60) and spectral["spectral_clean_removed"] == 20
    assert clustering["clustering_precision"] == 1.0 and clustering["clustering_fallback"] == ""


def degenerate(kind: str, n: int = 60, dim: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if kind == "all-zero":
        return torch.zeros(n, dim)
    if kind == "constant":
        return torch.full((n, dim), 3.0)
    if kind == "rank-1":
        return torch.rand(n, 1, generator=g) @ torch.rand(1, dim, generator=g)
    if kind == "rank-1 with constant and zero columns":  # dead ReLU units beside one live direction
        reps = torch.zeros(n, dim)
        reps[:, 0] = 2.0
        reps[:, 1] = torch.rand(n, generator=g)
        return reps
    if kind == "two distinct rows":
        return torch.cat([torch.zeros(n // 2, dim), torch.ones(n - n // 2, dim)])
    raise ValueError(kind)


KINDS = ["all-zero", "constant", "rank-1", "rank-1 with constant and zero columns", "two distinct rows"]


@pytest.mark.parametrize("kind", KINDS)
def test_degenerate_representations_through_both_filters(kind):
    """Constant, all-zero, rank-1 and duplicated (NaN-free) target-class representations: spectral
    and clustering run without error and with finite scores; clustering names its fallback."""
    target = degenerate(kind)
    other = torch.randn(40, target.shape[1], generator=torch.Generator().manual_seed(2))
    reps = torch.cat([target, other])
    labels = torch.cat([torch.zeros(len(target)), torch.ones(len(other))]).long()
    poisoned = torch.zeros(len(labels), dtype=torch.bool)
    poisoned[:10] = True
    for rule in ("size", "silhouette", "oracle"):
        out = defend("activation-clustering", synthetic_run(reps, labels, poisoned), rule=rule, dims=2,
                     classes="all", retrain=False)
        assert out["clustering_examined"] == len(labels)
        if kind in ("rank-1", "rank-1 with constant and zero columns"):
            assert out["clustering_fallback"].startswith("principal components (1)")
        if kind in ("all-zero", "constant"):
            assert out["clustering_fallback"].startswith("identical") and out["clustering_removed"] == 0
        if kind == "two distinct rows":
            assert out["clustering_removed"] in (0, 30, 60)
    for variant in ("paper", "textbook"):
        out = defend("spectral", synthetic_run(reps, labels, poisoned), variant=variant, classes="all", retrain=False)
        assert out["spectral_examined"] == len(labels) and out["spectral_removed"] > 0


def test_a_failing_ica_falls_back_to_principal_components(monkeypatch):
    """FastICA raising (as on the robust MNIST model: 'A has a NaN entry') leaves the principal
    components, clustered and named as the fallback."""
    import sklearn.decomposition

    class BrokenICA:
        def __init__(self, **_):
            pass

        def fit_transform(self, _):
            raise ValueError("A has a NaN entry")

    monkeypatch.setattr(sklearn.decomposition, "FastICA", BrokenICA)
    reps, labels, poisoned = planted(shift=8.0)
    cls = (labels == 0).numpy()
    split = reduce_and_cluster(reps.double().numpy()[cls], dims=2, seed=0)
    assert split.fallback == "principal components (2): FastICA failed (A has a NaN entry)"
    truth = poisoned.numpy()[cls]
    assert max((split.clusters == truth).mean(), (split.clusters != truth).mean()) == 1.0




@pytest.fixture
def broken_defense():
    """A registered defence that always raises, as one that cannot run on a model does."""

    def broken(run, opts, log, show_progress):
        run.add_artifact("broken.safetensors", {"x": torch.zeros(1)})
        raise ValueError("A has a NaN entry\nsecond line of a long message")

    @dataclass
    class BrokenOptions:
        pass

    BACKDOOR_DEFENSES.register("broken", options=BrokenOptions)(broken)
    yield "broken"
    BACKDOOR_DEFENSES.unregister("broken")


def test_a_failing_defense_leaves_the_run_intact(broken_defense, tmp_path, capsys):
    """A defence that raises: one sentence in the log, on stderr and as broken_error in metrics.json;
    the model file, the training metrics and the next defence's metrics are kept; the run is
    finished (no unfinished marker) and in summary.csv; `tradeoff defend` says the same sentence
    with exit code 2 and leaves metrics.json as it was."""
    spec = load_spec(None, {"backdoor_defenses": [{"name": "broken"},
                                                  {"name": "spectral", "variant": "textbook", "retrain": False}]},
                     base=TINY)
    spec.name = "tiny"
    run_experiment(spec, tmp_path, show_progress=False)
    run = tmp_path / "tiny"
    metrics = json.loads((run / "metrics.json").read_text())
    sentence = "backdoor defence broken could not run on this model (ValueError: A has a NaN entry)."
    assert metrics["broken_error"] == sentence
    assert metrics["accuracy"] > 0 and "spectral_detection_rate" in metrics and "backdoor_robust_accuracy" in metrics
    assert (run / "model.safetensors").is_file() and not (run / "unfinished.json").exists()
    assert not (run / "broken.safetensors").exists()  # the failed defence's tensors are dropped
    assert sentence in (run / "log.txt").read_text()
    err = capsys.readouterr().err
    assert sentence in err and "Traceback" not in err
    row = next(csv.DictReader((tmp_path / "summary.csv").open()))
    assert row["broken_error"] == sentence
    assert main(["defend", str(run), "--defense", "broken", "--quiet"]) == 2
    assert sentence in capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_filters_on_a_model_trained_without_poison(tmp_path):
    """Poisoning method none: every removal is a false positive; the detection rate and AUROC are
    None; spectral's textbook rule needs the expected poison count named."""
    spec = load_spec(None, {"poison": {"method": "none"}, "backdoor_defenses": [
        {"name": "spectral", "variant": "textbook", "expected_poisons": 20, "retrain": False},
        {"name": "activation-clustering", "rule": "size", "retrain": False}]}, base=TINY)
    spec.name = "clean"
    run_experiment(spec, tmp_path, show_progress=False)
    m = json.loads((tmp_path / "clean" / "metrics.json").read_text())
    assert m["poisoned_images"] == 0
    for prefix in ("spectral", "clustering"):
        assert m[f"{prefix}_detection_rate"] is None and m[f"{prefix}_auroc"] is None
        assert m[f"{prefix}_clean_removed"] == m[f"{prefix}_removed"]
        assert m[f"{prefix}_false_positive_rate"] == m[f"{prefix}_removed"] / m[f"{prefix}_examined"]
    assert m["spectral_removed"] == 30  # ceil(1.5 x 20), all of them clean


def test_neural_cleanse_label_detection_by_hand():
    """Labels 0..9, target 7 backdoored, labels 7 and 3 flagged: one false flag of 9 clean labels,
    precision 1/2, AUROC by the pairwise count; without poison both flags are false, AUROC None."""
    from tradeoff.backdoor_defenses.cleanse import label_detection_metrics

    labels = list(range(10))
    scores = torch.tensor([0, 0, 0, 2.5, 0, 0, 0, 4.0, 0, 0], dtype=torch.float64)
    out = label_detection_metrics(labels, [7, 3], scores, [7])
    assert out["cleanse_false_flags"] == 1 and out["cleanse_false_positive_rate"] == 1 / 9
    assert out["cleanse_precision"] == 1 / 2
    assert out["cleanse_auroc"] == pytest.approx(pairwise_auroc(scores.tolist(), [t == 7 for t in labels]))
    out = label_detection_metrics(labels, [7, 3], scores, [])
    assert out["cleanse_false_flags"] == 2 and out["cleanse_false_positive_rate"] == 2 / 10
    assert out["cleanse_precision"] == 0.0 and out["cleanse_auroc"] is None


def test_the_clean_model_config_validates():
    """configs/defenses/mnist-none-standard.yaml: no poisoning, and spectral told what to expect."""
    spec = load_spec(str(Path(__file__).parent.parent / "configs" / "defenses" / "mnist-none-standard.yaml"))
    assert spec.poison.method == "none"
    assert spec.backdoor_defenses[0].options.expected_poisons == 250
