"""Dataset loaders, frozen encoders and the feature cache (first stage of the one-way data flow).

Loaders register in :data:`DATASETS` as ``loader(data_root: Path | None, **options) -> PairedDataset``.
"""

from medhash_datasets.base import DatasetError, Features, FeatureSplit, PairedDataset, feature_split, resolve_data_root
from medhash_datasets.registry import Registry, RegistryError

DATASETS: Registry = Registry("dataset")

# Importing the modules registers the loaders.
from medhash_datasets import medpix, mirflickr, openi, roco, synthetic  # noqa: E402,F401

__all__ = [
    "DATASETS",
    "DatasetError",
    "FeatureSplit",
    "Features",
    "PairedDataset",
    "Registry",
    "RegistryError",
    "feature_split",
    "resolve_data_root",
]
