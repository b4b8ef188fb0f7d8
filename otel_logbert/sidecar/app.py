"""The sidecar's lifecycle: start the servers and background loops around a ``Pipeline``, stop
gracefully.

    sidecar = Sidecar(config)        # builds the pipeline (``sidecar.wiring``); raises UserError
    await sidecar.start()            # telemetry server, receivers, background loops
    ...                              # records flow (``sidecar.pipeline``)
    await sidecar.stop()             # refuse new requests, close every session, score, deliver

``run()`` does the three steps and stops on SIGTERM/SIGINT; ``otel-logbert serve`` calls
``run_sidecar``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace.export import SpanExporter

from otel_logbert.config import SidecarConfig
from otel_logbert.errors import UserError
from otel_logbert.otlp.auth import BearerToken
from otel_logbert.otlp.forwarder import LogsExporter
from otel_logbert.otlp.limits import RequestLimits
from otel_logbert.otlp.receiver import GrpcReceiver, HttpReceiver, split_endpoint
from otel_logbert.otlp.telemetry import TelemetryServer
from otel_logbert.otlp.tls import ServerTls
from otel_logbert.sidecar.lanes import Router
from otel_logbert.sidecar.wal import Backlog
from otel_logbert.sidecar.wiring import build_pipeline

log = logging.getLogger(__name__)

TICK_S = 0.02  # how often open sessions are checked for inactivity / max age
RECEIVER_GRACE_S = 5.0


class Sidecar:
    """One sidecar: a pipeline and the servers and loops that drive it. ``router``, ``exporter`` and
    ``span_exporter`` may be injected (tests, the demo); by default they are built from ``config``."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        router: Router | None = None,
        exporter: LogsExporter | None = None,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self.config = config
        self.pipeline = build_pipeline(config, router=router, exporter=exporter, span_exporter=span_exporter)
        self.metrics = self.pipeline.metrics
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        self.telemetry: TelemetryServer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._stopping = False
        self._stopped = asyncio.Event()

    @property
    def router(self) -> Router:
        return self.pipeline.router

    def ready(self) -> tuple[bool, str]:
        """(ready, why not) for ``/readyz``: false while starting or stopping, while a scorer is not
        ready, while admission refuses requests (the queue is full), and while the last export to
        the downstream failed (cleared by the next delivery)."""
        if self._stopping:
            return False, "shutting down"
        if not self._started:
            return False, "starting"
        for lane in self.router.lanes:
            if lane.scorer is not None and not lane.scorer.ready():
                return False, f"scorer of lane {lane.name} not ready"
        admission = self.pipeline.admission
        if admission.held >= admission.limit:
            return False, f"queue full ({admission.held} records waiting to be scored and forwarded)"
        error = self.pipeline.forwarder.last_error
        if error:
            return False, f"downstream failing: {error[:200]}"
        return True, ""

    @property
    def ports(self) -> dict[str, int]:
        """Bound ports (useful when an endpoint asked for port 0)."""
        out = {}
        if self.grpc is not None:
            out["grpc"] = self.grpc.port
        if self.http is not None:
            out["http"] = self.http.port
        if self.telemetry is not None:
            out["telemetry"] = self.telemetry.port
        return out

    async def start(self) -> None:
        """Open the persistent queue (if any), start telemetry and the background loops, replay what
        the queue held, then start the receivers. Raises ``UserError`` when a port cannot be bound or
        the queue's directory cannot be used (everything already started is stopped again)."""
        config = self.config
        pipeline = self.pipeline
        backlog = await self._open_wal()
        try:
            await self._start_telemetry()
        except BaseException:
            await self._stop_servers()
            raise
        await self._warm_up()
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="sessions"),
            asyncio.create_task(pipeline.scoring.run(), name="scoring"),
            asyncio.create_task(pipeline.forwarder.run(), name="forward"),
            asyncio.create_task(self._state_loop(), name="parser-state"),
        ]
        if backlog:
            replayed = await pipeline.replay(backlog)
            log.info("persistent queue replayed", extra={"records": replayed, "requests": len(backlog)})
        try:
            await self._start_receivers()
        except BaseException:
            for task in self._tasks:
                task.cancel()
            await self._stop_servers()
            raise
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
        pipeline = self.pipeline
        pipeline.accepting = False
        try:
            if self.grpc is not None:
                await self.grpc.stop(RECEIVER_GRACE_S)
            if self.http is not None:
                await self.http.stop()
            pipeline.close_all()
            for task in self._tasks:  # the loops stop; what they held is drained below
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await pipeline.scoring.drain()
            left = await pipeline.forwarder.drain(self.config.forward.drain_timeout_s)
            if left and pipeline.wal is not None:
                log.warning(
                    "shutdown: records not delivered in time are kept in the persistent queue for the next start",
                    extra={"records": left, "error": pipeline.forwarder.last_error},
                )
            elif left:
                self.metrics.records_dropped.add(left, {"reason": "shutdown"})
                log.error(
                    "shutdown: records could not be delivered in time",
                    extra={"records": left, "error": pipeline.forwarder.last_error},
                )
            if pipeline.spans is not None:
                await pipeline.spans.flush()
                pipeline.spans.close()
            for learner in pipeline.learners.values():
                learner.close()
            await self._save_parser_states()
            log.info("otel-logbert sidecar stopped", extra={"undelivered": left})
        finally:
            pipeline.scoring.close()
            await pipeline.forwarder.close()
            if pipeline.wal is not None:
                await pipeline.wal.close()
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

    async def _open_wal(self) -> list[Backlog]:
        """Lock and read back the persistent queue (in a worker thread); [] without one."""
        wal = self.pipeline.wal
        if wal is None:
            return []
        try:
            backlog = await asyncio.to_thread(wal.open)
        except BlockingIOError:
            raise UserError(f"persistence.directory {wal.directory}: in use by another otel-logbert process") from None
        except OSError as exc:
            raise UserError(f"persistence.directory {wal.directory}: cannot use it ({exc.strerror or exc})") from None
        log.info("persistent queue opened", extra={"directory": str(wal.directory), "bytes": wal.bytes,
                                                   "undelivered_requests": len(backlog)})
        return backlog

    async def _start_telemetry(self) -> None:
        config = self.config
        if config.telemetry.endpoint:
            tls = ServerTls.from_config(config.telemetry.tls, "telemetry.tls")
            self.telemetry = TelemetryServer(self.metrics, self.ready, tls=tls)
            host, port = split_endpoint(config.telemetry.endpoint)
            try:
                await self.telemetry.start(host, port)
            except OSError as exc:
                raise UserError(
                    f"telemetry.endpoint {config.telemetry.endpoint}: cannot listen ({exc.strerror or exc})"
                ) from None

    async def _start_receivers(self) -> None:
        receivers = self.config.receivers
        auth = BearerToken.from_config(receivers.auth)
        limits = RequestLimits(receivers.max_records_per_request, receivers.max_attributes_per_record,
                               receivers.max_attribute_key_bytes, receivers.max_attribute_value_bytes)
        if receivers.grpc.endpoint:
            self.grpc = GrpcReceiver(self.pipeline, receivers.grpc, self.metrics, auth=auth, limits=limits)
            await _listen(self.grpc.start)
        if receivers.http.endpoint:
            self.http = HttpReceiver(self.pipeline, receivers.http, self.metrics, auth=auth, limits=limits)
            await _listen(self.http.start)

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
            self.pipeline.expire()

    async def _state_loop(self) -> None:
        interval = self.config.parsing.state_save_interval_s
        while True:
            await asyncio.sleep(interval)
            await self._save_parser_states()

    async def _save_parser_states(self) -> None:
        """Each lane's parser state, where it changed; encoding and writing off the loop."""
        for lane in self.router.lanes:
            try:
                await lane.persister.save_async()
            except OSError as exc:
                log.warning("cannot save parser state", extra={"lane": lane.name, "error": str(exc)})


async def _listen(start: Callable[[], Any]) -> None:
    try:
        await start()
    except OSError as exc:
        raise UserError(str(exc)) from None


def tune_gc() -> None:
    """Garbage-collector settings for a process holding many small objects (open sessions).

    Everything alive at start-up (modules, the model) is frozen out of collection, and collections
    run less often: full collections over a million records would otherwise pause the event loop
    for 100+ ms. The sidecar's own data (sessions, records) holds no reference cycles, and neither
    may a refused request: with collections this rare, anything a cycle keeps alive (a decoded
    request held by a raised exception's traceback, say) piles up while the sidecar pushes back.
    The receivers answer refusals without raising for that reason (``otlp.receiver``).
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
