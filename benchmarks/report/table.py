"""The table model shared by every report table: cells with mean ± std, bold best, Markdown and LaTeX."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Stat:
    """A mean ± std cell.

    Attributes
    ----------
    mean, std : float
        ``std`` NaN (not shown) for a single seed.
    n : int
        Number of seeds.
    bold : bool
        Best of its column.
    digits : int
        Decimal places.
    marker : str
        Appended mark (e.g. ``"†"`` for a reference row).
    """

    mean: float
    std: float = float("nan")
    n: int = 1
    bold: bool = False
    digits: int = 3
    marker: str = ""

    def plain(self) -> str:
        """``"0.512 ± 0.013"`` (or ``"0.512"`` for one seed, ``"–"`` for NaN)."""
        if not math.isfinite(self.mean):
            return "–"
        text = f"{self.mean:.{self.digits}f}"
        if self.n > 1 and math.isfinite(self.std):
            text += f" ± {self.std:.{self.digits}f}"
        return text + self.marker

    def markdown(self) -> str:
        return f"**{self.plain()}**" if self.bold and math.isfinite(self.mean) else self.plain()

    def latex(self) -> str:
        if not math.isfinite(self.mean):
            return "--"
        text = f"{self.mean:.{self.digits}f}"
        if self.n > 1 and math.isfinite(self.std):
            text += f" $\\pm$ {self.std:.{self.digits}f}"
        text = f"\\textbf{{{text}}}" if self.bold else text
        return text + ("$^\\dagger$" if self.marker == "†" else latex_escape(self.marker))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "†": r"$^\dagger$", "×": r"$\times$", "≥": r"$\geq$", "Δ": r"$\Delta$",
                  "–": "--", "—": "---", "−": "$-$", "<": r"$<$", ">": r"$>$", "→": r"$\rightarrow$",
                  "·": r"$\cdot$", "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (``_``, ``%``, ``&``, ...; ``±`` → ``$\\pm$``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


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
        ``(group, label)`` per column; consecutive equal groups share a spanning header in LaTeX; group ``""``
        for none. The first column holds row labels.
    rows : list[list[str | Stat]]
    notes : list[str]
        Lines printed under the table (test names, chance level, markers).
    data : pd.DataFrame
        The tidy numbers behind the table.
    rules_before : set[int]
        Row indices preceded by a ``\\midrule`` (e.g. the chance row).
    """

    name: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    rules_before: set[int] = field(default_factory=set)

    def header_labels(self) -> list[str]:
        """One-line column names (``"i2t 16"``) for Markdown."""
        return [f"{g} {lab}".strip() for g, lab in self.columns]

    def to_markdown(self) -> str:
        """Pipe-format Markdown: the title as a bold line, the table, then the notes."""
        from tabulate import tabulate

        body = [[c.markdown() if isinstance(c, Stat) else str(c) for c in row] for row in self.rows]
        align = ["left"] + ["right"] * (len(self.columns) - 1)
        table = tabulate(body, headers=self.header_labels(), tablefmt="pipe", colalign=align, disable_numparse=True)
        notes = "".join(f"\n{n}  " for n in self.notes)
        return f"**{self.title}**\n\n{table}\n{notes}\n"

    def to_latex(self) -> str:
        """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
        n = len(self.columns)
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 f"\\caption{{{latex_escape(self.title)}}}", f"\\label{{tab:{self.name}}}",
                 f"\\begin{{tabular}}{{l{'r' * (n - 1)}}}", r"\toprule"]
        groups = [g for g, _ in self.columns]
        if any(groups):
            spans: list[tuple[str, int, int]] = []  # (group, first col, last col), 1-based
            for i, g in enumerate(groups, 1):
                if spans and spans[-1][0] == g:
                    spans[-1] = (g, spans[-1][1], i)
                else:
                    spans.append((g, i, i))
            cells = [f"\\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}" if g else "" for g, a, b in spans]
            lines.append(" & ".join(cells) + r" \\")
            lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for g, a, b in spans if g))
        lines.append(" & ".join(latex_escape(lab) for _, lab in self.columns) + r" \\")
        lines.append(r"\midrule")
        for i, row in enumerate(self.rows):
            if i in self.rules_before:
                lines.append(r"\midrule")
            lines.append(" & ".join(c.latex() if isinstance(c, Stat) else latex_escape(c) for c in row) + r" \\")
        lines.append(r"\bottomrule")
        lines.append(r"\end{tabular}")
        if self.notes:
            lines.append(r"\par\smallskip\footnotesize " + r" \\ ".join(latex_escape(n) for n in self.notes))
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"


def latex_document(tables: Sequence[Table]) -> str:
    """A standalone LaTeX document holding ``tables`` (compiles with pdflatex; needs booktabs)."""
    body = "\n\\clearpage\n".join(t.to_latex() for t in tables)
    return ("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage[T1]{fontenc}\n"
            "\\usepackage{booktabs}\n\\usepackage[margin=1.5cm,landscape]{geometry}\n"
            f"\\begin{{document}}\n{body}\\end{{document}}\n")


# ---- tables --------------------------------------------------------------------------------------------------
