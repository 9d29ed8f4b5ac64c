"""Replay a month of recorded requests (or a workload file) through another config."""
