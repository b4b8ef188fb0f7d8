"""``otel-logbert demo``: a simulated OTel-instrumented shop, a model trained on its normal traffic,
the real sidecar scoring a mixed stream, and a report judged against the injected faults.

- ``run``: the orchestration (``DemoOptions``, ``run_demo``);
- ``training``: normal traffic -> Drain3 keys -> trained and exported bundle;
- ``process``: the ``otel-logbert serve`` child process and its config;
- ``sender``: the services' OTLP log exporters (opentelemetry-sdk);
- ``receiver``: the local OTLP/gRPC receiver for the enriched logs and the span events;
- ``report``: verdicts vs. ground truth, the table, the report folder and its plot.

The simulator itself is ``otel_logbert.simulate``.
"""

from otel_logbert.demo.run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
