"""Report stage: saved result rows -> tables (Markdown, LaTeX), paired statistics and figures.

``source`` (which rows: a run folder's own rows, a run id / label, a report's ``rows.jsonl.gz`` export),
``rows`` (normalise, check and split configurations, select, summarise rows), ``table`` (the table model, its
rendering and the number formatting every harness table uses), ``tables`` (main, ablation, efficiency, engine,
tuning tables), ``significance`` (Wilcoxon, t-test, Holm), ``style`` (method colours, display names, figure
sizes), ``figures``, ``build`` (``build_report``: assemble a report and write its folder as a whole).
"""
