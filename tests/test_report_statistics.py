"""Report numbers a reader trusts: Wilcoxon ties and effective n (issue 13 item 7), cells printed verbatim with
``–`` for missing (13.8), one seed stated as n = 1 (13.10), bold at printed precision (13.11), plain notation and
one spelling of metric names (16.7)."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest
from report_helpers import accuracy_rows, efficiency_rows, row
from scipy import stats

from benchmarks.report.build import build_tables
from benchmarks.report.rows import NoTable, metric_name, seeds_phrase
from benchmarks.report.significance import paired_test, significance_table
from benchmarks.report.table import Stat, bold_best, format_table, plain_number
from benchmarks.report.tables import efficiency_table, engine_table, main_table


# ---- 13.7 Wilcoxon: zero and near-zero differences are ties, removed before the count and the test ----------
def test_issue_input_zero_difference_is_a_tie_and_n_effective_is_five() -> None:
    y = np.full(6, 0.5)
    x = y + np.array([0, 0.01, 0.02, 0.03, 0.04, 0.05])
    res = paired_test("ucmfh", x, y)
    assert (res.n, res.n_effective) == (6, 5)
    assert (res.wins, res.ties, res.losses) == (5, 1, 0)
    # five positive differences, no tied ranks: exact two-sided p = 2 * P(W+ = 15) = 2 / 2**5
    assert res.wilcoxon_stat == 0.0 and res.wilcoxon_p == pytest.approx(2 / 32)
    assert res.wilcoxon_method == "exact"


def test_float_noise_is_a_tie() -> None:
    x = np.array([0.1 + 0.2, 0.5, 0.6])
    y = np.array([0.3, 0.3, 0.3])
    assert x[0] != y[0]  # 5.55e-17 apart
    res = paired_test("m", x, y)
    assert (res.wins, res.ties, res.losses, res.n_effective) == (2, 1, 0, 2)
    same = paired_test("m", np.array([0.1 + 0.2, 0.7]), np.array([0.3, 0.7]))
    assert same.ties == 2 and np.isnan(same.wilcoxon_p) and np.isnan(same.t_p) and same.wilcoxon_method == ""


def test_tied_ranks_use_all_sign_flips() -> None:
    d = np.array([0.01, 0.01, 0.02, -0.03, 0.04, 0.05])
    res = paired_test("m", d + 0.5, np.full(6, 0.5))
    assert res.wilcoxon_method == "permutation"
    # independent: mid-ranks of |d|, T- of every sign pattern, two-sided p = 2 P(T- <= observed)
    ranks = stats.rankdata(np.abs(np.round(d, 12)))
    observed = ranks[d < 0].sum()
    t_minus = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=6)]
    p = min(1.0, 2 * np.mean(np.array(t_minus) <= observed + 1e-9))
    assert observed == 4.0 and res.wilcoxon_stat == 4.0 and res.wilcoxon_p == pytest.approx(p) == pytest.approx(0.1875)


def _pairs_rows(diffs: list[float]) -> pd.DataFrame:
    """mcmfh − ucmfh = ``diffs`` over (seed, bits) pairs: seeds 0..2 × bits 16, 32 (both tasks equal)."""
    values: dict = {}
    for i, d in enumerate(diffs):
        seed, bits = i % 3, (16, 32)[i // 3]
        values[("mcmfh", bits, seed)] = 0.5 + d
        values[("ucmfh", bits, seed)] = 0.5
    return pd.DataFrame(accuracy_rows(values))


def test_significance_table_shows_effective_n_flag_and_scipy_method() -> None:
    table = significance_table(_pairs_rows([0, 0.01, 0.02, 0.03, 0.04, 0.05]), dataset="medpix")
    header = table.header_labels()
    line = dict(zip(header, table.rows[0]))
    assert line["n pairs"] == "6" and line["n effective"] == "5 (n too small)"
    assert line["wins/ties/losses"] == "5/1/0" and line["Wilcoxon signed-rank p"] == "0.062"
    md = table.to_markdown()
    assert "|Δ| ≤ 1e-12" in md and "'exact' (exact null distribution" in md and "n too small" in md
    # six non-tied pairs: no flag
    table = significance_table(_pairs_rows([0.06, 0.01, 0.02, 0.03, 0.04, 0.05]), dataset="medpix")
    assert dict(zip(table.header_labels(), table.rows[0]))["n effective"] == "6"


def test_significance_not_emitted_for_one_seed() -> None:
    rows = pd.DataFrame(accuracy_rows({("mcmfh", b, 0): 0.6 for b in (16, 32, 64)}
                                      | {("ucmfh", b, 0): 0.5 for b in (16, 32, 64)}))
    with pytest.raises(NoTable, match=r"one seed per \(method, bits\) \(n = 1\)"):
        significance_table(rows, dataset="medpix")
    tables, skipped = build_tables(rows)
    assert not any(t.name.startswith("significance") for t in tables)
    assert any("n = 1" in s and s.startswith("significance medpix/unimodal") for s in skipped)


# ---- 13.8 cells verbatim, missing as – ---------------------------------------------------------------------
def test_formatted_cells_are_printed_verbatim() -> None:
    text = format_table([["a", "0.5000", "0.1230", None, float("nan"), 5120.0]], ["m", "x", "y", "z", "w", "b"])
    cells = [c.strip() for c in text.splitlines()[2].strip("|").split("|")]
    assert cells == ["a", "0.5000", "0.1230", "–", "–", "5,120"]
    assert "nan" not in text.lower()
    assert Stat(0.5, digits=4).markdown() == "0.5000" and Stat(float("nan")).markdown() == "–"


@pytest.mark.parametrize(("value", "text"), [(5120, "5,120"), (5.12e3, "5,120"), (12345.6, "12.3 k"), (3.2e6, "3.2 M"),
                                             (999_999, "1 M"), (0.01234, "0.0123"), (2.0, "2"), (1e-7, "0.0000001"),
                                             (float("nan"), "–"), (None, "–")])
def test_plain_number(value, text: str) -> None:
    assert plain_number(value) == text


# ---- 13.10 one seed: no ±, n stated ------------------------------------------------------------------------
def test_one_seed_states_n_and_never_shows_plus_minus() -> None:
    rows = pd.DataFrame(accuracy_rows({("mcmfh", 16, 0): 0.6, ("ucmfh", 16, 0): 0.5})
                        + efficiency_rows("mcmfh", 16) + efficiency_rows("ucmfh", 16))
    table = main_table(rows, dataset="medpix")
    md, tex = table.to_markdown(), table.to_latex()
    assert "n = 1" in table.title and "±" not in md and r"\pm" not in tex
    eff = efficiency_table(rows, dataset="medpix").to_markdown()
    for text in (md, eff):
        assert not re.search(r"over 1 seeds", text) and "± 0.000" not in text
    assert seeds_phrase([1]) == "one seed (n = 1), no std" and seeds_phrase([3]) == "mean ± std over 3 seeds"


def test_mixed_seed_counts_mark_the_smaller_n() -> None:
    values = {("mcmfh", 16, s): 0.6 + 0.01 * s for s in range(3)} | {("ucmfh", 16, 0): 0.5}
    table = main_table(pd.DataFrame(accuracy_rows(values)), dataset="medpix")
    line = {r[0]: r for r in table.rows}
    assert line["ucmfh"][1].markdown() == "0.500 (n = 1)"
    assert line["mcmfh"][1].markdown() == f"**0.610 ± {np.std([0.6, 0.61, 0.62], ddof=1):.3f}**"
    assert "over 3 seeds (fewer where marked n)" in table.title


# ---- 13.11 bold at printed precision ------------------------------------------------------------------------
def test_ties_at_printed_precision_are_all_bold() -> None:
    assert bold_best([0.5124, 0.5121, 0.49], 3) == [True, True, False]
    assert bold_best([0.5126, 0.5121], 3) == [True, False]
    rows = pd.DataFrame(accuracy_rows({("mcmfh", 16, 0): 0.5124, ("ucmfh", 16, 0): 0.5121, ("cca-itq", 16, 0): 0.49}))
    table = main_table(rows, dataset="medpix")
    md, tex = table.to_markdown(), table.to_latex()
    assert md.count("**0.512**") == 4  # two methods × two tasks
    assert tex.count(r"\textbf{0.512}") == 4 and r"\textbf{0.490}" not in tex


# ---- 16.7 plain notation, no self speed-up, metric names ----------------------------------------------------
def test_efficiency_table_plain_numbers_and_no_speedup_for_the_float_row() -> None:
    rows = pd.DataFrame(accuracy_rows({("ucmfh", 16, 0): 0.5, ("real-valued", None, 0): 0.7}, metric="map@k", k=50)
                        + efficiency_rows("ucmfh", 16) + efficiency_rows("real-valued", None))
    table = efficiency_table(rows, dataset="medpix", metric="map@50")
    line = {r[0]: dict(zip(table.header_labels(), r)) for r in table.rows}
    assert line["real-valued"]["speed-up"] == "–" and line["ucmfh"]["speed-up"] == "50.0×"
    assert line["real-valued"]["bytes code / item"] == "5,120" and line["ucmfh"]["bytes float / item"] == "5,120"
    assert line["ucmfh"]["ms encode / item"] == "0.0123"
    md = table.to_markdown()
    assert not re.search(r"\de[+-]\d", md) and "mAP@50 (tie-aware)" in md and "map@50" not in md


def test_engine_table_plain_numbers_and_dash_recall() -> None:
    rows = []
    for engine, approx in (("BFlat", False), ("BHash4", True)):
        for metric, value in (("throughput_qps", 12345.6), ("index_bytes", 5.12e3), ("build_s", 2.5e-5),
                              ("latency_ms_median", 0.081)) + ((("recall@k", 0.0031),) if approx else ()):
            rows.append(row(method=None, dataset="random", protocol="efficiency", task="-", engine=engine,
                            db_size=100_000, metric=metric, value=value, tie=None, chance=None))
    table = engine_table(pd.DataFrame(rows))
    line = {r[0]: dict(zip(table.header_labels(), r)) for r in table.rows}
    assert line["BFlat"]["queries/s"] == "12.3 k" and line["BFlat"]["bytes index"] == "5,120"
    assert line["BFlat"]["build s"] == "0.000025" and line["BFlat"]["database size"] == "100 k"
    assert line["BFlat"]["recall@k"] == "–" and line["BHash4 (approx.)"]["recall@k"] == "0.0031"
    assert not re.search(r"\de[+-]\d", table.to_markdown()) and "nan" not in table.to_markdown()


def test_metric_names_are_spelled_one_way() -> None:
    assert [metric_name(m) for m in ("map", "map@50", "map@k", "p@10", "ndcg@10", "p@r2")] == [
        "mAP@all", "mAP@50", "mAP@K", "P@10", "NDCG@10", "P@r≤2"]
    rows = pd.DataFrame(accuracy_rows({("ucmfh", 16, 0): 0.5}, metric="map@k", k=50))
    assert main_table(rows, dataset="medpix", metric="map@50").title.startswith("medpix: mAP@50 (tie-aware)")


def test_data_info_tables_keep_their_decimals(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cli import main as cli_main

    assert cli_main(["data", "info", "synthetic"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| label")]
    fractions = [ln.strip("|").split("|")[2].strip() for ln in lines[1:]]
    assert fractions and all(re.fullmatch(r"0\.\d{3}", f) for f in fractions)  # e.g. 0.180, never 0.18
