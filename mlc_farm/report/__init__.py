"""What a run tells people: the run summary, the live status, the night's report (utilisation, critical path),
the outcome event and the automations that alert on it, and the static catalog page.

May import the foundation modules, `records`, `catalog`, `trust`, `distribute` and `store`; never a build
or a flow (the flows call it with what they have).
"""
