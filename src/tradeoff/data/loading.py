"""Load a dataset by spec: locate the root, read, and take the seeded subsets."""

from __future__ import annotations

from pathlib import Path

from tradeoff.data.imageset import DataBundle, hold_out_per_class
from tradeoff.data.registry import DATASETS, default_root


def load_data(data_spec, seed: int = 0, download: bool = True) -> DataBundle:
    root = Path(data_spec.root) if data_spec.root else default_root()
    bundle = DATASETS.get(data_spec.dataset).load(root, download, data_spec)
    if data_spec.holdout_per_class:  # before the subset: held out of the whole training set
        bundle.train, bundle.holdout = hold_out_per_class(bundle.train, data_spec.holdout_per_class,
                                                          bundle.num_classes)
    bundle.train = bundle.train.subset(data_spec.train_subset, seed)  # streamed sets subset their index
    bundle.test = bundle.test.subset(data_spec.test_subset, seed + 1)
    return bundle
