"""otel-logbert: transformer log anomaly detection for OpenTelemetry pipelines."""

__version__ = "0.1.0"
