"""Evaluation: metrics, scoring a split (scoring.py), one run's report (report.py), grids of runs (grids.py)
and their tables and statistics (results.py, statistics.py), the page's true clicks (page_clicks.py), the
utility-fairness trade-off (tradeoff.py) and the CSV tables they share (csv_rows.py)."""
