"""Result rows of the efficiency studies: fields shared by every row of one invocation, and one atomic cell file
per measured cell (``OUT/efficiency/<source>/<config_hash>.jsonl``), in the schema of :mod:`benchmarks.results`."""

from __future__ import annotations

import datetime as _dt
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.results import ROW_FIELDS, config_hash, git_commit, package_versions, write_cell


def new_run_id() -> str:
    """``YYYYmmddTHHMMSSZ-xxxxxx``: UTC start time and 6 random hex digits."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def common_fields(run_id: str, *, source: str, seed: int, threads: int, clock: str, k: int,
                  method: str | None = None, method_name: str | None = None,
                  method_config: dict[str, Any] | None = None, context: Any = None) -> dict[str, Any]:
    """Fields every row of one efficiency invocation carries.

    Parameters
    ----------
    run_id : str
    source : str
        ``dataset`` field: the dataset name, or ``random``.
    method, method_name : str | None
        ``variant`` (registry name) and ``method`` (base method) fields.
    context : benchmarks.search.trained.DataContext | None
        Adds label scheme, encoder and split sizes when the rows come from a real dataset.
    """
    fields: dict[str, Any] = {
        "run_id": run_id, "method": method_name, "variant": method, "method_config": method_config,
        "dataset": source, "label_scheme": None, "encoder": None, "seed": seed, "protocol": "efficiency",
        "chance": None, "n_queries_without_relevant": None, "versions": package_versions(),
        "git_commit": git_commit(), "threads": threads, "clock": clock, "search_k": k,
    }
    if context is not None:
        dataset, features = context.dataset, context.features
        sizes = dataset.split_sizes()
        fields.update(label_scheme=dataset.label_scheme, encoder=features.encoder, n_train=sizes["train"],
                      n_validation=sizes["validation"], n_query=sizes["query"],
                      db_includes_train=dataset.db_includes_train)
    return fields


@dataclass
class RowWriter:
    """Writes one atomic JSONL file per cell under ``out_dir`` and keeps every row written.

    Attributes
    ----------
    out_dir : Path
    common : dict
        :func:`common_fields` of the invocation.
    key_extra : dict
        Added to every cell's key (e.g. the dataset options), so different data never share a file.
    """

    out_dir: Path
    common: dict[str, Any]
    key_extra: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def emit(self, cell: dict[str, Any], metrics: list[tuple[str, float, int | None]], extra: dict[str, Any],
             seconds: float) -> list[dict[str, Any]]:
        """Write one cell: one row per ``(metric, value, k)``, with ``extra`` fields, to ``<cell hash>.jsonl``.

        Parameters
        ----------
        cell : dict
            What identifies the cell (hashed into ``cell_id`` / ``config_hash`` with the method config, the
            encoder and :attr:`key_extra`).
        metrics : list of (metric, value, k)
        extra : dict
            Further row fields (engine, db_size, bits, ...).
        seconds : float
            Wall time of the cell's measurement (``wall_time_s``).

        Returns
        -------
        list[dict]
            The rows written.
        """
        cid = config_hash({**cell, "method_config": self.common.get("method_config"),
                           "encoder": self.common.get("encoder"), **self.key_extra})
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        out = []
        for metric, value, k in metrics:
            row = {f: None for f in ROW_FIELDS}
            row.update(self.common)
            row.update(extra)
            row.update(cell_id=cid, config_hash=cid, metric=metric, value=float(value), k=k,
                       wall_time_s=round(seconds, 3), timestamp=stamp)
            out.append(row)
        path = self.out_dir / f"{cid}.jsonl"
        write_cell(path, out)
        self.paths.append(path)
        self.rows.extend(out)
        return out
