"""Every emitted LaTeX tabular has exactly one cell per column of its spec in every row, and each spanning
header sits over the columns its rule is under (issue 16 item 3), checked on the .tex text, without pdflatex."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from report_helpers import accuracy_rows, cell_count, efficiency_rows, row, tabulars

from benchmarks.report.build import build_tables
from benchmarks.report.table import Table, latex_document
from benchmarks.report.tables import efficiency_table

TUNING = {"study": "s", "trial": 3, "budget": 20, "n_complete": 18, "n_pruned": 2, "best_value": 0.41,
          "params": {"lr": 0.001}, "shared_across_bits": False}


def every_kind_rows() -> pd.DataFrame:
    """Rows that make every table kind: main, ablation, significance, efficiency, tuning, engines."""
    values = {}
    for s in range(3):
        for b in (16, 32):
            values |= {("mcmfh", b, s): 0.6 + 0.01 * s, ("ucmfh", b, s): 0.55 - 0.01 * s}
        values[("real-valued", None, s)] = 0.7
    rows = accuracy_rows(values, tuning=TUNING)
    rows += [row(method="mcmfh", variant="mcmfh-no-moe", bits=b, seed=s, task=t, value=0.58)
             for b in (16, 32) for s in range(3) for t in ("i2t", "t2i")]
    rows += efficiency_rows("mcmfh", 16, tuning=TUNING) + efficiency_rows("real-valued", None, tuning=TUNING)
    for engine in ("BFlat", "BHash4"):
        rows.append(row(method=None, dataset="random", protocol="efficiency", task="-", engine=engine,
                        db_size=1000, metric="latency_ms_median", value=0.1, tie=None, chance=None))
    return pd.DataFrame(rows)


def check_tabular(tex: str) -> int:
    """Assert the cell counts and the spanning headers of every tabular in ``tex``; returns how many."""
    found = tabulars(tex)
    for n_cols, lines in found:
        assert lines, "empty tabular"
        for line in lines:
            assert cell_count(line) == n_cols, f"{cell_count(line)} cells for {n_cols} columns: {line}"
        # the cmidrules under a spanning-header row cover exactly its \multicolumn cells
        head = lines[0]
        if r"\multicolumn" in head:
            spans, col = [], 1
            for cell in re.split(r"(?<!\\)&", head[:-2]):
                m = re.match(r"\s*\\multicolumn\{(\d+)\}", cell)
                width = int(m.group(1)) if m else 1
                if cell.strip():
                    spans.append((col, col + width - 1))
                col += width
            rules = [(int(a), int(b)) for a, b in re.findall(r"\\cmidrule\(lr\)\{(\d+)-(\d+)\}", tex.split(head, 1)[1]
                                                                .split("\n", 2)[1])]
            assert rules == spans
    return len(found)


def test_every_table_kind_has_one_cell_per_column() -> None:
    tables, skipped = build_tables(every_kind_rows())
    kinds = {t.name.split("_")[0] for t in tables}
    assert kinds == {"main", "ablation", "significance", "efficiency", "tuning", "engines"}, skipped
    for table in tables:
        assert check_tabular(table.to_latex()) == 1, table.name
    assert check_tabular(latex_document(tables)) == len(tables)
    # the ablation significance table pairs full MCMFH with its variant over (seed, bits)
    abl = next(t for t in tables if t.name == "significance_ablation_medpix_unimodal")
    res = abl.data.set_index("method").loc["mcmfh-no-moe"]
    assert (res["n"], res["wins"], res["ties"], res["losses"]) == (6, 6, 0, 0)
    assert res["mean_diff"] == pytest.approx(0.6 + 0.01 - 0.58)


def test_issue_input_efficiency_header_over_its_columns() -> None:
    tex = efficiency_table(every_kind_rows(), dataset="medpix").to_latex()
    # method, bits, accuracy have no group: three empty cells, then "ms" over columns 4-6 with its rule there
    assert " &  &  & \\multicolumn{3}{c}{ms} &  & \\multicolumn{2}{c}{bytes} \\\\" in tex
    assert "\\cmidrule(lr){4-6} \\cmidrule(lr){8-9}" in tex


@pytest.mark.parametrize("groups", [["", "a", "a", "", "", "b"], ["a", "", "a"], ["", "", ""], ["x", "x", "x"]])
def test_header_layouts(groups: list[str]) -> None:
    table = Table("t", "t", [(g, f"c{i}") for i, g in enumerate(groups)], [[f"v{i}" for i in range(len(groups))]])
    assert check_tabular(table.to_latex()) == 1
