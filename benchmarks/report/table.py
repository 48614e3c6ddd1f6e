"""The table model shared by every report table (cells with mean ± std, bold best, Markdown and LaTeX) and the
number formatting every printed or written table of the harness uses.

Conventions (issue 13 items 8, 10, 11; issue 16 item 7):

- cells are formatted once, here, and printed verbatim (``tabulate(..., disable_numparse=True)``), so ``0.5000``
  stays ``0.5000``; a missing value is ``–`` (:data:`MISSING`), never ``nan``;
- a cell of one seed shows its mean only: no ``±``, and ``(n = 1)`` when other cells of the table have more seeds;
- bold is decided on the value **at the printed precision** (:func:`rounded`): values that print alike are all
  bold;
- counts, bytes, rates and times are written in plain notation (:func:`plain_number`: ``5,120``, ``12.3 k``,
  ``0.0123``), never ``5.12e+03``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: How every table shows a missing value.
MISSING = "–"


def is_missing(value: Any) -> bool:
    """``True`` for ``None``, NaN / ±inf floats and pandas' missing markers."""
    if value is None:
        return True
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return not math.isfinite(float(value))
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts
        return False


def rounded(value: float, digits: int) -> float:
    """``value`` as printed with ``digits`` decimals, read back (``0.5124`` at 3 digits → ``0.512``).

    Bold marks are decided on this value so two cells that print alike are treated alike (issue 13 item 11).
    """
    return float(f"{value:.{digits}f}")


#: (smallest magnitude, divisor, suffix), largest first.
_SUFFIXES = ((1e12, 1e12, "T"), (1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k"))


def plain_number(value: Any, *, digits: int = 3) -> str:
    """A number in plain notation with about ``digits`` significant digits; :data:`MISSING` when missing.

    ``5120`` → ``"5,120"``, ``12345.6`` → ``"12.3 k"``, ``3.2e6`` → ``"3.2 M"``, ``0.01234`` → ``"0.0123"``,
    ``2.0`` → ``"2"``, ``1e-7`` → ``"1e-07"`` is never produced (tiny magnitudes print as ``"0.0000001"``).

    Values below 10,000 keep thousands separators (``"5,120"``); from 10,000 on an SI suffix is used (k, M, G, T).
    Integral values below 10,000 print exactly.

    Parameters
    ----------
    value : float or int or None
    digits : int
        Significant digits (at least 1).
    """
    if is_missing(value):
        return MISSING
    x = float(value)
    if x == 0:
        return "0"
    mag = abs(x)
    for i, (threshold, scale, suffix) in enumerate(_SUFFIXES):
        if mag >= threshold:
            text = _sig(x / scale, digits)
            if abs(float(text)) >= 1000 and i > 0:  # 999,999 rounds to 1000 k: write 1 M
                _, scale, suffix = _SUFFIXES[i - 1]
                text = _sig(x / scale, digits)
            return f"{text} {suffix}"
    if x.is_integer():
        return f"{int(x):,}"
    return _sig(x, digits, thousands=True)


def _sig(x: float, digits: int, *, thousands: bool = False) -> str:
    """``x`` with ``digits`` significant digits in fixed notation, trailing zeros dropped."""
    digits = max(1, digits)
    exponent = math.floor(math.log10(abs(x))) if x else 0
    decimals = max(0, digits - 1 - exponent)
    text = f"{round(x, decimals):{',' if thousands else ''}.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_table(
    rows: Sequence[Sequence[Any]], headers: Sequence[str], *, tablefmt: str = "github",
    colalign: Sequence[str] | None = None,
) -> str:
    """Any harness table as text: cells verbatim (no re-parsing of ``"0.5000"``), missing cells as ``–``.

    Strings are kept as they are; ``None`` / NaN become :data:`MISSING`; other numbers go through
    :func:`plain_number`. The one place where the harness calls ``tabulate`` for its own tables (the runner's
    console summary and the commands are meant to use it too).

    Parameters
    ----------
    rows : sequence of sequences
        Table body, one sequence per row.
    headers : sequence of str
    tablefmt : str
        A ``tabulate`` format (``"github"``, ``"pipe"``).
    colalign : sequence of str, optional
        Per-column alignment (``"left"``, ``"right"``).
    """
    from tabulate import tabulate

    body = [[_cell_text(c) for c in row] for row in rows]
    kwargs: dict[str, Any] = {"colalign": list(colalign)} if colalign else {}
    return tabulate(body, headers=list(headers), tablefmt=tablefmt, disable_numparse=True, **kwargs)


def _cell_text(cell: Any) -> str:
    if isinstance(cell, Stat):
        return cell.markdown()
    if isinstance(cell, str):
        return cell
    if is_missing(cell):
        return MISSING
    if isinstance(cell, (int, float)) and not isinstance(cell, bool):
        return plain_number(cell)
    return str(cell)


@dataclass(frozen=True)
class Stat:
    """A mean ± std cell.

    Attributes
    ----------
    mean, std : float
        ``std`` is not shown when NaN or when ``n < 2`` (one seed has no spread to show).
    n : int
        Number of seeds.
    bold : bool
        Best of its column (at printed precision).
    digits : int
        Decimal places.
    marker : str
        Appended mark (e.g. ``"†"`` for a reference row).
    show_n : bool
        Append ``(n = <n>)``: the table's other cells have another seed count.
    """

    mean: float
    std: float = float("nan")
    n: int = 1
    bold: bool = False
    digits: int = 3
    marker: str = ""
    show_n: bool = False

    @property
    def shown_mean(self) -> float:
        """The mean at the printed precision (what bold is decided on)."""
        return rounded(self.mean, self.digits) if math.isfinite(self.mean) else float("nan")

    def _core(self, pm: str) -> str:
        text = f"{self.mean:.{self.digits}f}"
        if self.n > 1 and math.isfinite(self.std):
            text += f" {pm} {self.std:.{self.digits}f}"
        return text

    def plain(self) -> str:
        """``"0.512 ± 0.013"`` (``"0.512"`` for one seed, ``"–"`` for NaN), then the marker and ``(n = k)``."""
        if not math.isfinite(self.mean):
            return MISSING
        return self._core("±") + self.marker + (f" (n = {self.n})" if self.show_n else "")

    def markdown(self) -> str:
        if not math.isfinite(self.mean):
            return MISSING
        core = self._core("±")
        core = f"**{core}**" if self.bold else core
        return core + self.marker + (f" (n = {self.n})" if self.show_n else "")

    def latex(self) -> str:
        if not math.isfinite(self.mean):
            return "--"
        text = self._core("$\\pm$")
        text = f"\\textbf{{{text}}}" if self.bold else text
        text += "$^\\dagger$" if self.marker == "†" else latex_escape(self.marker)
        return text + (f" ($n = {self.n}$)" if self.show_n else "")


def bold_best(values: Sequence[float], digits: int) -> list[bool]:
    """Which of ``values`` print as the best (highest) at ``digits`` decimals; NaN never bold.

    ``[0.5124, 0.5121, 0.49]`` at 3 digits → ``[True, True, False]``: both print ``0.512``.
    """
    shown = [rounded(v, digits) if math.isfinite(v) else float("nan") for v in values]
    finite = [s for s in shown if math.isfinite(s)]
    if not finite:
        return [False] * len(values)
    best = max(finite)
    return [math.isfinite(s) and s == best for s in shown]


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "†": r"$^\dagger$", "×": r"$\times$", "≥": r"$\geq$", "≤": r"$\leq$",
                  "Δ": r"$\Delta$", "–": "--", "—": "---", "−": "$-$", "<": r"$<$", ">": r"$>$",
                  "→": r"$\rightarrow$", "·": r"$\cdot$", "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (``_``, ``%``, ``&``, ...; ``±`` → ``$\\pm$``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def header_spans(groups: Sequence[str]) -> list[tuple[str, int, int]]:
    """Runs of equal consecutive group names as ``(group, first column, last column)``, 1-based; empty groups
    are one run per column (each gets its own empty header cell)."""
    spans: list[tuple[str, int, int]] = []
    for i, g in enumerate(groups, 1):
        if g and spans and spans[-1][0] == g:
            spans[-1] = (g, spans[-1][1], i)
        else:
            spans.append((g, i, i))
    return spans


@dataclass
class Table:
    """A rendered-on-demand table.

    Attributes
    ----------
    name : str
        File stem (``main_medpix_unimodal``) and LaTeX label suffix.
    title : str
        Caption.
    columns : list[tuple[str, str]]
        ``(group, label)`` per column; consecutive equal non-empty groups share a spanning header in LaTeX
        (``\\multicolumn``) with a ``\\cmidrule`` under exactly those columns; group ``""`` for none. The first
        column holds row labels.
    rows : list[list[str | Stat]]
    notes : list[str]
        Lines printed under the table (test names, chance level, markers, tuning budget).
    data : pd.DataFrame
        The tidy numbers behind the table.
    rules_before : set[int]
        Row indices preceded by a ``\\midrule`` (e.g. the chance row).
    align : list[str] | None
        ``"left"`` / ``"right"`` per column; default: first column left, the others right.
    """

    name: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    rules_before: set[int] = field(default_factory=set)
    align: list[str] | None = None

    def alignment(self) -> list[str]:
        """Per-column alignment (:attr:`align`, or label column left and the rest right)."""
        return list(self.align) if self.align else ["left"] + ["right"] * (len(self.columns) - 1)

    def header_labels(self) -> list[str]:
        """One-line column names (``"i2t 16 bits"``) for Markdown."""
        return [f"{g} {lab}".strip() for g, lab in self.columns]

    def to_text(self, tablefmt: str = "pipe") -> str:
        """The table body alone (no title, no notes), cells verbatim (:func:`format_table`)."""
        return format_table(self.rows, self.header_labels(), tablefmt=tablefmt, colalign=self.alignment())

    def to_markdown(self) -> str:
        """Pipe-format Markdown: the title as a bold line, the table, then the notes."""
        notes = "".join(f"\n{n}  " for n in self.notes)
        return f"**{self.title}**\n\n{self.to_text()}\n{notes}\n"

    def to_latex(self) -> str:
        """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``).

        Every row of the tabular has exactly one cell per column of the column spec: a spanning header is a
        ``\\multicolumn{n}{c}{...}`` counting for ``n`` columns, a column without a group gets an empty cell.
        """
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 f"\\caption{{{latex_escape(self.title)}}}", f"\\label{{tab:{self.name}}}",
                 f"\\begin{{tabular}}{{{''.join(a[0] for a in self.alignment())}}}", r"\toprule"]
        groups = [g for g, _ in self.columns]
        if any(groups):
            spans = header_spans(groups)
            cells = [(f"\\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}" if b > a else latex_escape(g))
                     if g else "" for g, a, b in spans]
            lines.append(" & ".join(cells) + r" \\")
            lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for g, a, b in spans if g))
        lines.append(" & ".join(latex_escape(lab) for _, lab in self.columns) + r" \\")
        lines.append(r"\midrule")
        for i, row in enumerate(self.rows):
            if i in self.rules_before:
                lines.append(r"\midrule")
            lines.append(" & ".join(_latex_cell(c) for c in row) + r" \\")
        lines.append(r"\bottomrule")
        lines.append(r"\end{tabular}")
        if self.notes:
            lines.append(r"\par\smallskip\footnotesize " + r" \\ ".join(latex_escape(n) for n in self.notes))
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"


def _latex_cell(cell: Any) -> str:
    if isinstance(cell, Stat):
        return cell.latex()
    text = _cell_text(cell)
    return "--" if text == MISSING else latex_escape(text)


def latex_document(tables: Sequence[Table]) -> str:
    """A standalone LaTeX document holding ``tables`` (compiles with pdflatex; needs booktabs)."""
    body = "\n\\clearpage\n".join(t.to_latex() for t in tables)
    return ("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage[T1]{fontenc}\n"
            "\\usepackage{booktabs}\n\\usepackage[margin=1.5cm,landscape]{geometry}\n"
            f"\\begin{{document}}\n{body}\\end{{document}}\n")
