"""Datasets by name: loaders, protocol defaults, subsets and augmentation."""

from tradeoff.data.registry import DATASETS, DatasetInfo, Protocol, default_root
from tradeoff.data.imageset import ImageSet, DataBundle
from tradeoff.data import builtin, folder  # noqa: F401  (register the built-in and folder datasets)
from tradeoff.data.loading import load_data
from tradeoff.data.augment import pad_crop_flip

__all__ = ["DATASETS", "DatasetInfo", "Protocol", "ImageSet", "DataBundle", "load_data",
           "default_root", "pad_crop_flip"]
