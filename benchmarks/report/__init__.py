"""Report stage: saved result rows -> tables (Markdown, LaTeX), paired statistics and figures.

``rows`` (normalise, select, summarise rows), ``table`` (the table model and its rendering), ``tables``
(main, ablation, efficiency, engine tables), ``significance`` (Wilcoxon, t-test, Holm), ``figures``,
``build`` (``build_report``: assemble and write a report).
"""
