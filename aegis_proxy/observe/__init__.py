"""What the proxy tells the outside: observer events, logs, Prometheus metrics, traces."""
