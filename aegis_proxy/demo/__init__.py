"""``aegis-proxy demo`` and the real local model it runs on."""
