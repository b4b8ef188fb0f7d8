"""Scoring through NVIDIA Triton Inference Server over gRPC (``scoring.scorer: triton``).

    scorer = TritonScorer(bundle, url="127.0.0.1:8001")      # Triton model: default_model_name(bundle)
    scores = scorer.score(sessions)                          # blocking: from a worker thread (the sidecar's)

Sessions are chunked, sorted by length and padded to length buckets by
``otel_logbert.scoring.batching.score_sessions``, exactly as the embedded scorer does, so both score
identical tensors and Triton's dynamic batcher can merge requests of the same padded length (from
concurrent callers: one client is shared by the threads that call ``score``).

Failure contract (the sidecar fails open on ``ScoringError``: records go on ``unscored``):

* every request has a timeout (``timeout_s``) and the whole call a deadline (``deadline_s``), so a
  hung Triton never holds the caller longer than ``deadline_s``;
* transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED) are retried up to
  ``retries`` times with exponential backoff and jitter, within the deadline;
* a circuit breaker opens after ``failure_threshold`` consecutive failed calls: calls then fail at once
  with ``CircuitOpenError`` (a ``ScoringError``) instead of waiting on a dead server; after
  ``reset_timeout_s`` one call is let through as a probe (half-open) and closes the breaker when it
  succeeds, so scoring resumes by itself once Triton is back;
* the model Triton serves is checked once per connection against the bundle (its config's
  ``otel_logbert.model_version`` / ``otel_logbert.max_len`` parameters, written by
  ``write_triton_repository``); a mismatch is a ``ScoringError`` naming both versions, never silently
  wrong scores. Its ``max_batch_size`` caps the request size.

``ready()`` (the sidecar's ``/readyz``) never blocks: it answers from the last health check (server
ready + model ready) and refreshes it in a background thread at most every ``READY_CACHE_S``.
``status()`` runs the check now and says what is wrong in words.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from otel_logbert.bundle import Bundle
from otel_logbert.scoring.base import Scorer, ScoringError, SessionScore
from otel_logbert.scoring.batching import score_sessions
from otel_logbert.triton.repository import PARAM_MAX_LEN, PARAM_MODEL_VERSION, default_model_name

log = logging.getLogger(__name__)

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_BATCH_SIZE = 256
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_S = 0.05
MAX_BACKOFF_S = 0.5
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_RESET_TIMEOUT_S = 5.0
READY_CACHE_S = 1.0
STATUS_TIMEOUT_S = 0.5

INPUT, SCORE, EVIDENCE = "tokens", "score", "evidence"
# gRPC status codes worth another attempt: the server is (re)starting, overloaded or slow.
RETRYABLE = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED"})


class CircuitOpenError(ScoringError):
    """The circuit breaker is open: Triton failed repeatedly and is not being called for now."""


class CircuitBreaker:
    """Closed -> open after ``failure_threshold`` consecutive failures; open -> half-open once
    ``reset_timeout_s`` has passed, letting one probe call through; the probe's success closes it,
    its failure opens it again for another ``reset_timeout_s``. Thread-safe."""

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or reset_timeout_s < 0:
            raise ValueError("failure_threshold must be >= 1 and reset_timeout_s >= 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.last_error = ""

    @property
    def state(self) -> str:
        with self._lock:
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
                return self.HALF_OPEN
            return self._state

    def before_call(self) -> None:
        """Raise ``CircuitOpenError`` unless a call may go out now (closed, or the half-open probe)."""
        with self._lock:
            if self._state == self.CLOSED:
                return
            wait = self._opened_at + self.reset_timeout_s - self._clock()
            if wait <= 0 and not self._probing:
                self._state, self._probing = self.HALF_OPEN, True
                return
            raise CircuitOpenError(
                f"Triton circuit open after {self._failures} consecutive failures "
                f"(last: {self.last_error}); next probe in {max(wait, 0):.1f}s"
            )

    def record_success(self) -> None:
        with self._lock:
            if self._state != self.CLOSED:
                log.info("triton circuit closed: scoring again")
            self._state, self._failures, self._probing = self.CLOSED, 0, False

    def record_failure(self, error: str) -> None:
        with self._lock:
            self._failures += 1
            self.last_error = error
            if self._state == self.HALF_OPEN or self._failures >= self.failure_threshold:
                if self._state == self.CLOSED:
                    log.warning("triton circuit opened", extra={"failures": self._failures, "error": error})
                self._state, self._opened_at, self._probing = self.OPEN, self._clock(), False


@dataclass(frozen=True)
class TritonStatus:
    """Result of a health check: ``ok`` when the server and the model are ready."""

    server_ready: bool
    model_ready: bool
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.server_ready and self.model_ready


class TritonScorer(Scorer):
    """A ``Scorer`` backed by a model in Triton (see the module docstring for the failure contract).

    Nothing is contacted in the constructor: a sidecar starts (and fails open) while Triton is down.
    Two names: ``model_name`` is the bundle's model (``fastlogad``, ..., as for every ``Scorer``);
    ``triton_model_name`` is the model in Triton's repository, by default ``default_model_name(bundle)``,
    the name ``otel-logbert export --triton-repo`` gives it. ``deadline_s`` defaults to twice
    ``timeout_s``. ``score`` may be called from several threads at once.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        url: str = DEFAULT_URL,
        triton_model_name: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        deadline_s: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_timeout_s: float = DEFAULT_RESET_TIMEOUT_S,
        client_options: dict[str, Any] | None = None,
        tls: Any = None,
    ) -> None:
        import tritonclient.grpc  # noqa: F401 - fail here, with ImportError, when the client is missing

        self.bundle = bundle
        self.url = url
        # TLS: ssl, creds, channel_args (``tls_client_options``); with ``tls`` (an ``otlp.tls.ClientTls``)
        # they come from its files, and a new client is made when they rotate (``ClientTls.refresh``).
        self._tls = tls
        self.client_options = tls_client_options(tls) if tls is not None else client_options or {}
        self._tls_generation = tls.generation if tls is not None else 0
        self._retired: list[Any] = []  # clients made with older TLS files, closed by ``close``
        self.triton_model_name = triton_model_name or default_model_name(bundle)
        self.model_name = bundle.model
        self.model_version = bundle.model_version
        self.max_len = bundle.max_len
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s if deadline_s is not None else 2 * timeout_s
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_s = backoff_s
        self.breaker = CircuitBreaker(failure_threshold, reset_timeout_s)
        self._client: Any = None
        self._lock = threading.Lock()
        self._checked_batch: int | None = None  # request size, set once the model has been checked
        self._status = TritonStatus(False, False, "not checked yet")
        self._status_at = -READY_CACHE_S
        self._refreshing = False

    # --- scoring ---------------------------------------------------------------------------------

    def score(self, sessions: Sequence[Sequence[int]]) -> list[SessionScore]:
        """Score through Triton (blocking; at most ``deadline_s``). Raises ``ScoringError``."""
        if not sessions:
            return []
        self.breaker.before_call()
        deadline = time.monotonic() + self.deadline_s
        try:
            batch = self._batch_limit(deadline)
            results = score_sessions(sessions, lambda tokens: self._infer(tokens, deadline), self.max_len, batch)
        except Exception as exc:
            raise self._failed(exc) from exc
        self.breaker.record_success()
        return results

    def _failed(self, exc: BaseException) -> ScoringError:
        """Count a failed call against the breaker; the error the caller sees."""
        message = _describe(exc)
        self.breaker.record_failure(message)
        self._checked_batch = None  # re-check the model on the next connection
        if isinstance(exc, ScoringError):
            return exc
        return ScoringError(f"Triton {self.url} model {self.triton_model_name!r}: {message}")

    # --- one request -----------------------------------------------------------------------------

    def _infer(self, tokens: np.ndarray, deadline: float) -> tuple[np.ndarray, np.ndarray]:
        client = self._get_client()
        for attempt in range(self.retries + 1):
            timeout = _remaining(deadline, self.timeout_s)
            try:
                result = client.infer(self.triton_model_name, _inputs(tokens), outputs=_outputs(),
                                      client_timeout=timeout)
                return _parse(result, tokens)
            except Exception as exc:
                self._retry_or_raise(exc, attempt, deadline)
        raise AssertionError("unreachable")

    def _retry_or_raise(self, exc: Exception, attempt: int, deadline: float) -> None:
        """Re-raise ``exc`` unless it is transient and another attempt fits before the deadline;
        else wait before the next attempt (exponential backoff with jitter)."""
        if _status_of(exc) not in RETRYABLE or attempt >= self.retries:
            raise exc
        delay = min(MAX_BACKOFF_S, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        if time.monotonic() + delay >= deadline:
            raise exc
        log.debug("triton request failed; retrying", extra={"attempt": attempt + 1, "error": _describe(exc)})
        time.sleep(delay)

    # --- the model: identity and batch limit -----------------------------------------------------

    def _batch_limit(self, deadline: float) -> int:
        if self._checked_batch is None:
            config = self._get_client().get_model_config(
                self.triton_model_name, as_json=True, client_timeout=_remaining(deadline, self.timeout_s)
            )
            self._checked_batch = self._check_model(config)
        return self._checked_batch

    def _check_model(self, response: dict[str, Any]) -> int:
        """The request size to use, after checking the served model is this bundle's."""
        config = response.get("config", response)
        parameters = config.get("parameters", {})
        served = parameters.get(PARAM_MODEL_VERSION, {}).get("string_value")
        if served is None:
            log.warning(f"triton model carries no {PARAM_MODEL_VERSION}; cannot check it matches the bundle",
                        extra={"model": self.triton_model_name})
        elif served != self.model_version:
            raise ScoringError(
                f"Triton model {self.triton_model_name!r} serves bundle {served}, but the sidecar encodes sessions "
                f"for {self.model_version}; export this bundle with --triton-repo or fix scoring.triton.model_name"
            )
        max_len = parameters.get(PARAM_MAX_LEN, {}).get("string_value")
        if max_len is not None and int(max_len) != self.max_len:
            raise ScoringError(f"Triton model {self.triton_model_name!r} has max_len {max_len}, bundle {self.max_len}")
        max_batch = int(config.get("max_batch_size", 0) or 0)
        return min(self.batch_size, max_batch) if max_batch > 0 else self.batch_size

    # --- health ----------------------------------------------------------------------------------

    def status(self) -> TritonStatus:
        """Check now (blocking, short timeouts): server ready, then the model ready. Never raises."""
        client = self._get_client()
        try:
            if not client.is_server_ready(client_timeout=STATUS_TIMEOUT_S):
                return TritonStatus(False, False, f"Triton {self.url} is not ready")
        except Exception as exc:
            return TritonStatus(False, False, f"Triton {self.url} unreachable: {_describe(exc)}")
        try:
            if client.is_model_ready(self.triton_model_name, client_timeout=STATUS_TIMEOUT_S):
                return TritonStatus(True, True)
            index = client.get_model_repository_index(as_json=True, client_timeout=STATUS_TIMEOUT_S)
        except Exception as exc:
            return TritonStatus(True, False, f"model {self.triton_model_name!r}: {_describe(exc)}")
        models = {m.get("name"): m for m in index.get("models", [])}
        entry = models.get(self.triton_model_name)
        if entry is None:
            return TritonStatus(True, False, f"model {self.triton_model_name!r} is unknown to Triton {self.url} "
                                             f"(it serves: {', '.join(sorted(models)) or 'nothing'})")
        state, why = entry.get("state", "UNKNOWN"), entry.get("reason", "")
        return TritonStatus(True, False, f"model {self.triton_model_name!r} is not ready in Triton {self.url} "
                                         f"(state {state}{': ' + why if why else ''})")

    def ready(self) -> bool:
        """Server and model ready at the last check (at most ``READY_CACHE_S`` old; refreshed in the
        background, never blocking) and the circuit breaker not open."""
        if time.monotonic() - self._status_at >= READY_CACHE_S:
            self._refresh_in_background()
        return self._status.ok and self.breaker.state != CircuitBreaker.OPEN

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def refresh() -> None:
            try:
                self._status = self.status()
                self._status_at = time.monotonic()
            finally:
                self._refreshing = False

        threading.Thread(target=refresh, name="triton-ready", daemon=True).start()

    # --- clients ---------------------------------------------------------------------------------

    def _get_client(self) -> Any:
        tls = self._tls
        if tls is not None:
            tls.refresh()
        with self._lock:
            if tls is not None and self._tls_generation != tls.generation:
                # Calls in flight on other threads keep the old client; it is closed with this scorer.
                if self._client is not None:
                    self._retired.append(self._client)
                self._client = None
                self.client_options = tls_client_options(tls)
                self._tls_generation = tls.generation
            if self._client is None:
                import tritonclient.grpc as grpcclient

                self._client = grpcclient.InferenceServerClient(self.url, **self.client_options)
            return self._client

    def close(self) -> None:
        """Close the client (idempotent)."""
        with self._lock:
            client, self._client = self._client, None
            retired, self._retired = self._retired, []
        for old in (*retired, client):
            if old is not None:
                old.close()


# --- request and response tensors --------------------------------------------------------------


def _inputs(tokens: np.ndarray) -> list[Any]:
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput(INPUT, list(tokens.shape), "INT64")
    tensor.set_data_from_numpy(np.ascontiguousarray(tokens, dtype=np.int64))
    return [tensor]


def _outputs() -> list[Any]:
    import tritonclient.grpc as grpcclient

    return [grpcclient.InferRequestedOutput(SCORE), grpcclient.InferRequestedOutput(EVIDENCE)]


def _parse(result: Any, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``score`` [B] (Triton returns [B, 1]) and ``evidence`` [B, L], checked against the request."""
    score = result.as_numpy(SCORE)
    evidence = result.as_numpy(EVIDENCE)
    if score is None or evidence is None:
        raise ScoringError("Triton response lacks 'score' or 'evidence'")
    score = score.reshape(-1)
    if score.shape[0] != tokens.shape[0] or evidence.shape != tokens.shape:
        raise ScoringError(f"Triton returned score {score.shape} / evidence {evidence.shape} for "
                           f"tokens {tokens.shape}")
    return score, evidence


def _remaining(deadline: float, timeout_s: float) -> float:
    """The timeout for the next request: ``timeout_s``, shortened to what is left of the deadline."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise ScoringError("Triton call deadline passed")
    return min(timeout_s, left)


def _status_of(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    return str(status()) if callable(status) else ""


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None)
    text = message() if callable(message) else str(exc)
    status = _status_of(exc).replace("StatusCode.", "")
    text = " ".join(str(text or type(exc).__name__).split())[:300]
    return f"{status}: {text}" if status else text


def tls_client_options(tls: Any) -> dict[str, Any]:
    """tritonclient's gRPC client keyword arguments for an ``otlp.tls.ClientTls`` (``scoring.triton.tls``):
    TLS credentials, and the target name override as a channel argument (with tritonclient's own
    unlimited message sizes, which ``channel_args`` would otherwise replace)."""
    if tls is None or not tls.enabled:
        return {}
    options: dict[str, Any] = {"ssl": True, "creds": tls.grpc_credentials()}
    if tls.grpc_options():
        unlimited = 2**31 - 1
        options["channel_args"] = [("grpc.max_send_message_length", unlimited),
                                   ("grpc.max_receive_message_length", unlimited), *tls.grpc_options()]
    return options
