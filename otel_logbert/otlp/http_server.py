"""The OTLP/HTTP receiver's server: aiohttp's low-level ``web.Server`` with a bound on open connections.

aiohttp itself bounds neither how many connections are open nor how long a request body may take;
what it does bound (``keepalive_timeout``, from the connection's start and after each answer) closes a
connection that has not sent a whole request header in time. ``BoundedServer`` adds the connection
bound: past ``max_connections`` open ones, a new connection is answered ``503`` with ``Retry-After``
and closed at once, before anything of it is read (a Collector retries a 503). The body deadline is
the handler's (``HttpReceiver``: 408).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

_REFUSAL = b"too many open connections (receivers.http.max_connections); retry later"
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL), _REFUSAL)
)


class BoundedServer(web.Server):
    """``web.Server`` that keeps at most ``max_connections`` connections open (0: no bound);
    ``on_refused()`` is called for each connection turned away."""

    def __init__(self, handler: Any, *, max_connections: int, on_refused: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.max_connections = max_connections
        self.on_refused = on_refused

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        full = self.max_connections and len(self._connections) >= self.max_connections
        super().connection_made(handler, transport)  # so that connection_lost finds it
        if full:
            self.on_refused()
            transport.write(TOO_MANY_CONNECTIONS)
            handler.force_close()
            transport.close()
