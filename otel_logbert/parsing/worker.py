"""``MaskingWorker``: ``Masker.masked`` for batches of messages, in child processes.

Masking is most of what parsing costs and needs no shared state (``parsing.masker``), so a sidecar
hands large batches to worker processes and keeps its event loop for the rest. The contract:

- ``await worker.masked_many(spec, texts)`` gives exactly what ``Masker(spec).masked_many(texts)``
  gives, in the same order; it never raises for content.
- Batches smaller than ``min_batch`` are masked by the caller (a round trip costs more than they do).
- The processes start on the first large batch; until the first one has answered, batches are masked
  by the caller, so start-up never stalls a request.
- A worker that fails (crashed, killed, no answer within ``timeout_s``) is shut down and batches are
  masked by the caller from then on, with one warning: nothing is lost, parsing only gets slower.

Processes are started with ``spawn`` (never ``fork``: the sidecar runs gRPC threads).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from otel_logbert.parsing.masker import Masked, Masker, MaskSpec

log = logging.getLogger(__name__)

MIN_BATCH = 64  # texts; smaller batches are masked in the calling process
TIMEOUT_S = 30.0

_maskers: dict[MaskSpec, Masker] = {}  # in a worker process: one per spec (lane), with its token cache


def _mask_batch(spec: MaskSpec, texts: list[str | bytes]) -> list[Masked]:
    masker = _maskers.get(spec)
    if masker is None:
        masker = _maskers[spec] = Masker(spec)
    return masker.masked_many(texts)


def _ready() -> bool:
    return True


class MaskingWorker:
    """A pool of ``processes`` masking processes shared by every lane of a sidecar."""

    def __init__(self, processes: int = 1, min_batch: int = MIN_BATCH, timeout_s: float = TIMEOUT_S) -> None:
        """Raises ``ValueError`` for fewer than 1 process."""
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        self.processes = processes
        self.min_batch = min_batch
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._ready = False
        self.failed = ""  # why the worker was given up ("" while usable)
        self.batches = 0  # batches masked by the worker processes

    def offloads(self, count: int) -> bool:
        """Whether a batch of ``count`` texts goes to the worker processes now (else: mask it here).
        Starts the processes on the first batch large enough."""
        if self.failed or count < self.min_batch:
            return False
        if self._pool is None:
            self._start()
        return self._ready

    async def masked_many(self, spec: MaskSpec, texts: list[str | bytes]) -> list[Masked]:
        """Every text masked (``Masker.masked``), by a worker process. Raises ``WorkerUnavailable`` when the
        worker failed (the caller masks the batch itself)."""
        pool = self._pool
        if pool is None or self.failed:
            raise WorkerUnavailable(self.failed or "not started")
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(loop.run_in_executor(pool, _mask_batch, spec, texts), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # BrokenProcessPool, timeout, pickling: give the worker up
            self._fail(f"{type(exc).__name__}: {exc}"[:300])
            raise WorkerUnavailable(self.failed) from None
        self.batches += 1
        return result

    def close(self) -> None:
        """Stop the processes (idempotent)."""
        pool, self._pool = self._pool, None
        self._ready = False
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _start(self) -> None:
        try:
            pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"))
            ping = pool.submit(_ready)
        except Exception as exc:  # cannot start processes here: mask in-process
            self._fail(f"cannot start: {type(exc).__name__}: {exc}"[:300])
            return
        self._pool = pool
        ping.add_done_callback(self._started)

    def _started(self, ping) -> None:  # noqa: ANN001 - a concurrent.futures.Future, in the pool's thread
        if not ping.cancelled() and ping.exception() is None:
            self._ready = True

    def _fail(self, why: str) -> None:
        self.failed = why
        log.warning("masking worker failed; parsing continues on the event loop", extra={"error": why})
        self.close()


class WorkerUnavailable(Exception):
    """The masking worker cannot take batches (any more); mask in the calling process."""
