"""The cost ledger: one row per provider attempt, budgets held across processes.

``open.open_ledger`` picks the backend (``sqlite/`` or ``postgres/``); ``records`` holds
what every backend stores; ``summary`` the monthly figures; ``budget`` the rules both
backends apply inside their reservation transactions.
"""
