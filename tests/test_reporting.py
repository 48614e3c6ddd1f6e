"""Report tables and figures from synthetic result rows: numbers re-computed independently from the rows."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from benchmarks.cli import main as cli_main
from benchmarks.report.figures import latency_styles, plot_latency_vs_db_size
from benchmarks.report.rows import NoTable, ReportError
from benchmarks.report.significance import holm, paired_test, significance_table
from benchmarks.report.table import Stat, latex_escape
from benchmarks.report.tables import ablation_table, efficiency_table, engine_table, main_table
from benchmarks.results import ROW_FIELDS, write_cell

METHODS = {"mcmfh": 0.60, "ucmfh": 0.55, "cca-itq": 0.45, "random": 0.20, "real-valued": 0.70}
VARIANTS = {"mcmfh-no-moe": 0.57, "mcmfh-no-dv": 0.58}
BITS = (16, 32, 64)
SEEDS = (0, 1, 2)
TASKS = ("i2t", "t2i")
CHANCE = {"i2t": 0.21, "t2i": 0.19}


def make_rows(seed: int = 0, *, dataset: str = "medpix") -> list[dict]:
    """Rows shaped like the runner's: accuracy (both ties), curves, cell efficiency, expert load, engines."""
    rng = np.random.default_rng(seed)
    rows: list[dict] = []

    def add(**fields) -> None:
        row = dict.fromkeys(ROW_FIELDS)
        row.update(run_id="r1", dataset=dataset, label_scheme="location+topic", encoder="offline", protocol="unimodal",
                   k=None, chance=None)
        row.update(fields)
        row["cell_id"] = f"{row['variant']}-{row['bits']}-{row['seed']}"
        rows.append(row)

    entries = [(m, m, base) for m, base in METHODS.items()] + [("mcmfh", v, base) for v, base in VARIANTS.items()]
    for method, variant, base in entries:
        for bits in ([None] if method == "real-valued" else BITS):
            for s in SEEDS:
                common = {"method": method, "variant": variant, "bits": bits, "seed": s}
                for task in TASKS:
                    for tie in ("aware", "index"):
                        value = base + 0.02 * np.log2((bits or 64) / 16) + rng.normal(0, 0.01) + (0.01 if tie == "index" else 0)
                        add(**common, task=task, metric="map", tie=tie, value=float(value), chance=CHANCE[task])
                        add(**common, task=task, metric="map@50", k=50, tie=tie, value=float(value + 0.1), chance=CHANCE[task])
                    for n in (1, 10, 50, 100):
                        add(**common, task=task, metric="p@n", k=n, tie="aware", value=float(base + 0.2 - 0.001 * n + rng.normal(0, 0.005)))
                    k_max = bits or 16
                    for r in range(0, k_max + 1):
                        recall = (r / k_max) ** 0.7
                        add(**common, task=task, metric="pr_radius_recall", k=r, tie="aware", value=recall)
                        add(**common, task=task, metric="pr_radius_precision", k=r, tie="aware",
                            value=float(max(CHANCE[task], base + 0.3 - 0.4 * recall)))
                    add(**common, task=task, metric="encode_ms_per_item", value=float(0.05 + rng.uniform(0, 0.01)))
                add(**common, task="i2t", metric="search_ms_per_query", value=float(0.1 * (bits or 256) / 16 + rng.uniform(0, 0.02)))
                add(**common, task="i2t", metric="search_ms_per_query_real", value=float(2.0 + rng.uniform(0, 0.2)))
                add(**common, task="i2t", metric="bytes_per_item", value=float((bits or 4 * 512 * 8) / 8))
                add(**common, task="i2t", metric="bytes_per_item_real", value=2048.0)
                if method == "mcmfh" and variant != "mcmfh-no-moe":
                    load = rng.dirichlet(np.full(4, 20.0))
                    for e, x in enumerate(load):
                        add(**common, protocol="-", task="-", metric="expert_load", k=e, value=float(x))
    for engine, base_ms in (("exact-popcount", 0.002), ("faiss-bflat", 0.001), ("float-ip", 0.02)):
        for bits in ([None] if engine == "float-ip" else (16, 64)):
            for n in (1_000, 10_000, 100_000, 1_000_000):
                for metric, value in (("latency_ms_median", base_ms * n / 1000 * (bits or 16) / 16),
                                      ("latency_ms_p95", 1.3 * base_ms * n / 1000 * (bits or 16) / 16),
                                      ("throughput_qps", 1000 / (base_ms * n / 1000)), ("bytes_per_item", (bits or 4096) / 8),
                                      ("index_bytes", n * (bits or 4096) / 8), ("build_s", 1e-6 * n)):
                    add(method=None, variant=None, bits=bits, seed=0, protocol="efficiency", task="-", metric=metric,
                        value=float(value), engine=engine, db_size=n)
    return rows


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return pd.DataFrame(make_rows())


def expected_stats(df: pd.DataFrame, metric: str = "map", tie: str = "aware") -> pd.DataFrame:
    """Independent re-computation: mean and sample std over seeds per (variant, task, bits)."""
    sel = df[(df["metric"] == metric) & (df["tie"] == tie) & (df["protocol"] == "unimodal")].copy()
    sel["bits"] = sel["bits"].fillna(0).astype(int)
    return sel.groupby(["variant", "task", "bits"])["value"].agg(["mean", "std", "count"])


def md_cell(table_md: str, row_label: str, col: int) -> str:
    """Text of column ``col`` (0 = label) in the Markdown row whose label is ``row_label``."""
    for line in table_md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == row_label:
            return cells[col]
    raise AssertionError(f"row {row_label!r} not in table")


# ---- main table ----------------------------------------------------------------------------------------------
def test_main_table_reproduces_groupby_means_and_bolds_the_best(rows: pd.DataFrame) -> None:
    table = main_table(rows, dataset="medpix")
    md = table.to_markdown()
    exp = expected_stats(rows)
    header = table.header_labels()
    assert header[0] == "method" and header[1:] == [f"{t} {b} bits" for t in TASKS for b in BITS]
    labels = [r[0] for r in table.rows]
    assert labels == ["mcmfh", "cca-itq", "ucmfh", "real-valued", "random", "chance"]  # no ablation variants
    for col, (task, bits) in enumerate([(t, b) for t in TASKS for b in BITS], start=1):
        hashing = {m: exp.loc[(m, task, bits), "mean"] for m in ("mcmfh", "ucmfh", "cca-itq")}
        best = max(hashing, key=hashing.get)
        for method in ("mcmfh", "ucmfh", "cca-itq", "random"):
            mean, std, count = exp.loc[(method, task, bits)]
            assert count == 3
            text = f"{mean:.3f} ± {std:.3f}"
            assert md_cell(md, method, col) == (f"**{text}**" if method == best else text)
        rv = exp.loc[("real-valued", task, 0)]
        assert md_cell(md, "real-valued", col) == f"{rv['mean']:.3f} ± {rv['std']:.3f}†"  # never bold
        assert md_cell(md, "chance", col) == f"{CHANCE[task]:.3f}"


def test_main_table_other_metric_and_tie(rows: pd.DataFrame) -> None:
    table = main_table(rows, dataset="medpix", metric="map@50", tie="index")
    exp = expected_stats(rows, metric="map@50", tie="index")
    cell = next(r for r in table.rows if r[0] == "ucmfh")[1 + TASKS.index("t2i") * len(BITS) + BITS.index(32)]
    assert isinstance(cell, Stat)
    assert cell.mean == pytest.approx(exp.loc[("ucmfh", "t2i", 32), "mean"], abs=1e-12)
    assert cell.std == pytest.approx(exp.loc[("ucmfh", "t2i", 32), "std"], abs=1e-12)
    assert "mAP@50 (index ties)" in table.title


def test_duplicate_rows_of_one_seed_count_once(rows: pd.DataFrame) -> None:
    doubled = pd.concat([rows, rows[rows["variant"] == "ucmfh"]])
    a = main_table(rows, dataset="medpix").data.set_index(["variant", "task", "bits_label"])
    b = main_table(doubled, dataset="medpix").data.set_index(["variant", "task", "bits_label"])
    pd.testing.assert_frame_equal(a.sort_index(), b.sort_index())


def test_single_seed_shows_mean_only() -> None:
    df = pd.DataFrame(make_rows())
    df = df[df["seed"] == 1]
    md = main_table(df, dataset="medpix").to_markdown()
    value = df[(df["variant"] == "cca-itq") & (df["metric"] == "map") & (df["tie"] == "aware") & (df["task"] == "i2t")
               & (df["bits"] == 16)]["value"].iloc[0]
    assert md_cell(md, "cca-itq", 1) == f"{value:.3f}"


# ---- ablation, efficiency, engines ---------------------------------------------------------------------------
def test_ablation_table_holds_the_headline_and_its_variants(rows: pd.DataFrame) -> None:
    table = ablation_table(rows, dataset="medpix")
    assert [r[0] for r in table.rows] == ["mcmfh", "mcmfh-no-dv", "mcmfh-no-moe"]
    exp = expected_stats(rows)
    cell = table.rows[2][1 + BITS.index(64)]
    assert cell.mean == pytest.approx(exp.loc[("mcmfh-no-moe", "i2t", 64), "mean"], abs=1e-12)
    col = {m: exp.loc[(m, "t2i", 16), "mean"] for m in ("mcmfh", "mcmfh-no-dv", "mcmfh-no-moe")}
    bolds = [r[0] for r in table.rows if r[1 + len(BITS)].bold]
    assert bolds == [max(col, key=col.get)]
    with pytest.raises(NoTable, match="no variants of 'mcmfh'"):
        ablation_table(rows[rows["variant"] == "mcmfh"], dataset="medpix")


def test_efficiency_table_numbers(rows: pd.DataFrame) -> None:
    table = efficiency_table(rows, dataset="medpix")
    data = table.data.set_index(["variant", "bits_label"])
    sub = rows[(rows["variant"] == "ucmfh") & (rows["bits"] == 32)]
    acc = sub[(sub["metric"] == "map") & (sub["tie"] == "aware")].groupby("seed")["value"].mean()
    assert data.loc[("ucmfh", "32"), "mean"] == pytest.approx(acc.mean())
    assert data.loc[("ucmfh", "32"), "std"] == pytest.approx(acc.std(ddof=1))
    search = np.median(sub[sub["metric"] == "search_ms_per_query"]["value"])
    real = np.median(sub[sub["metric"] == "search_ms_per_query_real"]["value"])
    assert data.loc[("ucmfh", "32"), "search_ms_per_query"] == pytest.approx(search)
    assert data.loc[("ucmfh", "32"), "speedup"] == pytest.approx(real / search)
    assert data.loc[("ucmfh", "32"), "bytes_per_item"] == 4.0
    assert data.loc[("real-valued", "float"), "bytes_per_item"] == 2048.0
    line = next(r for r in table.rows if r[:2] == ["ucmfh", "32"])
    assert line[6] == f"{real / search:.1f}×"


def test_engine_table_means(rows: pd.DataFrame) -> None:
    table = engine_table(rows)
    data = table.data.set_index(["engine", "bits_label", "db_size"])
    assert data.loc[("faiss-bflat", "64", 100_000), "latency_ms_median"] == pytest.approx(0.001 * 100 * 4)
    assert data.loc[("float-ip", "float", 1_000), "index_bytes"] == pytest.approx(1000 * 512)
    assert len(table.rows) == 2 * 2 * 4 + 4


# ---- significance --------------------------------------------------------------------------------------------
def test_significance_matches_scipy_on_the_same_vectors(rows: pd.DataFrame) -> None:
    table = significance_table(rows, dataset="medpix")
    data = table.data.set_index("method")
    assert list(data.index) == ["cca-itq", "ucmfh", "random"]  # real-valued has no bits to pair with
    sel = rows[(rows["metric"] == "map") & (rows["tie"] == "aware")]
    pvals = []
    for other in data.index:
        # pairing unit = one trained model (seed, bits); its value = mean over the tasks i2t, t2i
        h = sel[sel["variant"] == "mcmfh"].groupby(["seed", "bits"])["value"].mean()
        o = sel[sel["variant"] == other].groupby(["seed", "bits"])["value"].mean()
        joined = pd.concat([h.rename("h"), o.rename("o")], axis=1, join="inner").sort_index(level=["bits", "seed"])
        assert len(joined) == len(SEEDS) * len(BITS) == data.loc[other, "n"]
        w = stats.wilcoxon(joined["h"], joined["o"])
        t = stats.ttest_rel(joined["h"], joined["o"])
        assert data.loc[other, "wilcoxon_stat"] == pytest.approx(w.statistic)
        assert data.loc[other, "wilcoxon_p"] == pytest.approx(w.pvalue, rel=1e-12)
        assert data.loc[other, "t_stat"] == pytest.approx(t.statistic, rel=1e-12)
        assert data.loc[other, "t_p"] == pytest.approx(t.pvalue, rel=1e-12)
        assert data.loc[other, "mean_diff"] == pytest.approx((joined["h"] - joined["o"]).mean())
        pvals.append(w.pvalue)
    # Holm by hand: sorted p times (m - rank), running max.
    order = np.argsort(pvals)
    adj = np.empty(3)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (3 - rank) * pvals[i]))
        adj[i] = running
    assert data["wilcoxon_p_holm"].to_numpy() == pytest.approx(adj)
    md = table.to_markdown()
    assert "Wilcoxon signed-rank p" in md and "paired t-test p" in md and "scipy.stats.wilcoxon" in md
    assert "Pairs matched by (seed, bits), one per trained model, each the mean over its tasks" in md


def test_paired_test_edge_cases() -> None:
    # Hand-worked Wilcoxon: d = (1, 2, -3, 4, 5): ranks 1..5, W = min(R+, R-) = min(12, 3) = 3; exact two-sided
    # p = 2 * P(W <= 3) = 2 * 5/32 (subsets of {1..5} with rank sum <= 3: {}, {1}, {2}, {3}, {1,2}).
    x = np.array([11.0, 12.0, 7.0, 14.0, 15.0])
    y = np.full(5, 10.0)
    res = paired_test("m", x, y)
    assert res.wilcoxon_stat == 3.0 and res.wilcoxon_p == pytest.approx(10 / 32)
    assert (res.wins, res.ties, res.losses) == (4, 0, 1)
    same = paired_test("m", x, x)
    assert np.isnan(same.wilcoxon_p) and np.isnan(same.t_p) and same.ties == 5
    with pytest.raises(ValueError, match="equal length"):
        paired_test("m", x, x[:3])
    assert holm([0.01, float("nan"), 0.04, 0.03]) == pytest.approx([0.03, float("nan"), 0.06, 0.06], nan_ok=True)


def test_small_n_is_flagged() -> None:
    df = pd.DataFrame(make_rows())
    df = df[(df["bits"].isin([16, None])) | df["bits"].isna()]
    df = df[df["task"].isin(["i2t", "-"])]
    table = significance_table(df, dataset="medpix")
    assert table.data["n"].tolist() == table.data["n_effective"].tolist() == [3, 3, 3]
    assert all(row[2] == "3 (n too small)" for row in table.rows)


# ---- rendering -----------------------------------------------------------------------------------------------
def test_latex_structure_and_escaping(rows: pd.DataFrame) -> None:
    table = main_table(rows, dataset="medpix")
    tex = table.to_latex()
    assert tex.count(r"\toprule") == 1 and tex.count(r"\bottomrule") == 1 and tex.count(r"\midrule") == 2
    assert r"\multicolumn{3}{c}{i2t}" in tex and r"\cmidrule(lr){2-4}" in tex
    body = tex.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    lines = [ln for ln in body.splitlines() if ln.endswith(r"\\")]
    assert len(lines) == len(table.rows) and all(ln.count("&") == len(table.columns) - 1 for ln in lines)
    assert len(re.findall(r"\\textbf\{", tex)) == len(TASKS) * len(BITS)
    assert latex_escape("map_first_k_relevant@5000 50% & #1 ± x") == r"map\_first\_k\_relevant@5000 50\% \& \#1 $\pm$ x"


@pytest.mark.slow
def test_report_command_writes_tables_and_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    all_rows = [r for r in make_rows() if r["bits"] in (None, 16) or r["protocol"] == "efficiency"]  # fewer figures
    for variant in {r["variant"] for r in all_rows}:
        write_cell(run_dir / "cells" / "medpix" / str(variant) / "x.jsonl", [r for r in all_rows if r["variant"] == variant])
    out = tmp_path / "report"
    assert cli_main(["report", str(run_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "medpix: mAP@all (tie-aware), unimodal protocol" in printed
    names = {p.name for p in out.rglob("*")}
    for stem in ("main_medpix_unimodal", "ablation_medpix_unimodal", "significance_medpix_unimodal",
                 "efficiency_medpix", "engines"):
        assert f"{stem}.md" in names and f"{stem}.tex" in names
    for stem in ("map_vs_bits_medpix_unimodal", "pr_radius_medpix_unimodal_16bits", "precision_at_n_medpix_unimodal_16bits",
                 "latency_vs_db_size", "expert_load_medpix"):
        for suffix, inches in (("", 7.0), ("_col", 3.5)):  # page and column width, saved at exactly that width
            png, pdf = out / "figures" / f"{stem}{suffix}.png", out / "figures" / f"{stem}{suffix}.pdf"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
            width, height = struct.unpack(">II", png.read_bytes()[16:24])
            assert width == round(inches * 200) and height > 300
    main_md = (out / "main_medpix_unimodal.md").read_text()
    assert main_md == main_table(pd.DataFrame(all_rows), dataset="medpix").to_markdown()
    # the folder holds exactly what its manifest lists, including the rows export
    manifest = json.loads((out / "report.json").read_text())
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == manifest["files"]
    assert "rows.jsonl.gz" in manifest["files"] and manifest["source"] == str(run_dir)
    if shutil.which("pdflatex"):
        proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=out,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:]
        assert (out / "tables.pdf").read_bytes()[:5] == b"%PDF-"


def test_report_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no result rows under {tmp_path / 'empty'} (expected cells/**/*.jsonl written by `run`)",
                   f"error: RUN_DIR {tmp_path / 'missing'} is not a folder"]


def test_study_figures_history_and_importances(tmp_path: Path) -> None:
    import optuna

    from benchmarks.report.figures import study_figures
    from benchmarks.tuning import open_storage

    storage = f"journal:{tmp_path / 'j.log'}"
    study = optuna.create_study(study_name="mcmfh-medpix-16", storage=open_storage(storage), direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 0.5 - (t.suggest_float("lr", 1e-4, 1e-2, log=True) - 1e-3) ** 2
                   + 0.001 * t.suggest_int("epochs", 10, 50), n_trials=8)
    paths, skipped = study_figures("mcmfh-medpix-16", storage, tmp_path / "fig")
    assert skipped == []
    assert sorted(p.name for p in paths) == sorted(f"optuna_{kind}_mcmfh-medpix-16.{ext}"
                                                   for kind in ("history", "importances") for ext in ("png", "pdf"))
    assert all(p.stat().st_size > 1000 for p in paths)


# ---- runner-shaped rows: metric names with placeholders, configurations, damaged values --------------------
def runner_rows(*, config: dict | None = None, dataset_fields: dict | None = None, seeds=SEEDS) -> list[dict]:
    """Rows as ``run`` writes them: ``map@k`` (k = 50), ``ndcg@k`` (k = 10, 50), ``p@n`` (k = N), ``p@r2``
    (no k; hashing methods only), per-cell efficiency rows; unimodal protocol only."""
    rng = np.random.default_rng(7)
    rows: list[dict] = []
    for method, base in (("ucmfh", 0.55), ("cca-itq", 0.45), ("real-valued", 0.70)):
        for bits in ([None] if method == "real-valued" else (16, 32)):
            for s in seeds:
                common = dict.fromkeys(ROW_FIELDS)
                common.update(run_id="r", dataset="medpix", label_scheme="location+topic", encoder="offline",
                              protocol="unimodal", method=method, variant=method, bits=bits, seed=s,
                              method_config=dict(config or {"reg": 1e-4}), cell_id=f"{method}-{bits}-{s}")
                common.update(dataset_fields or {})
                for task in TASKS:
                    for tie in ("aware", "index"):
                        for metric, k in (("map", None), ("map@k", 50), ("ndcg@k", 10), ("ndcg@k", 50), ("p@n", 10)):
                            rows.append({**common, "task": task, "tie": tie, "metric": metric, "k": k,
                                         "value": float(base + rng.normal(0, 0.02)), "chance": CHANCE[task]})
                        if bits is not None:
                            rows.append({**common, "task": task, "tie": tie, "metric": "p@r2", "k": None,
                                         "value": float(base + rng.normal(0, 0.02)), "chance": CHANCE[task]})
                for metric, value in (("encode_ms_per_item", 0.05), ("search_ms_per_query", 0.1),
                                      ("search_ms_per_query_real", 2.0), ("bytes_per_item", (bits or 4096) / 8),
                                      ("bytes_per_item_real", 2048.0)):
                    rows.append({**common, "task": "-", "tie": None, "metric": metric, "k": None, "value": value})
    return rows


def write_run(run_dir: Path, rows: list[dict]) -> Path:
    """One cell file per (variant, bits, seed, config) like ``run``; returns ``run_dir``."""
    cells: dict[str, list[dict]] = {}
    for r in rows:
        key = f"{r['variant']}-{r['bits']}-{r['seed']}-{abs(hash(json.dumps(r.get('method_config'), sort_keys=True)))}"
        cells.setdefault(key, []).append(r)
    for key, part in cells.items():
        write_cell(run_dir / "cells" / "medpix" / str(part[0]["variant"]) / f"{key}.jsonl", part)
    return run_dir


def expected_cell(df: pd.DataFrame, variant: str, task: str, bits, metric: str, k) -> tuple[float, float]:
    sel = df[(df["variant"] == variant) & (df["task"] == task) & (df["metric"] == metric) & (df["tie"] == "aware")]
    sel = sel[sel["bits"].isna()] if bits is None else sel[sel["bits"] == bits]
    sel = sel[sel["k"].isna()] if k is None else sel[sel["k"] == k]
    v = sel.groupby("seed")["value"].mean()
    return float(v.mean()), float(v.std(ddof=1))


@pytest.mark.parametrize(("name", "metric", "k"), [("map@50", "map@k", 50), ("ndcg@10", "ndcg@k", 10),
                                                    ("ndcg@50", "ndcg@k", 50), ("p@10", "p@n", 10),
                                                    ("p@r2", "p@r2", None)])
def test_metric_names_with_cutoffs_select_the_runner_rows(name: str, metric: str, k) -> None:
    df = pd.DataFrame(runner_rows())
    table = main_table(df, dataset="medpix", metric=name)
    data = table.data.set_index(["variant", "task", "bits_label"])
    mean, std = expected_cell(df, "ucmfh", "t2i", 32, metric, k)
    assert data.loc[("ucmfh", "t2i", "32"), "mean"] == pytest.approx(mean, abs=1e-12)
    assert data.loc[("ucmfh", "t2i", "32"), "std"] == pytest.approx(std, abs=1e-12)
    assert data.loc[("ucmfh", "t2i", "32"), "n_seeds"] == len(SEEDS)
    # efficiency table: the real-valued reference has no p@r2 rows -> "–", not a crash
    eff = efficiency_table(df, dataset="medpix", metric=name)
    line = next(r for r in eff.rows if r[0] == "real-valued")
    assert (line[2].plain() == "–") == (name == "p@r2")
    acc = df[(df["variant"] == "cca-itq") & (df["bits"] == 16) & (df["metric"] == metric) & (df["tie"] == "aware")]
    acc = acc[acc["k"].isna()] if k is None else acc[acc["k"] == k]
    per_seed = acc.groupby("seed")["value"].mean()
    assert eff.data.set_index(["variant", "bits_label"]).loc[("cca-itq", "16"), "mean"] == pytest.approx(per_seed.mean())


def test_ambiguous_metric_lists_the_cutoffs() -> None:
    df = pd.DataFrame(runner_rows())
    with pytest.raises(ReportError, match=r"several cut-offs k; choose one of ndcg@10, ndcg@50$"):
        main_table(df, dataset="medpix", metric="ndcg@k")


def _err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_report_cli_other_metrics_and_bad_requests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", runner_rows())
    out = tmp_path / "out"
    assert cli_main(["report", str(run), "--metric", "map@50", "--out", str(out), "--no-figures"]) == 0
    mean, std = expected_cell(pd.DataFrame(runner_rows()), "cca-itq", "i2t", 16, "map@k", 50)
    md = (out / "main_medpix_unimodal.md").read_text()
    assert md_cell(md, "cca-itq", 1).strip("*") == f"{mean:.3f} ± {std:.3f}"
    assert "mAP@50 (tie-aware)" in (out / "efficiency_medpix.md").read_text()
    capsys.readouterr()
    assert cli_main(["report", str(run), "--metric", "p@r2", "--out", str(tmp_path / "o2"), "--no-figures"]) == 0
    capsys.readouterr()
    assert cli_main(["report", str(run), "--metric", "bogus", "--out", str(tmp_path / "o3"), "--no-figures"]) == 2
    assert _err_lines(capsys) == ["error: no rows of metric 'bogus'; metrics found: map, map@50, ndcg@10, ndcg@50, "
                                  "p@10, p@r2"]
    assert cli_main(["report", str(run), "--protocols", "paired", "--out", str(tmp_path / "o4"), "--no-figures"]) == 2
    assert _err_lines(capsys) == ["error: no rows of protocol 'paired' in the run folder; protocols present: unimodal"]
    assert cli_main(["report", str(run), "--metric", "ndcg@k", "--out", str(tmp_path / "o5"), "--no-figures"]) == 2
    assert _err_lines(capsys) == ["error: metric 'ndcg@k' has rows at several cut-offs k; choose one of ndcg@10, ndcg@50"]
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()


@pytest.mark.parametrize("field", ["method_config", "dataset_options", "dataset_seed", "encoder"])
def test_different_configurations_are_not_averaged(tmp_path: Path, field: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # seeds 0-2 with one setting, seeds 3-4 with another setting of the same method and bits
    first = {"dataset_options": {"n_train": "200"}, "dataset_seed": 0}
    second = dict(first)
    config = None
    if field == "method_config":
        config = {"reg": 1e-2}
    elif field == "dataset_options":
        second["dataset_options"] = {"n_train": "400"}
    elif field == "dataset_seed":
        second["dataset_seed"] = 1
    else:
        second["encoder"] = "biomedclip"
    rows = runner_rows(dataset_fields=first) + runner_rows(config=config, dataset_fields=second, seeds=(3, 4))
    df = pd.DataFrame(rows)
    with pytest.raises(ReportError, match=rf"rows of 'cca-itq' at 16 bits on 'medpix' come from 2 configurations "
                                          rf"\(differing in {field}[.:].*report a narrower folder"):
        main_table(df, dataset="medpix")
    for fn in (efficiency_table, significance_table):
        with pytest.raises(ReportError, match="come from 2 configurations"):
            fn(df, dataset="medpix", headline="ucmfh") if fn is significance_table else fn(df, dataset="medpix")
    # one configuration alone: the mean is over its own seeds only
    alone = df[df["seed"] <= 2]
    mean, std = expected_cell(alone, "cca-itq", "i2t", 16, "map", None)
    data = main_table(alone, dataset="medpix").data.set_index(["variant", "task", "bits_label"])
    assert data.loc[("cca-itq", "i2t", "16"), ["mean", "std", "n_seeds"]].tolist() == pytest.approx([mean, std, 3])
    run = write_run(tmp_path / "run", rows)
    assert cli_main(["report", str(run), "--out", str(tmp_path / "o"), "--no-figures"]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("error: rows of 'cca-itq' at 16 bits on 'medpix' come from 2 configurations")


def test_rows_without_the_new_fields_and_duplicates_of_one_configuration() -> None:
    old = pd.DataFrame(runner_rows())  # no dataset_options / dataset_seed columns at all
    assert "dataset_seed" not in old.columns
    new = pd.DataFrame(runner_rows(dataset_fields={"dataset_options": {"n_train": "200"}, "dataset_seed": 0}))
    a = main_table(old, dataset="medpix").data.set_index(["variant", "task", "bits_label"])["mean"]
    b = main_table(new, dataset="medpix").data.set_index(["variant", "task", "bits_label"])["mean"]
    pd.testing.assert_series_equal(a.sort_index(), b.sort_index())
    # the same seed of the same configuration twice (a cell copied into a second run folder) counts once
    doubled = pd.concat([new, new[new["seed"] == 0]])
    data = main_table(doubled, dataset="medpix").data.set_index(["variant", "task", "bits_label"])
    mean, std = expected_cell(new, "ucmfh", "i2t", 16, "map", None)
    assert data.loc[("ucmfh", "i2t", "16"), ["mean", "std", "n_seeds"]].tolist() == pytest.approx([mean, std, 3])


def test_significance_pairs_models_not_tasks() -> None:
    df = pd.DataFrame(runner_rows())
    table = significance_table(df, dataset="medpix", headline="ucmfh")
    res = table.data.set_index("method").loc["cca-itq"]
    sel = df[(df["metric"] == "map") & (df["tie"] == "aware")]
    h = sel[sel["variant"] == "ucmfh"].groupby(["bits", "seed"])["value"].mean()
    o = sel[sel["variant"] == "cca-itq"].groupby(["bits", "seed"])["value"].mean()
    assert res["n"] == len(h) == 2 * len(SEEDS)
    assert res["wilcoxon_p"] == pytest.approx(stats.wilcoxon(h.to_numpy(), o.to_numpy()).pvalue, rel=1e-12)
    assert res["t_stat"] == pytest.approx(stats.ttest_rel(h.to_numpy(), o.to_numpy()).statistic, rel=1e-12)


# ---- engines: "–" for exact engines, one colour per engine -----------------------------------------------------
def engine_rows() -> list[dict]:
    rows = []
    for engine, approx in (("popcount", False), ("BFlat", False), ("BHash4", True), ("FlatIP", False)):
        for bits in ([None] if engine == "FlatIP" else (16, 32)):
            for n in (1_000, 10_000):
                metrics = [("latency_ms_median", 0.01 * n / 1000), ("latency_ms_p95", 0.02 * n / 1000)]
                if approx:
                    metrics.append(("recall@k", 0.9))
                for metric, value in metrics:
                    row = dict.fromkeys(ROW_FIELDS)
                    row.update(dataset="random", protocol="efficiency", task="-", seed=0, bits=bits, metric=metric,
                               value=value, engine=engine, db_size=n)
                    rows.append(row)
    return rows


def test_engine_table_shows_dash_for_exact_engines() -> None:
    table = engine_table(pd.DataFrame(engine_rows()))
    md = table.to_markdown()
    assert "nan" not in md.lower()
    col = table.header_labels().index("recall@k")
    for row in table.rows:
        assert row[col] == ("0.9" if row[0] == "BHash4 (approx.)" else "–")


def test_latency_figure_one_colour_per_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.report import figures
    from benchmarks.report.rows import normalise_rows

    captured = {}

    def keep(fig, stem):
        captured["lines"] = [(ln.get_label().split(" (approx.")[0], ln.get_color(), ln.get_linestyle())
                             for ln in fig.axes[0].get_lines()]
        return []

    monkeypatch.setattr(figures, "save_figure", keep)
    plot_latency_vs_db_size(normalise_rows(pd.DataFrame(engine_rows())), tmp_path)
    colour = {label: c for label, c, _ in captured["lines"]}
    style = {label: ls for label, _, ls in captured["lines"]}
    engines = ("popcount", "BFlat", "BHash4")
    for b in ("16", "32"):
        assert len({colour[f"{e}, {b} bits"] for e in engines}) == 3  # three binary engines, three colours
    for e in engines:
        assert colour[f"{e}, 16 bits"] == colour[f"{e}, 32 bits"] and style[f"{e}, 16 bits"] != style[f"{e}, 32 bits"]
    assert colour["FlatIP"] not in {colour[f"{e}, 16 bits"] for e in engines}
    styles = latency_styles([("a", "16"), ("b", "16"), ("a", "64"), ("f", "float")])
    assert styles[("a", "16")]["color"] == styles[("a", "64")]["color"] != styles[("b", "16")]["color"]


# ---- user errors and damaged rows ----------------------------------------------------------------------------
def test_report_out_is_a_file_and_bad_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", runner_rows(seeds=(0,)))
    target = tmp_path / "file.txt"
    target.write_text("x")
    assert cli_main(["report", str(run), "--out", str(target), "--no-figures"]) == 2
    assert cli_main(["report", str(run), "--out", str(target / "sub"), "--no-figures"]) == 2
    assert _err_lines(capsys) == [
        f"error: output path {target} cannot be a folder: {target} is an existing file (choose another --out)",
        f"error: output path {target / 'sub'} cannot be a folder: {target} is an existing file (choose another --out)"]
    assert target.read_text() == "x"
    no_rows = tmp_path / "no_rows"
    (no_rows / "cells").mkdir(parents=True)
    (no_rows / "cells" / "a.jsonl").write_text("\n")
    damaged = tmp_path / "damaged"
    (damaged / "cells").mkdir(parents=True)
    (damaged / "cells" / "a.jsonl").write_text('{"metric": "map"\n')
    assert cli_main(["report", str(no_rows), "--out", str(tmp_path / "o1")]) == 2
    assert cli_main(["report", str(damaged), "--out", str(tmp_path / "o2")]) == 2
    assert cli_main(["report", str(target), "--out", str(tmp_path / "o3")]) == 2
    err = _err_lines(capsys)
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert err[0] == f"error: no result rows under {no_rows} (expected cells/**/*.jsonl written by `run`)"
    assert err[1].startswith(f"error: {damaged / 'cells' / 'a.jsonl'}:1: not a JSON result row")
    assert err[2] == f"error: RUN_DIR {target} is not a folder"


def test_rows_without_numeric_values_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = runner_rows()
    run = write_run(tmp_path / "run", good)
    bad_file = run / "cells" / "medpix" / "ucmfh" / "zz-damaged.jsonl"
    template = next(r for r in good if r["variant"] == "ucmfh" and r["metric"] == "map" and r["bits"] == 16)
    bad = [{**template, "value": None}, {**template, "value": "0.9"}, {**template, "value": True}]
    missing = {k: v for k, v in template.items() if k != "value"}
    bad_file.write_text("".join(json.dumps(r) + "\n" for r in [*bad, missing]))
    out = tmp_path / "out"
    assert cli_main(["report", str(run), "--out", str(out), "--no-figures"]) == 0
    err = _err_lines(capsys)
    assert err == [f"warning: 4 result rows without a numeric 'value' left out (e.g. in {bad_file})"]
    # the table equals the one built from the good rows alone
    assert (out / "main_medpix_unimodal.md").read_text() == main_table(pd.DataFrame(good), dataset="medpix").to_markdown()
