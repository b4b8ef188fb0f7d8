"""Per-request bounds a decoded OTLP logs request must respect before the sidecar takes it.

The byte limits (``max_message_bytes``, ``max_body_bytes``) do not bound what a request costs once
decoded: 4 MB of protobuf can hold two million empty log records, each of which becomes a Python
object, a session entry and a forwarded record. ``check_request`` refuses a request with more than
``max_records`` records or a record (or resource) with more than ``max_attributes`` attributes, in one
pass that only counts. Receivers answer ``RESOURCE_EXHAUSTED`` without a retry hint / HTTP 413 (the
Collector does not retry either: the same request would be refused again).
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message


class LimitExceeded(ValueError):
    """The request exceeds a per-request bound; the one-line message names the bound."""


@dataclass(frozen=True)
class RequestLimits:
    """``max_records``: log records per request; ``max_attributes``: attributes per record and per
    resource. 0 disables a bound."""

    max_records: int = 0
    max_attributes: int = 0

    def check(self, request: Message) -> int:
        """The request's record count. Raises ``LimitExceeded``."""
        count = 0
        max_attributes = self.max_attributes
        for rl in request.resource_logs:
            if max_attributes and len(rl.resource.attributes) > max_attributes:
                raise LimitExceeded(
                    f"a resource has {len(rl.resource.attributes)} attributes, more than the "
                    f"{max_attributes} allowed (receivers.max_attributes_per_record)"
                )
            for sl in rl.scope_logs:
                records = sl.log_records
                count += len(records)
                if max_attributes:
                    widest = max((len(r.attributes) for r in records), default=0)
                    if widest > max_attributes:
                        raise LimitExceeded(
                            f"a log record has {widest} attributes, more than the {max_attributes} "
                            "allowed (receivers.max_attributes_per_record)"
                        )
        if self.max_records and count > self.max_records:
            raise LimitExceeded(
                f"request holds {count} log records, more than the {self.max_records} allowed "
                "(receivers.max_records_per_request); send smaller batches"
            )
        return count
