"""One look for every report figure: method colours and markers, display names, sizes and fonts, saving.

- **One colour and marker per method across every figure**: :func:`method_style` reads a fixed mapping keyed
  by the method registry's order (``METHODS.names()``, sorted registry names): entry i gets colour
  ``PALETTE[i % 20]`` and marker ``MARKERS[i % 11]`` (distinct colours for up to 20 registered entries). A relabelled
  configuration (``"ddbh (tuned)"``) keeps its entry's colour and marker and gets a dashed line.
- **Display names** come from the registry (:func:`methods.display_name`: ``mcmfh`` → ``MCMFH``).
- **Chance** is one style everywhere (:data:`CHANCE_STYLE`): black, dotted, drawn on top of every method.
- **Two sizes** (:data:`SIZES`): page width (7 in) and column width (3.5 in, file suffix ``_col``), text at
  7–8 pt (:data:`RC`), legends below the axes inside the figure (``constrained`` layout), saved without
  ``bbox_inches="tight"`` so the files have exactly these widths.
"""

from __future__ import annotations

import textwrap
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Qualitative palette indexed by registry order: matplotlib ``tab10``, then the dark shades of ``tab20b`` /
#: ``tab20c`` (20 distinct colours; black is kept for the chance line).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354",
           "#756bb1", "#636363")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h")
#: The chance line: distinct from every method (black, dotted), above them (high z-order), labelled.
CHANCE_STYLE: dict[str, Any] = {"color": "black", "linestyle": ":", "linewidth": 1.8, "zorder": 20,
                                "label": "chance"}
#: Text sizes in points: nothing below 7 pt at the printed size.
RC: dict[str, Any] = {"font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "xtick.labelsize": 7,
                      "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 8, "lines.markersize": 4,
                      "lines.linewidth": 1.3, "errorbar.capsize": 2}
MIN_FONT_PT = 7.0
DPI = 200


@dataclass(frozen=True)
class Size:
    """One figure size: ``width`` in inches, file-name ``suffix``, panels laid out in one ``row`` or one column."""

    name: str
    width: float
    suffix: str
    row: bool


SIZES = (Size("page", 7.0, "", True), Size("column", 3.5, "_col", False))


@lru_cache(maxsize=1)
def registry_order() -> tuple[str, ...]:
    """Registered method names in registry order (empty when the registry cannot be imported)."""
    try:
        from methods import METHODS

        return tuple(METHODS.names())
    except Exception:  # a report from saved rows must not fail on a registry import problem
        return ()


def entry_of(variant: str) -> str:
    """The registry name under a relabelled variant: ``"ddbh (tuned)"`` → ``"ddbh"``."""
    return variant.split(" (", 1)[0]


def method_style(variant: str) -> dict[str, Any]:
    """``{"color", "marker", "linestyle"}`` of a method, the same in every figure.

    Registry entries get index i of :func:`registry_order`; names the registry does not know get a stable index
    after them (CRC32 of the name). A relabelled configuration is drawn dashed.
    """
    entry = entry_of(variant)
    order = registry_order()
    i = order.index(entry) if entry in order else len(order) + zlib.crc32(entry.encode()) % 97
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": "--" if variant != entry or entry == "real-valued" else "-"}


def display(variant: str) -> str:
    """Display name of a (possibly relabelled) variant: ``"mcmfh"`` → ``"MCMFH"``, ``"ddbh (tuned)"`` →
    ``"DDBH (tuned)"``."""
    entry = entry_of(variant)
    try:
        from methods import display_name
    except Exception:  # saved rows only
        return variant
    return display_name(entry) + variant[len(entry):]


def plt() -> Any:
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def sizes() -> Iterator[Size]:
    """The figure sizes to draw, inside :data:`RC` (a ``matplotlib.rc_context`` per size)."""
    pyplot = plt()
    for size in SIZES:
        with pyplot.rc_context(RC):
            yield size


def panel_figure(n: int, size: Size, *, panel_height: float = 2.3, extra_height: float = 0.9) -> tuple[Any, list[Any]]:
    """A ``constrained``-layout figure of ``n`` panels: one row at page width, one column at column width."""
    pyplot = plt()
    rows, cols = (1, n) if size.row else (n, 1)
    height = (panel_height if size.row else panel_height * n) + extra_height
    fig = pyplot.figure(figsize=(size.width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for line in axes for ax in line]


def wrap(text: str, size: Size) -> str:
    """``text`` wrapped to the figure width at about 14 characters per inch (8 pt)."""
    return textwrap.fill(text, width=max(20, int(size.width * 14)))


def legend_below(fig: Any, axes: list[Any], size: Size) -> None:
    """One legend for all panels below them (unique labels, first handle of each), as many columns as fit."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if not seen:
        return
    longest = max(len(label) for label in seen)
    fit = int(size.width * 72 / (longest * 4.3 + 28))
    fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncols=max(1, min(len(seen), fit)),
               frameon=False)


def save_figure(fig: Any, stem: Path, *, tight: bool = False) -> list[Path]:
    """Write ``stem.png`` (:data:`DPI`) and ``stem.pdf``, close the figure, return both paths.

    Saved at the figure's own size unless ``tight`` (``bbox_inches="tight"``, for figures drawn by other libraries
    with legends outside the axes). The PDF carries no creation date, so the same figure gives the same bytes and a
    regenerated report folder differs from the committed one only where its numbers do."""
    pyplot = plt()
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]
    for path in paths:
        metadata = {"CreationDate": None} if path.suffix == ".pdf" else None
        fig.savefig(path, dpi=DPI, metadata=metadata, **({"bbox_inches": "tight"} if tight else {}))
        if fig.get_layout_engine() is not None:  # positions are settled by the first save: keep them
            fig.set_layout_engine("none")
    pyplot.close(fig)
    return paths
