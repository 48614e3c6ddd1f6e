"""Figures a reviewer accepts (issue 16 item 6, issue 13 item 10): one colour and marker per method in every
figure, display names, log N axis, PR curves from the first non-empty Hamming ball, a visible labelled chance
line, no error bar or "± std" for one seed, page and column widths with text of at least 7 pt inside the figure,
approximate engines marked in the latency figure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import accuracy_rows, row

from benchmarks.report import figures
from benchmarks.report.rows import normalise_rows
from benchmarks.report.style import CHANCE_STYLE, MIN_FONT_PT, PALETTE, method_style, registry_order


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, object]]:
    """Figures handed to ``save_figure``, by file stem, instead of written."""
    out: dict[str, object] = {}

    def keep(fig, stem: Path, **_) -> list[Path]:
        out[stem.name] = fig
        return [stem]

    monkeypatch.setattr(figures, "save_figure", keep)
    yield out
    import matplotlib.pyplot as plt

    for fig in out.values():
        plt.close(fig)


def curve_rows(methods=("mcmfh", "ucmfh", "cca-itq"), seeds=(0, 1, 2)) -> pd.DataFrame:
    rows = []
    for i, m in enumerate(methods):
        rows += accuracy_rows({(m, b, s): 0.4 + 0.05 * i + 0.01 * s for b in (16, 32) for s in seeds})
        for s in seeds:
            for n in (1, 10, 100, 1000):
                rows.append(row(method=m, seed=s, metric="p@n", k=n, value=0.6 - 0.1 * i - n / 1e4, chance=0.2))
            for r in range(0, 5):
                rows.append(row(method=m, seed=s, metric="pr_radius_precision", k=r, value=0.9 - 0.1 * r, chance=0.25))
                rows.append(row(method=m, seed=s, metric="pr_radius_recall", k=r, value=r / 4, chance=r / 4))
    return normalise_rows(pd.DataFrame(rows))


def lines_by_label(fig) -> dict[str, object]:
    return {ln.get_label(): ln for ax in fig.axes for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def test_one_colour_and_marker_per_method_in_every_figure(tmp_path: Path, captured: dict) -> None:
    df = curve_rows()
    figures.plot_map_vs_bits(df, tmp_path, dataset="medpix", protocol="unimodal")
    figures.plot_precision_at_n(df, tmp_path, dataset="medpix", protocol="unimodal")
    figures.plot_pr_curves(df, tmp_path, dataset="medpix", protocol="unimodal")
    assert len(captured) == 2 * 3
    styles: dict[str, set] = {}
    for fig in captured.values():
        for label, line in lines_by_label(fig).items():
            styles.setdefault(label, set()).add((line.get_color(), line.get_marker()))
    assert {"MCMFH", "UCMFH", "CCA-ITQ", "chance"} <= set(styles) and "mcmfh" not in styles  # display names
    for name, label in (("mcmfh", "MCMFH"), ("ucmfh", "UCMFH"), ("cca-itq", "CCA-ITQ")):
        i = registry_order().index(name)
        assert styles[label] == {(PALETTE[i % len(PALETTE)], method_style(name)["marker"])}
    assert len({next(iter(styles[x]))[0] for x in ("MCMFH", "UCMFH", "CCA-ITQ")}) == 3
    assert len({method_style(n)["color"] for n in registry_order()}) == len(registry_order())


def test_precision_at_n_uses_a_log_axis(tmp_path: Path, captured: dict) -> None:
    figures.plot_precision_at_n(curve_rows(), tmp_path, dataset="medpix", protocol="unimodal")
    fig = captured["precision_at_n_medpix_unimodal_16bits"]
    assert all(ax.get_xscale() == "log" for ax in fig.axes)


def test_pr_curve_starts_at_the_first_non_empty_ball(tmp_path: Path, captured: dict) -> None:
    rows = []
    # seed 0: balls r = 0, 1 empty (no pair within r: recall chance 0); seed 1: only r = 0 empty
    table = {0: {0: (0, 0, 0), 1: (0, 0, 0), 2: (0.8, 0.3, 0.1), 3: (0.6, 0.6, 0.3), 4: (0.5, 1.0, 1.0)},
             1: {0: (0, 0, 0), 1: (0.9, 0.1, 0.05), 2: (0.7, 0.4, 0.2), 3: (0.6, 0.7, 0.5), 4: (0.5, 1.0, 1.0)}}
    for seed, radii in table.items():
        for r, (p, rec, within) in radii.items():
            rows.append(row(method="ucmfh", seed=seed, metric="pr_radius_precision", k=r, value=p, chance=0.25))
            rows.append(row(method="ucmfh", seed=seed, metric="pr_radius_recall", k=r, value=rec, chance=within))
    df = normalise_rows(pd.DataFrame(rows))
    points = figures.pr_points(df).set_index("k")
    assert list(points.index) == [1.0, 2.0, 3.0, 4.0]  # r = 0 empty in both seeds: no point
    assert points["precision"].tolist() == pytest.approx([0.9, 0.75, 0.6, 0.5])
    assert points["recall"].tolist() == pytest.approx([0.1, 0.35, 0.65, 1.0])
    assert points["n_seeds"].tolist() == [1, 2, 2, 2]
    figures.plot_pr_curves(df, tmp_path, dataset="medpix", protocol="unimodal")
    line = lines_by_label(captured["pr_radius_medpix_unimodal_16bits"])["UCMFH"]
    assert list(line.get_ydata()) == pytest.approx([0.9, 0.75, 0.6, 0.5]) and min(line.get_ydata()) > 0
    # rows without chance: a ball with precision 0 and recall 0 counts as empty
    old = normalise_rows(pd.DataFrame([{**r, "chance": None} for r in rows]))
    assert 0.0 not in figures.pr_points(old)["k"].tolist()


def test_chance_line_is_on_top_distinct_and_labelled(tmp_path: Path, captured: dict) -> None:
    df = curve_rows(methods=("mcmfh", "random"))
    figures.plot_map_vs_bits(df, tmp_path, dataset="medpix", protocol="unimodal")
    figures.plot_precision_at_n(df, tmp_path, dataset="medpix", protocol="unimodal")
    for fig in captured.values():
        for ax in fig.axes:
            lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
            chance = [ln for ln in lines if ln.get_label() == "chance"]
            assert len(chance) == 1 and chance[0].get_color() == CHANCE_STYLE["color"]
            assert chance[0].get_zorder() > max(ln.get_zorder() for ln in lines if ln is not chance[0])
            assert chance[0].get_linestyle() == ":" and lines_by_label(fig)["Random"].get_color() != "black"
        assert "chance" in [t.get_text() for t in fig.legends[0].get_texts()]


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_error_bars_and_titles_follow_the_seed_count(tmp_path: Path, captured: dict, seeds: tuple) -> None:
    figures.plot_map_vs_bits(curve_rows(seeds=seeds), tmp_path, dataset="medpix", protocol="unimodal")
    for fig in captured.values():
        title = fig._suptitle.get_text().replace("\n", " ")
        bars = [c for ax in fig.axes for c in ax.containers]
        if len(seeds) == 1:
            assert "n = 1" in title and "±" not in title and bars == []
        else:
            assert "mean ± std over 3 seeds" in title and len(bars) == 2 * 3  # three methods, two panels


def test_page_and_column_widths_with_readable_text(tmp_path: Path, captured: dict) -> None:
    from matplotlib.text import Text

    figures.plot_map_vs_bits(curve_rows(), tmp_path, dataset="medpix", protocol="unimodal")
    assert sorted(captured) == ["map_vs_bits_medpix_unimodal", "map_vs_bits_medpix_unimodal_col"]
    for stem, fig in captured.items():
        assert fig.get_size_inches()[0] == pytest.approx(3.5 if stem.endswith("_col") else 7.0)
        fig.canvas.draw()
        texts = [t for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
        assert texts and all(t.get_fontsize() >= MIN_FONT_PT for t in texts)
        # everything drawn (titles, tick labels, legend) lies inside the figure: nothing is cut at this width
        drawn = fig.get_tightbbox(fig.canvas.get_renderer())
        width, height = fig.get_size_inches()
        assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01


def test_latency_figure_marks_approximate_engines(tmp_path: Path, captured: dict) -> None:
    rows = []
    for engine, recall in (("BFlat", None), ("BHash4", 0.0031)):
        for n in (1_000, 10_000):
            rows.append(row(method=None, dataset="random", protocol="efficiency", task="-", engine=engine, db_size=n,
                            metric="latency_ms_median", value=0.001 * n, tie=None, chance=None))
            if recall is not None:
                rows.append(row(method=None, dataset="random", protocol="efficiency", task="-", engine=engine,
                                db_size=n, metric="recall@k", value=recall, tie=None, chance=None))
    figures.plot_latency_vs_db_size(normalise_rows(pd.DataFrame(rows)), tmp_path)
    lines = lines_by_label(captured["latency_vs_db_size_col"])
    assert set(lines) == {"BFlat, 16 bits", "BHash4, 16 bits (approx., recall@k ≥ 0.0031)"}
    assert lines["BHash4, 16 bits (approx., recall@k ≥ 0.0031)"].get_markerfacecolor() == "none"


def test_saving_the_same_figure_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    from benchmarks.report.style import plt, save_figure

    written = []
    for name in ("a", "b"):
        fig, ax = plt().subplots(figsize=(3, 2))
        ax.plot([16, 32, 64], [0.3, 0.35, 0.4], marker="o")
        written.append(save_figure(fig, tmp_path / name))
    for first, second in zip(*written, strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name
    assert b"CreationDate" not in written[0][1].read_bytes()
