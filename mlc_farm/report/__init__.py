"""What a run tells people: what each build is doing now (`activity`) and the live status, the run summary,
the night's report (utilisation, critical path), the outcome event and the automations that alert on it, and
the static catalog page.

May import the foundation modules and `catalog`, `checks`, `huggingface`, `planning`, `records`, `store`, `trust`
(tells what a plan, the catalog and its history say, with links to the Hub; tests/test_structure.py holds the
table).
"""
