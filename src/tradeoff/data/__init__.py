"""Datasets by name: loaders, protocol defaults, subsets and augmentation."""

# register the built-in and folder datasets, and their generated files (tradeoff sweep --synthetic)
from tradeoff.data import builtin, folder, generated  # noqa: F401
from tradeoff.data.augment import pad_crop_flip
from tradeoff.data.imageset import DataBundle, ImageSet
from tradeoff.data.loading import load_data
from tradeoff.data.registry import DATASETS, DatasetInfo, Protocol, default_root

__all__ = ["DATASETS", "DatasetInfo", "Protocol", "ImageSet", "DataBundle", "load_data",
           "default_root", "pad_crop_flip"]
