"""The dataset registry with every loader registered: ``from medhash_datasets.loaders import DATASETS``.

Loaders register in :data:`DATASETS` as ``loader(data_root: Path | None, **options) -> PairedDataset``
(see DEVELOPERS.md). This folder, ``datasets/``, is installed as the import package ``medhash_datasets`` and has
no ``__init__.py`` on purpose: a regular package named by the folder would shadow Hugging Face ``datasets`` for
every program started from the repository root (``sentence-transformers`` imports it).
"""

from medhash_datasets import medpix, mirflickr, openi, roco, synthetic  # noqa: F401  (importing registers them)
from medhash_datasets.registry import DATASETS

__all__ = ["DATASETS"]
