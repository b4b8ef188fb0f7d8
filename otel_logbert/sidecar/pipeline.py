"""The sidecar's data path: request -> parse -> sessions -> score -> annotate -> forward.

``Pipeline.accept`` is the hot path: it takes a whole decoded request at once and touches each record
a handful of times (strip owned attributes, parse with a cache, key, serialize, place in its
session(s)). Everything here runs on the event loop (scoring in worker threads, span export in the
SDK's thread), so sessions and parsers need no locks.

Where records are at any moment (nothing is ever dropped silently):

1. in an open session (``SessionStore``), bounded by the session limits (memory cap);
2. in the scoring queue (``ScoringLoop``), then
3. in the forward queue (``Forwarder``) until downstream acknowledges them.

(2) + (3) is bounded by ``forward.queue_max_records``: ``Admission``, the one owner of back-pressure,
refuses new requests with a retry hint while it is full, so they wait in the Collector's sending
queue instead. Records without a session key skip (1) and (2), marked ``log.anomaly.status =
unsessioned``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from google.protobuf.message import Message

from otel_logbert.config import ScoringConfig, TracesConfig
from otel_logbert.otlp.annotate import STATUS_SCORED, Annotator
from otel_logbert.otlp.codec import text_of
from otel_logbert.otlp.forwarder import Forwarder, Item, Mark
from otel_logbert.otlp.receiver import Refused
from otel_logbert.otlp.spans import SpanEmitter, build_span, unexpected_templates
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.scoring.loop import ScoringLoop
from otel_logbert.sessions.keys import KeyRule
from otel_logbert.sessions.learn import LearnWriter
from otel_logbert.sessions.session import OriginTable, Record, Session, Verdict
from otel_logbert.sessions.store import SessionStore
from otel_logbert.sidecar.lanes import Router

SERVICE_NAME = b"service.name"
YIELD_EVERY = 1024  # records ingested between yields to the event loop

FieldReader = Callable[[Any], "bytes | str"]


class HoldsRecords(Protocol):
    """A stage that holds closed records until it has passed them on."""

    @property
    def pending_records(self) -> int: ...


class Admission:
    """The one owner of back-pressure: a request is refused while the records closed but not yet
    delivered (every stage in ``stages``), plus the request's own, exceed ``limit``. An empty
    backlog takes any request, so one larger than the whole limit is not refused forever."""

    def __init__(self, limit: int, stages: Sequence[HoldsRecords]) -> None:
        self.limit = limit
        self.stages = stages

    @property
    def held(self) -> int:
        return sum(stage.pending_records for stage in self.stages)

    def check(self, count: int) -> None:
        """Raises ``Refused("backpressure")`` when ``count`` more records do not fit now."""
        held = self.held
        if held and held + count > self.limit:
            raise Refused(
                "backpressure",
                f"otel-logbert queue is full ({held} records waiting to be scored and forwarded); retry later",
                retry_after_s=1.0,
            )


class Pipeline:
    """Receive -> parse -> sessionize -> score -> annotate -> forward, for one sidecar."""

    def __init__(
        self,
        *,
        router: Router,
        rule: KeyRule,
        store: SessionStore,
        annotator: Annotator,
        field_text: FieldReader,
        forwarder: Forwarder,
        scoring: ScoringConfig,
        traces: TracesConfig,
        spans: SpanEmitter | None,
        learners: dict[int, LearnWriter],
        queue_max_records: int,
        metrics: Metrics,
    ) -> None:
        self.router = router
        self.rule = rule
        self.store = store
        self.annotator = annotator
        self.field_text = field_text
        self.forwarder = forwarder
        self.scoring = ScoringLoop(router, self._on_scored, scoring, metrics)
        self.traces = traces
        self.spans = spans
        self.learners = learners
        self.metrics = metrics
        self.admission = Admission(queue_max_records, (self.scoring, forwarder))
        self.origins = OriginTable()
        self.accepting = True

    # --- intake: the hot path -------------------------------------------------------------------

    async def accept(self, request: Message, protocol: str) -> int:
        """Take every record of a lenient ``ExportLogsServiceRequest``; returns the record count once
        all are held. Yields to the event loop every ``YIELD_EVERY`` records, so a large request
        does not stall scoring and forwarding meanwhile.

        Raises ``Refused`` (and takes nothing) while shutting down or when the backlog is full
        (``Admission``). Never raises for content: every record is taken.
        """
        if not self.accepting:
            raise Refused("shutting_down", "otel-logbert is shutting down; retry another instance or later")
        count = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        if count == 0:
            return 0
        self.admission.check(count)
        now, now_unix = time.monotonic(), time.time()
        rule, store, annotator = self.rule, self.store, self.annotator
        mark = Mark(now)  # unsessioned records are ready to forward now
        unsessioned: list[Item] = []
        closed: list[Session] = []
        taken = 0
        for rl in request.resource_logs:
            resource_attrs = {kv.key: kv.value for kv in rl.resource.attributes}
            service_value = resource_attrs.get(SERVICE_NAME)
            service = text_of(service_value.string_value) if service_value is not None else ""
            lane = self.router.lane_for(service)
            resource = rl.resource.SerializeToString() if rl.HasField("resource") else None
            for sl in rl.scope_logs:
                scope = sl.scope.SerializeToString() if sl.HasField("scope") else None
                origin = self.origins.get(resource, rl.schema_url, scope, sl.schema_url, service)
                for rec in sl.log_records:
                    taken += 1
                    if taken % YIELD_EVERY == 0:
                        self._hand_on(unsessioned, closed, now)
                        unsessioned, closed = [], []
                        await asyncio.sleep(0)
                        now = time.monotonic()
                    text = self.field_text(rec)
                    log_key, template_attr = lane.parse(text)
                    data = annotator.record_bytes(rec) + template_attr
                    str_text = (text if isinstance(text, str) else text_of(text)) if rule.needs_text else ""
                    placements = rule.placements(rec, resource_attrs, str_text, now_unix)
                    if not placements:
                        unsessioned.append((origin, data, annotator.unsessioned(rule.reason_missing), mark))
                        continue
                    ts = rec.time_unix_nano or rec.observed_time_unix_nano
                    store.place(
                        placements, lane.index, log_key, Record(data, origin), ts, now, closed,
                        rec.trace_id, rec.span_id,
                    )
        self._hand_on(unsessioned, closed, now)
        self.metrics.records_received.add(count, {"protocol": protocol})
        return count

    def _hand_on(self, unsessioned: list[Item], closed: list[Session], now: float) -> None:
        """Hand on what part of a request produced: unsessioned records to the forwarder, sessions
        filled or pushed out by the memory caps to scoring."""
        if unsessioned:
            self.metrics.records_unsessioned.add(len(unsessioned))
            self.forwarder.put(unsessioned)
        closed.extend(self.store.enforce_limits(now))
        self.close(closed)

    # --- closing, scoring, annotating ----------------------------------------------------------

    def expire(self) -> None:
        """Close the sessions whose inactivity timeout or max age has passed."""
        self.close(self.store.expire(time.monotonic()))

    def close_all(self) -> None:
        """Close every open session (shutdown)."""
        self.close(self.store.close_all(time.monotonic()))

    def close(self, sessions: list[Session]) -> None:
        """Sessions just closed: name them, record them for learning, queue them for scoring."""
        if not sessions:
            return
        label = self.rule.label
        by_reason: dict[str, int] = {}
        for session in sessions:
            session.name(label(session.key[1]))
            by_reason[session.closed_by] = by_reason.get(session.closed_by, 0) + 1
            learner = self.learners.get(session.lane)
            if learner is not None:
                learner.write(session.keys)
        for reason, n in by_reason.items():
            self.metrics.sessions_closed.add(n, {"reason": reason})
        # Sessions with no records of their own (sliding-window spill-overs) have nothing to annotate.
        self.scoring.submit([s for s in sessions if s.records])

    def _on_scored(self, sessions: list[Session], verdicts: list[Verdict]) -> None:
        """Annotate scored sessions' records, emit their spans, queue the records for forwarding."""
        items: list[Item] = []
        anomalous = 0
        for session, verdict in zip(sessions, verdicts, strict=True):
            mark = Mark(session.closed_at)
            annotated = self.annotator.annotate(session, verdict)
            items.extend((origin, data, suffix, mark) for origin, data, suffix in annotated)
            if verdict.status == STATUS_SCORED:
                anomalous += bool(verdict.is_anomaly)
                self._emit_span(session, verdict)
            session.take_records()  # the forward queue holds them now
        self.forwarder.put(items)
        if anomalous:
            self.metrics.sessions_anomalous.add(anomalous)

    def _emit_span(self, session: Session, verdict: Verdict) -> None:
        if self.spans is None or not session.trace_id:
            return
        if verdict.is_anomaly or not self.traces.only_anomalies:
            templates = unexpected_templates(session, verdict, self.router.lanes[session.lane].template)
            self.spans.emit(build_span(session, verdict, self.annotator.names, templates))
