"""The ledger on PostgreSQL: pool, frozen migrations, runtime queries, and the spool of
rows that wait while the database cannot be reached.
"""
