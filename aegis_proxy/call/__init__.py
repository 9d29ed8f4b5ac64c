"""Talking to providers: the SDK client (the only importer of any-llm), streams,
retries and circuit breakers, the response cache, and local model discovery.
"""
