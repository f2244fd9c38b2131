"""Spectral signatures and activation clustering, ours against ART 1.20.1, on the activations of a
finished run folder's model (the training images labelled as the target class).

    python benchmarks/defenses_vs_art.py RUN_DIR [--data-root /work/shared/datasets] [--layer NAME]

Prints, for each method, the detection rate / false-positive rate of ours and of ART and the share
of images on which the two agree. ART is given exactly the representations our defences read.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch


class StubClassifier:
    def __init__(self, activations, nb_classes):
        self.activations, self.nb_classes, self.layer_names = activations, nb_classes, ["features"]

    def get_activations(self, x, layer=None, batch_size=128):
        return self.activations


def rates(removed: np.ndarray, poisoned: np.ndarray) -> str:
    det = (removed & poisoned).sum() / max(poisoned.sum(), 1)
    fpr = (removed & ~poisoned).sum() / max((~poisoned).sum(), 1)
    return f"detection {100 * det:5.1f}%  false-positive {100 * fpr:5.1f}%  removed {removed.sum()}"


def main() -> None:
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    from tradeoff.backdoor_defenses.clustering import RULES, ClusteringOptions, reduce_and_cluster
    from tradeoff.backdoor_defenses.common import representations
    from tradeoff.backdoor_defenses.spectral import spectral_scores
    from tradeoff.pipeline.defend import load_trained_run

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--data-root")
    ap.add_argument("--layer")
    args = ap.parse_args()
    run = load_trained_run(args.run_dir, args.data_root)
    y = run.data.train.labels.cpu()
    poisoned_all = run.data.poison_mask.numpy()
    target = run.data.backdoor_target.single_label
    if target is None:
        sys.exit(f"{args.run_dir} has an all-to-all backdoor: no one target class to compare on.")
    idx = (y == target).numpy()
    acts = representations(run.model, run.data.train.take(torch.from_numpy(idx).nonzero().flatten()),
                           args.layer).double().numpy()
    poisoned = poisoned_all[idx]
    n, p = len(acts), int(poisoned.sum())
    print(f"{args.run_dir}: {n} training images labelled {target}, {p} poisoned, representation dim {acts.shape[1]}")
    # ART sees one class here: give it two classes with a dummy second one so its code paths run.
    labels = np.zeros((n, 2))
    labels[:, 0] = 1
    stub = StubClassifier(acts, 2)

    eps = p / n
    art_ss = SpectralSignatureDefense(stub, acts, labels, expected_pp_poison=eps, eps_multiplier=1.5)
    art_removed = np.array(art_ss.detect_poison()[1]) == 0
    k = min(n, math.ceil(1.5 * p))
    for name, centred in (("textbook (centred)", True), ("uncentred, ART's scoring", False)):
        scores = spectral_scores(torch.from_numpy(acts), centred=centred).numpy()
        ours = np.zeros(n, dtype=bool)
        ours[np.argsort(-scores)[:k]] = True
        print(f"spectral ours {name:26s} {rates(ours, poisoned)}  agreement with ART {100 * (ours == art_removed).mean():5.1f}%")
    print(f"spectral ART  (quantile cutoff, 1.5 eps)  {rates(art_removed, poisoned)}")

    np.random.seed(run.spec.seed)
    # ART's cluster analysers need every class non-empty: the second class is a copy of the first.
    both = np.concatenate([acts, acts])
    two = np.concatenate([labels, labels[:, ::-1]])
    art_ac = ActivationDefence(StubClassifier(both, 2), both, two)
    try:
        _, clean = art_ac.detect_poison(nb_clusters=2, nb_dims=2, reduce="FastICA", cluster_analysis="relative-size")
        art_ac_removed = np.array(clean[:n]) == 0
        art_text = rates(art_ac_removed, poisoned)
    except (ValueError, TypeError, IndexError) as e:  # ART's analysers fail when no cluster is small
        art_ac_removed, art_text = None, f"ART failed: {e.__class__.__name__}: {e}"
    reduced, clusters = reduce_and_cluster(acts, 2, run.spec.seed)
    flagged = RULES.get("size")(clusters, reduced, poisoned, ClusteringOptions())
    ours = flagged[clusters]
    agree = "" if art_ac_removed is None else f"  agreement with ART {100 * (ours == art_ac_removed).mean():5.1f}%"
    print(f"clustering ours (FastICA 2, 2-means, size<0.35) {rates(ours, poisoned)}{agree}")
    print(f"clustering ART  (FastICA 2, 2-means, relative-size) {art_text}")


if __name__ == "__main__":
    main()
