"""What a request may do before anything leaves: validate it, route it, protect it.

``plan.plan_request`` turns a caller's request into a ``Plan``: validated messages
(``request``), the route chosen by the ordered rules (``rules``), and the privacy action
(``privacy``). No network call, no ledger row.
"""
