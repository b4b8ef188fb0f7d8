"""Bearer-token authentication of OTLP requests, after the Collector's ``bearertokenauth`` extension.

The Collector's exporter sends ``authorization: Bearer <token>`` (gRPC metadata or HTTP header) when
configured with ``auth: {authenticator: bearertokenauth}``; the receivers check it with
``BearerToken.accepts``. The token comes from a file (re-read when the file changes, so a rotated
Kubernetes Secret is picked up without a restart) or from an environment variable. Comparison is in
constant time (``hmac.compare_digest``). The token is never logged, nor put in any error message.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path

from otel_logbert.config import AuthConfig
from otel_logbert.errors import UserError

log = logging.getLogger(__name__)

RECHECK_S = 1.0  # how often the token file's status is looked at, at most


class BearerToken:
    """The token a request must carry. Raises ``UserError`` when its source is missing or empty."""

    def __init__(self, config: AuthConfig) -> None:
        self.scheme = config.scheme.strip().lower()
        self._file = Path(config.token_file) if config.token_file else None
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = 0.0
        if self._file is not None:
            self._token = self._read_file(initial=True)
        else:
            assert config.token_env
            value = os.environ.get(config.token_env, "").strip()
            if not value:
                raise UserError(
                    f"receivers.auth.token_env: environment variable {config.token_env} is not set or empty"
                )
            self._token = value.encode("utf-8")

    @classmethod
    def from_config(cls, config: AuthConfig) -> BearerToken | None:
        """A ``BearerToken`` when ``receivers.auth`` names a token source, else None (no auth)."""
        return cls(config) if config.token_file or config.token_env else None

    def accepts(self, authorization: str | bytes | None) -> bool:
        """Whether an ``Authorization`` value (``<scheme> <token>``, scheme case-insensitive) carries
        the token."""
        if authorization is None:
            return False
        if isinstance(authorization, str):
            authorization = authorization.encode("utf-8", "replace")
        scheme, _, presented = authorization.strip().partition(b" ")
        token = self._current()
        # Compare the token whatever the scheme, so a wrong scheme takes as long as a wrong token.
        same = hmac.compare_digest(presented.strip(), token)
        return same and scheme.lower() == self.scheme.encode()

    def _current(self) -> bytes:
        if self._file is not None:
            now = time.monotonic()
            if now - self._checked_at >= RECHECK_S:
                self._checked_at = now
                self._token = self._read_file(initial=False)
        return self._token

    def _read_file(self, initial: bool) -> bytes:
        """The file's token (re-read only when its mtime, size or inode changed). Start: raises
        ``UserError``; later: a missing or empty file keeps the previous token (logged)."""
        assert self._file is not None
        try:
            st = self._file.stat()
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
            if signature == self._signature:
                return self._token
            token = self._file.read_bytes().strip()
        except OSError as exc:
            if initial:
                raise UserError(f"receivers.auth.token_file {self._file}: cannot read ({exc.strerror})") from None
            log.warning("cannot re-read the bearer token file; keeping the previous token",
                        extra={"path": str(self._file), "error": exc.strerror})
            return self._token
        if not token:
            if initial:
                raise UserError(f"receivers.auth.token_file {self._file}: the file is empty")
            log.warning("bearer token file is empty; keeping the previous token", extra={"path": str(self._file)})
            return self._token
        if not initial:
            log.info("bearer token reloaded", extra={"path": str(self._file)})
        self._signature = signature
        return token
