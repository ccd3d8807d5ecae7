"""Watching devices: `list`, `top`, the metrics (Prometheus, OTLP)."""
