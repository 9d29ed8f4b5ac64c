"""aegis_proxy: a thin, trustworthy policy layer between LLM calls and their providers."""
