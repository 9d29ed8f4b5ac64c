"""What the CLI prints from the ledger: monthly summaries, exports, the privacy audit,
and the replay of a month through another config (``replay/``).
"""
