"""Datasets by name: loaders, protocol defaults, subsets and augmentation."""

from tradeoff.data.registry import DATASETS, DatasetInfo, Protocol, default_root
from tradeoff.data.imageset import ImageSet, DataBundle
from tradeoff.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from tradeoff.data import folder as _folder  # noqa: F401  (registers imagefolder, imagenet)
from tradeoff.data.loading import load_data
from tradeoff.data.augment import pad_crop_flip

__all__ = ["DATASETS", "DatasetInfo", "Protocol", "ImageSet", "DataBundle", "load_data",
           "default_root", "pad_crop_flip"]
