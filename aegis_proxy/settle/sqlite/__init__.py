"""The ledger on one SQLite file (WAL): connection, frozen migrations, runtime queries."""
