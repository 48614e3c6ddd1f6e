"""The embedded synthetic dataset: seeded, valid splits, labelled, cross-modal structure."""

from __future__ import annotations

import numpy as np
import pytest

from medhash_datasets.base import DatasetError
from medhash_datasets.loaders import DATASETS


def load(**kw):
    return DATASETS.get("synthetic")(None, **kw)


def test_same_seed_same_data_and_other_seed_differs():
    a, b, c = load(seed=3), load(seed=3), load(seed=4)
    np.testing.assert_array_equal(a.image_features, b.image_features)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.allclose(a.image_features, c.image_features)


def test_splits_and_labels():
    d = load(seed=0, n_train=50, n_validation=20, n_query=30, n_labels=5)
    assert d.split_sizes() == {"train": 50, "validation": 20, "query": 30, "database": 70}
    assert len(np.intersect1d(d.splits["query"], d.splits["database"])) == 0
    assert set(np.concatenate([d.splits["train"], d.splits["validation"]])) == set(d.splits["database"])
    per_item = d.labels.sum(1)
    assert per_item.min() >= 1 and per_item.max() <= 3
    assert d.labels.shape == (100, 5) and d.labels.dtype == np.uint8
    assert d.image_features.dtype == np.float32 and d.image_features.shape == (100, 128)
    assert d.text_features.shape == (100, 64)


def test_modalities_share_label_structure_but_not_raw_space():
    d = load(seed=0)
    y = d.labels.astype(float)
    same = (y @ y.T) > 0

    def mean_cos_gap(x):
        x = x - x.mean(0)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = x @ x.T
        off = ~np.eye(len(x), dtype=bool)
        return s[same & off].mean() - s[~same].mean()

    # Within each modality, items sharing a label are closer than items sharing none.
    assert mean_cos_gap(d.image_features) > 0.05
    assert mean_cos_gap(d.text_features) > 0.05


@pytest.mark.parametrize("opts,msg", [({"bogus": "1"}, "unknown option 'bogus'"), ({"n_train": "x"}, "not a number"), ({"n_labels": "1"}, "n_labels must be >= 2")])
def test_bad_options_name_the_option(opts, msg):
    with pytest.raises(DatasetError, match=msg):
        load(**opts)
