"""The sidecar: ``app`` (lifecycle: servers, loops, shutdown), ``wiring`` (every component built from
the config), ``pipeline`` (the data path and back-pressure), ``lanes`` (parser + model per service
group). Import what you need from the modules (``from otel_logbert.sidecar.app import Sidecar``)."""
