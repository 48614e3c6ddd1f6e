"""Result rows: hashing, atomic cell files, reading back, error messages."""

from __future__ import annotations

import json

import pytest

from benchmarks.results import ROW_FIELDS, cell_path, config_hash, iter_rows, load_rows, write_cell


def full_row(**kw):
    row = {f: None for f in ROW_FIELDS}
    row.update(kw)
    return row


def test_config_hash_is_order_insensitive_and_value_sensitive():
    a = config_hash({"method": "x", "bits": 16, "nested": {"a": 1, "b": 2}})
    b = config_hash({"nested": {"b": 2, "a": 1}, "bits": 16, "method": "x"})
    c = config_hash({"method": "x", "bits": 32, "nested": {"a": 1, "b": 2}})
    assert a == b and a != c and len(a) == 16


def test_write_and_read_cell(tmp_path):
    path = cell_path(tmp_path, "synthetic", "random", "abc")
    rows = [full_row(metric="map", value=0.5, k=None), full_row(metric="p@n", value=0.25, k=10)]
    write_cell(path, rows)
    assert path == tmp_path / "cells" / "synthetic" / "random" / "abc.jsonl"
    back = list(iter_rows(tmp_path))
    assert [r["value"] for r in back] == [0.5, 0.25]
    assert list(path.parent.iterdir()) == [path]  # no temporary files left behind
    df = load_rows(tmp_path)
    assert df.shape[0] == 2 and set(ROW_FIELDS) <= set(df.columns)


def test_row_missing_fields_is_refused_and_nothing_written(tmp_path):
    path = tmp_path / "cells" / "x.jsonl"
    bad = full_row(metric="map")
    del bad["seed"]
    with pytest.raises(ValueError, match=r"lacks fields \['seed'\]"):
        write_cell(path, [bad])
    assert not path.exists()


def test_corrupt_line_names_file_and_line(tmp_path):
    path = tmp_path / "cells" / "bad.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(full_row(metric="map")) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON result row"):
        list(iter_rows(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_rows(tmp_path / "missing"))
