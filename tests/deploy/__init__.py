"""Deployment checks: Collector configs, the Helm chart, real-Collector legs, query examples."""
