"""What an attempt may cost before it runs: prices, token bounds, money in micro-dollars.

Pure functions: no network, no ledger.
"""
