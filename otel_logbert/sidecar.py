"""The sidecar: wiring and lifecycle of receive -> parse -> sessionize -> score -> annotate -> forward.

    sidecar = Sidecar(config)        # loads bundles, builds parsers/scorers; raises UserError
    await sidecar.start()            # telemetry server, receivers, background loops
    ...                              # records flow
    await sidecar.stop()             # refuse new requests, close every session, score, deliver

``run()`` does the three steps and stops on SIGTERM/SIGINT; ``otel-logbert serve`` calls it.

Everything but scoring (worker threads) and span export (a worker thread) runs on one asyncio event
loop, so sessions and parsers need no locks. ``accept`` is the hot path: it takes a whole decoded
request at once, and touches each record a handful of times (strip owned attributes, parse with a
cache, key, serialize, append to a session).

Where records are at any moment (nothing is ever dropped silently):

1. in an open session (``SessionStore``), bounded by the session limits (memory cap);
2. in the scoring queue (``ScoringLoop``), then
3. in the forward queue (``Forwarder``) until downstream acknowledges them.

(2) + (3) is bounded by ``forward.queue_max_records``: when full, ``accept`` refuses new requests
with a retry hint (back-pressure), so they wait in the Collector's sending queue instead.
Records without a session key skip (1) and (2), marked ``log.anomaly.status = unsessioned``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from opentelemetry.sdk.trace.export import SpanExporter

from otel_logbert.config import SidecarConfig
from otel_logbert.errors import UserError
from otel_logbert.otlp.annotate import STATUS_SCORED, Annotator, AttributeNames
from otel_logbert.otlp.codec import attribute, render_value, text_of
from otel_logbert.otlp.forwarder import Forwarder, Item, LogsExporter, Mark, build_exporter
from otel_logbert.otlp.receiver import GrpcReceiver, HttpReceiver, Refused, split_endpoint
from otel_logbert.otlp.spans import SpanEmitter, build_span, build_span_exporter, unexpected_templates
from otel_logbert.otlp.telemetry import Metrics, TelemetryServer
from otel_logbert.sessions.keys import TraceIdKey, key_rule
from otel_logbert.sessions.lanes import Router, build_router, lane_file
from otel_logbert.sessions.learn import LearnWriter
from otel_logbert.sessions.scoring import ScoringLoop
from otel_logbert.sessions.session import OriginTable, Record, Session, Verdict
from otel_logbert.sessions.store import SessionLimits, SessionStore

log = logging.getLogger(__name__)

SERVICE_NAME = b"service.name"
NO_SPAN_ID = b"\x00" * 8
TICK_S = 0.02  # how often open sessions are checked for inactivity / max age
RECEIVER_GRACE_S = 5.0
YIELD_EVERY = 1024  # records ingested between yields to the event loop


class Sidecar:
    """One sidecar. ``router``, ``exporter`` and ``span_exporter`` may be injected (tests, the
    demo); by default they are built from ``config``."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        router: Router | None = None,
        exporter: LogsExporter | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self.config = config
        self.router = router if router is not None else build_router(config)
        s = config.sessions
        self.rule = key_rule(
            s.key,
            resource_attributes=s.resource_attributes,
            record_attributes=s.record_attributes,
            regex=s.regex,
            window_size_s=s.window.size_s,
            window_slide_s=s.window.slide_s,
        )
        self.store = SessionStore(
            SessionLimits(
                inactivity_timeout_s=s.inactivity_timeout_s,
                max_length=s.max_length,
                max_age_s=s.max_age_s,
                max_open_sessions=s.max_open_sessions,
                max_buffered_records=s.max_buffered_records,
            ),
            order=s.order,
        )
        self.names = AttributeNames(config.attributes.prefix, config.attributes.template)
        self.annotator = Annotator(self.names)
        self.origins = OriginTable()
        self._field_text = _field_reader(config.parsing.field)
        self._trace_keyed = isinstance(self.rule, TraceIdKey)
        self._owned_markers = (f"{self.names.prefix}.".encode(), self.names.template.encode())

        otlp_metrics = config.telemetry.otlp_metrics
        metrics_endpoint = None
        if otlp_metrics.enabled:
            metrics_endpoint = otlp_metrics.endpoint or config.forward.endpoint
        self.metrics = Metrics(metrics_endpoint, otlp_metrics.interval_s)

        f = config.forward
        self.forwarder = Forwarder(
            exporter if exporter is not None else build_exporter(f),
            queue_max_records=f.queue_max_records,
            batch_max_records=f.batch_max_records,
            max_in_flight=f.max_in_flight,
            timeout_s=f.timeout_s,
            retry=f.retry,
            observe=self._observe_forward,
            on_latency=self.metrics.forward_latency.record,
        )
        sc = config.scoring
        self.scoring = ScoringLoop(
            self.router,
            self._on_scored,
            batch_size=sc.batch_size,
            batch_timeout_s=sc.batch_timeout_ms / 1000,
            timeout_s=sc.timeout_s,
            observe=self._observe_scoring,
        )
        self.spans: SpanEmitter | None = None
        if config.traces.enabled and self._trace_keyed and config.scoring_enabled:
            if span_exporter is None:
                span_exporter = build_span_exporter(
                    config.traces.endpoint or f.endpoint,
                    config.traces.protocol or f.protocol,
                    f.timeout_s,
                    f.headers,
                )
            self.spans = SpanEmitter(
                span_exporter, observe=lambda outcome, n: self.metrics.spans.add(n, {"outcome": outcome})
            )
        self.learners: dict[int, LearnWriter] = {}
        if config.learn.enabled:
            assert config.learn.output is not None
            for lane in self.router.lanes:
                self.learners[lane.index] = LearnWriter(
                    lane_file(config.learn.output, lane.name), lane.parser
                )

        self.metrics.gauges.update(
            {
                "sessions.open": lambda: len(self.store),
                "buffer.records": lambda: self.store.buffered,
                "buffer.fill": lambda: self.store.buffered / s.max_buffered_records,
                "queue.records": self._queued_records,
                "queue.fill": lambda: self._queued_records() / f.queue_max_records,
            }
        )
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        self.telemetry: TelemetryServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()

    # --- intake: the hot path -------------------------------------------------------------------

    async def accept(self, request: Message, protocol: str) -> int:
        """Take every record of a lenient ``ExportLogsServiceRequest``; returns the record count once
        all are held. Yields to the event loop every ``YIELD_EVERY`` records, so a large request
        does not stall scoring and forwarding meanwhile.

        Raises ``Refused`` (and takes nothing) while shutting down or when the queue of closed
        records is full. Never raises for content: every record is taken.
        """
        if self._stopping:
            raise Refused("shutting_down", "otel-logbert is shutting down; retry another instance or later")
        count = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        if count == 0:
            return 0
        queued = self._queued_records()
        if queued and queued + count > self.config.forward.queue_max_records:
            raise Refused(
                "backpressure",
                f"otel-logbert queue is full ({queued} records waiting "
                "to be scored and forwarded); retry later",
                retry_after_s=1.0,
            )
        now, now_unix = time.monotonic(), time.time()
        rule, store, router = self.rule, self.store, self.router
        by_time = store.by_time
        field_text, multi, needs_text = self._field_text, rule.multi, rule.needs_text
        owned_markers = self._owned_markers
        mark = Mark(now)  # unsessioned records are ready to forward now
        unsessioned: list[Item] = []
        closed: list[Session] = []
        taken = 0
        for rl in request.resource_logs:
            resource_attrs = {kv.key: kv.value for kv in rl.resource.attributes}
            service_value = resource_attrs.get(SERVICE_NAME)
            service = text_of(service_value.string_value) if service_value is not None else ""
            lane = router.lane_for(service)
            lane_index = lane.index
            resource = rl.resource.SerializeToString() if rl.HasField("resource") else None
            for sl in rl.scope_logs:
                scope = sl.scope.SerializeToString() if sl.HasField("scope") else None
                origin = self.origins.get(resource, rl.schema_url, scope, sl.schema_url, service)
                for rec in sl.log_records:
                    taken += 1
                    if taken % YIELD_EVERY == 0:
                        self._flush_intake(unsessioned, closed, now)
                        unsessioned, closed = [], []
                        await asyncio.sleep(0)
                        now = time.monotonic()
                    # 1. the record as bytes, without attributes the sidecar owns (rarely present:
                    #    a substring test on the bytes avoids walking every record's attributes)
                    data = rec.SerializeToString()
                    if owned_markers[0] in data or owned_markers[1] in data:
                        self._strip_owned(rec)
                        data = rec.SerializeToString()
                    # 2. its log key, and the template attribute appended
                    text = field_text(rec)
                    log_key, template_attr = lane.parse(text)
                    data += template_attr
                    # 3. its session(s)
                    str_text = "" if not needs_text else (text if isinstance(text, str) else text_of(text))
                    if multi:
                        placements = rule.placements(rec, resource_attrs, str_text, now_unix)
                    else:
                        key = rule.key(rec, resource_attrs, str_text, now_unix)
                        placements = [(key, True)] if key is not None else []
                    if not placements:
                        unsessioned.append((origin, data, self.annotator.unsessioned(rule.reason_missing), mark))
                        continue
                    ts = rec.time_unix_nano or rec.observed_time_unix_nano
                    for key, owns_record in placements:
                        record = Record(data, origin) if owns_record else None
                        session, full = store.add((lane_index, key), lane_index, log_key, record, now, ts)
                        if owns_record:
                            has_span = rec.span_id and rec.span_id != NO_SPAN_ID
                            # The lead record (service for thresholds, trace, span parent): the first
                            # to arrive, or when ordering by time the earliest timed one.
                            if len(session.records) == 1 or (by_time and 0 < ts < session.first_ts):
                                session.first_ts = ts
                                session.service = service
                                session.trace_id = rec.trace_id
                                if has_span:
                                    session.span_id = rec.span_id
                            elif not session.span_id and has_span:
                                session.span_id = rec.span_id
                            if ts > session.last_ts:
                                session.last_ts = ts
                        if full is not None:
                            closed.append(full)
        self._flush_intake(unsessioned, closed, now)
        self.metrics.records_received.add(count, {"protocol": protocol})
        return count

    def _flush_intake(self, unsessioned: list[Item], closed: list[Session], now: float) -> None:
        """Hand on what part of a request produced: unsessioned records to the forwarder, sessions
        filled or pushed out by the memory caps to scoring."""
        if unsessioned:
            self.metrics.records_unsessioned.add(len(unsessioned))
            self.forwarder.put(unsessioned)
        closed.extend(self.store.enforce_limits(now))
        self._close(closed)

    def _strip_owned(self, record: Any) -> None:
        """Remove attributes named like those the sidecar writes (they are replaced, not doubled)."""
        attributes, owns = record.attributes, self.names.owns
        for i in reversed([i for i, kv in enumerate(attributes) if owns(kv.key)]):
            del attributes[i]

    def _queued_records(self) -> int:
        return self.scoring.pending_records + self.forwarder.pending

    # --- closing, scoring, annotating ----------------------------------------------------------

    def _close(self, sessions: list[Session]) -> None:
        """Sessions just closed: label them, record them for learning, queue them for scoring."""
        if not sessions:
            return
        label = self.rule.label
        by_reason: dict[str, int] = {}
        for session in sessions:
            session.label = label(session.key[1])
            by_reason[session.closed_by] = by_reason.get(session.closed_by, 0) + 1
            learner = self.learners.get(session.lane)
            if learner is not None:
                learner.write(session.keys)
        for reason, n in by_reason.items():
            self.metrics.sessions_closed.add(n, {"reason": reason})
        # Sessions with no records of their own (sliding-window spill-overs) have nothing to annotate.
        self.scoring.submit([s for s in sessions if s.records])

    def _on_scored(self, sessions: list[Session], verdicts: list[Verdict]) -> None:
        items: list[Item] = []
        anomalous = 0
        for session, verdict in zip(sessions, verdicts, strict=True):
            mark = Mark(session.closed_at)
            annotated = self.annotator.annotate(session, verdict)
            items.extend((origin, data, suffix, mark) for origin, data, suffix in annotated)
            if verdict.status == STATUS_SCORED:
                anomalous += bool(verdict.is_anomaly)
                if (
                    self.spans is not None
                    and session.trace_id
                    and (verdict.is_anomaly or not self.config.traces.only_anomalies)
                ):
                    lane = self.router.lanes[session.lane]
                    templates = unexpected_templates(session, verdict, lane.template)
                    self.spans.emit(build_span(session, verdict, self.names, templates))
            session.records = []  # the forward queue holds them now
        self.forwarder.put(items)
        if anomalous:
            self.metrics.sessions_anomalous.add(anomalous)

    # --- metrics hooks -------------------------------------------------------------------------

    def _observe_scoring(self, outcome: str, seconds: float, sessions: int) -> None:
        self.metrics.scoring_duration.record(seconds, {"outcome": outcome})
        if outcome == "scored":
            self.metrics.sessions_scored.add(sessions)
        else:
            self.metrics.sessions_unscored.add(sessions, {"outcome": outcome})

    def _observe_forward(self, outcome: str, records: int, seconds: float) -> None:
        if outcome == "ok":
            self.metrics.records_forwarded.add(records)
        elif outcome == "retry":
            self.metrics.forward_retries.add(1)
        else:
            self.metrics.records_dropped.add(records, {"reason": outcome})

    def _on_refused(self, protocol: str, reason: str) -> None:
        self.metrics.requests_refused.add(1, {"protocol": protocol, "reason": reason})

    # --- lifecycle -----------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """(ready, why not) for ``/readyz``."""
        if self._stopping:
            return False, "shutting down"
        if not self._started:
            return False, "starting"
        for lane in self.router.lanes:
            if lane.scorer is not None and not lane.scorer.ready():
                return False, f"scorer of lane {lane.name} not ready"
        return True, ""

    @property
    def ports(self) -> dict[str, int]:
        """Bound ports (useful when an endpoint asked for port 0)."""
        out = {}
        if self.grpc is not None:
            out["grpc"] = self.grpc.port
        if self.http is not None:
            out["http"] = self.http.port
        return out

    async def start(self) -> None:
        """Start telemetry, receivers and background loops. Raises ``UserError`` when a port cannot
        be bound (everything already started is stopped again)."""
        config = self.config
        try:
            if config.telemetry.endpoint:
                self.telemetry = TelemetryServer(self.metrics, self.ready)
                host, port = split_endpoint(config.telemetry.endpoint)
                try:
                    await self.telemetry.start(host, port)
                except OSError as exc:
                    raise UserError(
                        f"telemetry.endpoint {config.telemetry.endpoint}: cannot listen "
                        f"({exc.strerror or exc})"
                    ) from None
            receivers = config.receivers
            if receivers.grpc.endpoint:
                self.grpc = GrpcReceiver(
                    self, receivers.grpc.endpoint, receivers.grpc.max_message_bytes, self._on_refused
                )
                await _listen(self.grpc.start)
            if receivers.http.endpoint:
                self.http = HttpReceiver(
                    self, receivers.http.endpoint, receivers.http.max_body_bytes, self._on_refused
                )
                await _listen(self.http.start)
        except BaseException:
            await self._stop_servers()
            raise
        await self._warm_up()
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="sessions"),
            asyncio.create_task(self.scoring.run(), name="scoring"),
            asyncio.create_task(self.forwarder.run(), name="forward"),
            asyncio.create_task(self._state_loop(), name="parser-state"),
        ]
        if self.spans is not None:
            self._tasks.append(asyncio.create_task(self.spans.run(), name="spans"))
        self._started = True
        log.info(
            "otel-logbert sidecar started",
            extra={
                "ports": self.ports,
                "forward": config.forward.endpoint,
                "session_key": config.sessions.key,
                "lanes": [lane.name for lane in self.router.lanes],
            },
        )

    async def stop(self) -> None:
        """Graceful shutdown: refuse new requests, close every session, score and deliver what is
        held (for up to ``forward.drain_timeout_s``), save parser state. Idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        try:
            if self.grpc is not None:
                await self.grpc.stop(RECEIVER_GRACE_S)
            if self.http is not None:
                await self.http.stop()
            self._close(self.store.close_all(time.monotonic()))
            for task in self._tasks:  # the loops stop; what they held is drained below
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.scoring.drain()
            left = await self.forwarder.drain(self.config.forward.drain_timeout_s)
            if left:
                self.metrics.records_dropped.add(left, {"reason": "shutdown"})
                log.error(
                    "shutdown: records could not be delivered in time",
                    extra={"records": left, "error": self.forwarder.last_error},
                )
            if self.spans is not None:
                await self.spans.flush()
                self.spans.close()
            for learner in self.learners.values():
                learner.close()
            for lane in self.router.lanes:
                lane.save_state()
            log.info("otel-logbert sidecar stopped", extra={"undelivered": left})
        finally:
            self.scoring.close()
            await self.forwarder.close()
            self.router.close()
            await self._stop_servers()
            self.metrics.shutdown()
            self._stopped.set()

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Start, serve until SIGTERM or SIGINT, stop."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        if ready is not None:
            ready()
        try:
            await stop.wait()
        finally:
            log.info("otel-logbert sidecar stopping")
            await self.stop()

    async def _stop_servers(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(0)
        if self.http is not None:
            await self.http.stop()
        if self.telemetry is not None:
            await self.telemetry.stop()

    async def _warm_up(self) -> None:
        """One tiny scoring call per lane before taking traffic (failures only logged: fail open)."""
        for lane in self.router.lanes:
            try:
                await asyncio.wait_for(asyncio.to_thread(lane.warm_up), self.config.scoring.timeout_s * 5)
            except Exception as exc:  # the scoring loop will mark sessions unscored with the reason
                log.warning("scorer warm-up failed", extra={"lane": lane.name, "error": repr(exc)[:300]})

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._close(self.store.expire(time.monotonic()))

    async def _state_loop(self) -> None:
        interval = self.config.parsing.state_save_interval_s
        while True:
            await asyncio.sleep(interval)
            for lane in self.router.lanes:
                try:
                    lane.save_state()
                except OSError as exc:
                    log.warning("cannot save parser state", extra={"lane": lane.name, "error": str(exc)})


async def _listen(start: Callable[[], Any]) -> None:
    try:
        await start()
    except OSError as exc:
        raise UserError(str(exc)) from None


def _field_reader(field: str) -> Callable[[Any], bytes | str]:
    """The function that gives the text to parse of a lenient ``LogRecord`` (``parsing.field``).

    String bodies are returned as raw bytes (the parser decodes them; the parse cache keys on them);
    other values as their stable rendering (``codec.render_value``). A configured attribute or kvlist
    key that is absent falls back to the body.
    """

    def body(rec: Any) -> bytes | str:
        value = rec.body
        if value.WhichOneof("value") == "string_value":
            return value.string_value
        return render_value(value)

    if field == "body":
        return body
    where, _, name = field.partition(".")
    key = name.encode()

    def one(value: Any) -> bytes | str:
        return value.string_value if value.WhichOneof("value") == "string_value" else render_value(value)

    if where == "attributes":

        def from_attribute(rec: Any) -> bytes | str:
            value = attribute(rec.attributes, key)
            return body(rec) if value is None else one(value)

        return from_attribute

    def from_kvlist(rec: Any) -> bytes | str:
        if rec.body.WhichOneof("value") == "kvlist_value":
            value = attribute(rec.body.kvlist_value.values, key)
            if value is not None:
                return one(value)
        return body(rec)

    return from_kvlist


def tune_gc() -> None:
    """Garbage-collector settings for a process holding many small objects (open sessions).

    Everything alive at start-up (modules, the model) is frozen out of collection, and collections
    run less often: full collections over a million records would otherwise pause the event loop
    for 100+ ms. The sidecar's own data (sessions, records) holds no reference cycles.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def run_sidecar(config: SidecarConfig) -> int:
    """Build and run a sidecar until SIGTERM/SIGINT; returns the exit code. Raises ``UserError``."""

    async def main() -> None:
        sidecar = Sidecar(config)
        tune_gc()
        await sidecar.run()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
