"""`igpo report`: one self-contained HTML page (no network) for evaluation runs, a baseline
comparison, checkpoint series, training runs and ablation results.

`data.py` gathers what is shown as plain data; `page.py` embeds it in the page and draws it.
"""

from harness.report.page import render, write_report

__all__ = ["render", "write_report"]
