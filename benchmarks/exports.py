"""What a cell writes besides its rows (``run --export``): binary codes, the trained model, per-query AP.

Layout under ``OUT/exports/<dataset>/<variant>/<cell_id>/`` (the cell id is the hash of the cell's config, as
in ``OUT/cells``):

* ``codes_<protocol>.npz`` — query/database codes of both modalities and their labels in exactly the layout
  ``evaluate`` reads (``q_img``, ``q_txt``, ``r_img``, ``r_txt``, ``q_l``, ``r_l``; ±1 int8 codes), so the
  harness's own codes can be re-evaluated, compared with a paper's, or searched by another engine;
* ``model.pt`` — :meth:`methods.base.HashingMethod.save` (reload with ``HashingMethod.load``);
* ``per_query.csv.gz`` — one line per (protocol, task, tie, metric, k, query index): the per-query values of
  every per-query metric (AP of ``map``, ``map@k``, ...), for query-level paired tests and error analysis.

Every file is written atomically; a rerun of the cell overwrites them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

#: Export kinds ``run --export`` accepts.
EXPORT_KINDS = ("codes", "model", "per-query")


def export_dir(out: Path, dataset: str, variant: str, cell_id: str) -> Path:
    """Folder of one cell's exports: ``out/exports/<dataset>/<variant>/<cell_id>``."""
    return Path(out) / "exports" / dataset / variant / cell_id


def write_codes(folder: Path, protocol: str, query: dict[str, np.ndarray], database: dict[str, np.ndarray],
                q_labels: np.ndarray, db_labels: np.ndarray) -> Path:
    """Write one protocol's relaxed codes (``query``/``database``: ``{"image": (n, K), "text": (n, K)}``) as the
    ``evaluate`` code file ``codes_<protocol>.npz`` (bits ``h >= 0``, the relaxed convention)."""
    from benchmarks.evaluation import write_code_file

    return write_code_file(
        folder / f"codes_{protocol}.npz", q_img=query["image"], q_txt=query["text"], r_img=database["image"],
        r_txt=database["text"], q_l=q_labels, r_l=db_labels, convention="relaxed",
    )


def write_per_query(folder: Path, records: list[dict[str, Any]]) -> Path:
    """Write per-query values as ``per_query.csv.gz``.

    Parameters
    ----------
    records : list of dict
        Each ``{"protocol", "task", "tie", "metric", "k", "values": (n_queries,) float}``.
    """
    import pandas as pd

    from medhash_datasets.cache_io import atomic_write_bytes

    frames = [
        pd.DataFrame({"protocol": r["protocol"], "task": r["task"], "tie": r["tie"], "metric": r["metric"],
                      "k": r["k"], "query": np.arange(len(r["values"])), "value": np.asarray(r["values"], float)})
        for r in records
    ]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    buffer = io.BytesIO()
    table.to_csv(buffer, index=False, compression={"method": "gzip", "mtime": 0})
    path = folder / "per_query.csv.gz"
    atomic_write_bytes(path, buffer.getvalue())
    return path
