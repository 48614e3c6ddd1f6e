"""The console summary of ``run``: verbatim cells, n stated, flags for degenerate codes and router collapse."""

from __future__ import annotations

from benchmarks.report.console import summary_tables


def _row(variant: str, seed: int, value: float, **extra) -> dict:
    base = {"dataset": "toy", "protocol": "unimodal", "variant": variant, "bits": 16, "seed": seed, "task": "i2t",
            "tie": "aware", "metric": "map", "value": value, "chance": 0.25}
    return {**base, **extra}


def test_one_seed_has_no_plus_minus_and_cells_are_verbatim() -> None:
    rows = [_row("a", 0, 0.5), {**_row("a", 0, 5120.0), "metric": "bytes_per_item", "tie": None}]
    (title, text), = summary_tables(rows)
    assert "one seed (n = 1)" in title and "over 1 seeds" not in title
    assert "| 0.500 " in text and "±" not in text.split("\n")[2]
    assert "5,120" in text and "e+03" not in text and "nan" not in text


def test_degenerate_codes_and_router_collapse_are_flagged() -> None:
    rows = [_row("mcmfh", s, 0.25, degenerate_codes=s == 1, router_collapse=False) for s in (0, 1)]
    rows += [_row("ucmfh", s, 0.4 + s / 100, degenerate_codes=False, router_collapse=None) for s in (0, 1)]
    rows += [_row("moe", 0, 0.3, degenerate_codes=False, router_collapse=True)]
    (title, text), = summary_tables(rows)
    lines = {line.split("|")[1].strip(): line for line in text.splitlines()[2:]}
    assert "degenerate codes" in lines["mcmfh"] and "0.250 ± 0.000" in lines["mcmfh"]
    assert "router collapse" in lines["moe"]
    assert lines["ucmfh"].rstrip().endswith("| –       |") or "–" in lines["ucmfh"].split("|")[-2]
    assert "0.405 ± 0.007" in lines["ucmfh"]
