"""OTLP retry rules and throttling hints, shared by the forwarder (client) and receivers (server).

From the OTLP specification: which gRPC codes and HTTP statuses are retryable, how a server asks a
client to wait (gRPC ``RetryInfo`` in the ``grpc-status-details-bin`` trailer, HTTP ``Retry-After``),
and exponential backoff with jitter for failures that carry no hint.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Iterable

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

# RESOURCE_EXHAUSTED is retryable only when the server attaches RetryInfo (see retry_info_delay).
RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
RETRYABLE_HTTP = frozenset({429, 502, 503, 504})
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def retry_info_delay(trailing: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The ``RetryInfo.retry_delay`` (seconds) in gRPC trailing metadata, or None."""
    for key, value in trailing or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def retry_info_trailer(delay_s: float, code: int, message: str) -> tuple[str, bytes]:
    """A ``grpc-status-details-bin`` trailer: ``google.rpc.Status`` with a ``RetryInfo`` detail."""
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = int(delay_s)
    info.retry_delay.nanos = int((delay_s - int(delay_s)) * 1e9)
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(info)
    return (STATUS_DETAILS_KEY, status.SerializeToString())


def parse_retry_after(value: str | None) -> float | None:
    """HTTP ``Retry-After`` (seconds, or an HTTP date) -> seconds from now; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Backoff:
    """Delays for successive retries: ``initial``, doubling up to ``maximum``, each with +-50 %
    jitter; a server's hint replaces the computed delay (still capped at ``maximum``)."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.current = initial
        self.maximum = maximum

    def next(self, hint: float | None = None) -> float:
        if hint is not None:
            return min(hint, self.maximum)
        delay = min(self.current * random.uniform(0.5, 1.5), self.maximum)
        self.current = min(self.current * 2, self.maximum)
        return delay
