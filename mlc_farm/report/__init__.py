"""What a run tells people: what each build is doing now (`activity`) and the live status, the run summary,
the night's report (utilisation, critical path), the outcome event and the automations that alert on it, and
the static catalog page.

May import the foundation modules and the layers below it: `store` up to `catalog`; never a build or a flow
(they call it with what they have).
"""
