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

With the persistent queue (``persistence``, ``sidecar.wal``) every request is also written to the
log, and fsynced, before ``accept`` returns (so before the OTLP response), in all three places;
``replay`` puts what a previous run left undelivered back through the same path at start. A full
log refuses the request with back-pressure, like a full queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from google.protobuf.message import Message

from otel_logbert.config import ScoringConfig, TracesConfig
from otel_logbert.otlp.annotate import STATUS_SCORED, Annotator
from otel_logbert.otlp.codec import MalformedRequest, decode_protobuf, text_of
from otel_logbert.otlp.forwarder import Forwarder, Item, Mark
from otel_logbert.otlp.receiver import Refused
from otel_logbert.otlp.spans import SpanEmitter, build_span, unexpected_templates
from otel_logbert.otlp.telemetry import Metrics
from otel_logbert.scoring.loop import ScoringLoop
from otel_logbert.sessions.keys import KeyRule
from otel_logbert.sessions.learn import LearnWriter
from otel_logbert.sessions.session import OriginTable, Record, Session, Verdict
from otel_logbert.sessions.store import SessionStore
from otel_logbert.sidecar.lanes import YIELD_EVERY, Router
from otel_logbert.sidecar.wal import Backlog, PersistenceFull, WriteAheadLog, ticket

log = logging.getLogger(__name__)

RESTART = "restart"  # close reason (and ``log.anomaly.reason``) of sessions restored from the log
REPLAY_WAIT_S = 0.05  # while replaying: how often to look whether the queue has room again
SERVICE_NAME = b"service.name"

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
        wal: WriteAheadLog | None = None,
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
        self.wal = wal
        self.admission = Admission(queue_max_records, (self.scoring, forwarder))
        self.origins = OriginTable()
        self.accepting = True

    # --- intake: the hot path -------------------------------------------------------------------

    async def accept(self, request: Message, protocol: str) -> int:
        """Take every record of a lenient ``ExportLogsServiceRequest``; returns the record count once
        all are held (and, with persistence, on disk). Yields to the event loop every ``YIELD_EVERY``
        records, so a large request does not stall scoring and forwarding meanwhile.

        Raises ``Refused`` (and takes nothing) while shutting down, when the backlog is full
        (``Admission``) or the persistent queue is. Never raises for content: every record is taken.
        Once written to the log a request is taken even if its caller goes away meanwhile.
        """
        if not self.accepting:
            raise Refused("shutting_down", "otel-logbert is shutting down; retry another instance or later")
        count = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        if count == 0:
            return 0
        self.admission.check(count)
        if self.wal is None:
            await self._ingest(request, 0, None)
        else:
            task = asyncio.ensure_future(self._persist_and_ingest(self.wal, request, count))
            task.add_done_callback(_retrieve)  # a caller gone meanwhile does not leave it unretrieved
            await asyncio.shield(task)
        self.metrics.records_received.add(count, {"protocol": protocol})
        return count

    async def _persist_and_ingest(self, wal: WriteAheadLog, request: Message, count: int) -> None:
        try:
            seq = await wal.append(request.SerializeToString(), count)
        except PersistenceFull as exc:
            raise Refused("backpressure", str(exc), retry_after_s=1.0) from None
        await self._ingest(request, ticket(seq, 0), None)

    async def replay(self, backlog: list[Backlog]) -> int:
        """Put what the persistent queue held at the last stop back into the pipeline (at start,
        before the receivers take traffic): each entry's records not yet settled are ingested as if
        just received (waiting while the queue is full), then every session is closed with reason
        ``restart`` and scored. Counts ``records_replayed`` (``in_flight``: sent downstream without
        an acknowledgement, so possibly a duplicate, also counted in ``records_possible_duplicates``;
        ``held``: never sent). Returns the records."""
        held = in_flight = 0
        for entry in backlog:
            while self.admission.held and self.admission.held >= self.admission.limit:
                await asyncio.sleep(REPLAY_WAIT_S)
            try:
                request = decode_protobuf(await asyncio.to_thread(entry.read))
            except MalformedRequest as exc:  # CRC-checked, so only a bug could get here
                log.error("persistent queue: entry cannot be decoded; dropped", extra={"seq": entry.seq,
                                                                                       "error": str(exc)})
                left = [ticket(entry.seq, i) for i in range(entry.records) if i not in entry.settled]
                self.metrics.records_dropped.add(len(left), {"reason": "unreadable"})
                assert self.wal is not None
                self.wal.settled(left)
                continue
            await self._ingest(request, ticket(entry.seq, 0), entry.settled or None)
            left = entry.records - len(entry.settled)
            in_flight += len(entry.sent)
            held += left - len(entry.sent)
        self.close(self.store.close_all(time.monotonic(), reason=RESTART))
        if in_flight:
            self.metrics.records_replayed.add(in_flight, {"state": "in_flight"})
            self.metrics.records_possible_duplicates.add(in_flight, {"cause": "replay"})
        if held:
            self.metrics.records_replayed.add(held, {"state": "held"})
        return held + in_flight

    async def _ingest(self, request: Message, base: int, skip: set[int] | None) -> None:
        """Parse, key and place every record of ``request`` (the hot path). ``base``: the ticket of
        its first record (0 without persistence; record ``i`` gets ``base + i``); ``skip``: indices
        not to take (settled before a restart)."""
        now, now_unix = time.monotonic(), time.time()
        rule, store, annotator = self.rule, self.store, self.annotator
        mark = Mark(now)  # unsessioned records are ready to forward now
        unsessioned: list[Item] = []
        closed: list[Session] = []
        taken = 0
        record_ticket = 0
        for rl in request.resource_logs:
            resource_attrs = {kv.key: kv.value for kv in rl.resource.attributes}
            service_value = resource_attrs.get(SERVICE_NAME)
            service = text_of(service_value.string_value) if service_value is not None else ""
            lane = self.router.lane_for(service)
            resource = rl.resource.SerializeToString() if rl.HasField("resource") else None
            for sl in rl.scope_logs:
                scope = sl.scope.SerializeToString() if sl.HasField("scope") else None
                origin = self.origins.get(resource, rl.schema_url, scope, sl.schema_url, service)
                parsed = None
                if lane.masking_worker is not None:  # parse the scope first: it may be masked in a worker
                    first = taken  # records settled before a restart are neither parsed nor taken
                    texts = [self.field_text(rec) for i, rec in enumerate(sl.log_records)
                             if not (base and skip is not None and first + i in skip)]
                    parsed = zip(texts, await lane.parse_many(texts), strict=True)
                for rec in sl.log_records:
                    if base:
                        record_ticket = base + taken
                        if skip is not None and taken in skip:
                            taken += 1
                            continue
                    if parsed is None:  # parsed here, between the yields below
                        text = self.field_text(rec)
                        log_key, template_attr = lane.parse(text)
                    else:
                        text, (log_key, template_attr) = next(parsed)
                    taken += 1
                    if taken % YIELD_EVERY == 0:
                        self._hand_on(unsessioned, closed, now)
                        unsessioned, closed = [], []
                        await asyncio.sleep(0)
                        now = time.monotonic()
                    data = annotator.record_bytes(rec)  # the session appends template_attr (log_key.attr)
                    str_text = (text if isinstance(text, str) else text_of(text)) if rule.needs_text else ""
                    placements = rule.placements(rec, resource_attrs, str_text, now_unix)
                    if not placements:
                        unsessioned.append((origin, data + template_attr, annotator.unsessioned(rule.reason_missing),
                                            mark, record_ticket))
                        continue
                    ts = rec.time_unix_nano or rec.observed_time_unix_nano
                    store.place(
                        placements, lane.index, log_key, Record(data, origin, 0, record_ticket), ts, now, closed,
                        rec.trace_id, rec.span_id,
                    )
        self._hand_on(unsessioned, closed, now)

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
        self.scoring.submit([s for s in sessions if s.n_records])

    def _on_scored(self, sessions: list[Session], verdicts: list[Verdict]) -> None:
        """Annotate scored sessions' records, emit their spans, queue the records for forwarding."""
        items: list[Item] = []
        anomalous = 0
        now = time.monotonic()
        verdict_latency = self.metrics.verdict_latency
        for session, verdict in zip(sessions, verdicts, strict=True):
            verdict_latency.record(now - session.closed_at)
            mark = Mark(session.closed_at)
            if session.closed_by == RESTART and not verdict.reason:
                verdict = dataclasses.replace(verdict, reason=RESTART)
            annotated = self.annotator.annotate(session, verdict)
            items.extend(
                (origin, data, suffix, mark, record_ticket)
                for (origin, data, suffix), record_ticket in zip(annotated, session.tickets(), strict=True)
            )
            if verdict.status == STATUS_SCORED:
                anomalous += bool(verdict.is_anomaly)
                self._emit_span(session, verdict)
            session.drop_records()  # the forward queue holds them now
        self.forwarder.put(items)
        if anomalous:
            self.metrics.sessions_anomalous.add(anomalous)

    def _emit_span(self, session: Session, verdict: Verdict) -> None:
        if self.spans is None or not session.trace_id:
            return
        if verdict.is_anomaly or not self.traces.only_anomalies:
            templates = unexpected_templates(session, verdict, self.router.lanes[session.lane].template)
            self.spans.emit(build_span(session, verdict, self.annotator.names, templates))


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
