"""Reading an OTLP/HTTP request body under a size limit, decompressing as it streams in.

``read_body(request, max_bytes)`` reads the raw body chunk by chunk and inflates it as it arrives,
stopping at once when either the bytes on the wire or the inflated bytes pass ``max_bytes``: a 2 MB
gzip bomb that would inflate to gigabytes costs the few milliseconds it takes to inflate the first
``max_bytes``. The server must not decompress on its own (aiohttp: ``auto_decompress=False``), or it
inflates the whole body before and after the handler looks at it.

``Content-Encoding`` (RFC 9110): ``identity`` (or absent), ``gzip`` (also ``x-gzip``; concatenated
members are read as one stream, as Go's and the Collector's readers do) and ``deflate`` (the zlib
format, RFC 1950, as the Collector reads it; a raw RFC 1951 stream is accepted too). Anything else,
including a list of several encodings, raises ``UnsupportedEncoding`` (HTTP 415); a body that is not
what its encoding says raises ``BadEncoding`` (400); too much raises ``TooLarge`` (413).
"""

from __future__ import annotations

import zlib
from typing import Protocol

CHUNK_BYTES = 64 * 1024
SUPPORTED = ("identity", "gzip", "deflate")
_ALIASES = {"": "identity", "identity": "identity", "gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class BodyError(ValueError):
    """The body cannot be taken; the message is one line, safe to send back to the client."""


class UnsupportedEncoding(BodyError):
    """A ``Content-Encoding`` this receiver does not decode (HTTP 415)."""


class BadEncoding(BodyError):
    """The body is not valid in its declared encoding (HTTP 400)."""


class TooLarge(BodyError):
    """The body, on the wire or inflated, exceeds the limit (HTTP 413)."""


class ChunkSource(Protocol):
    def iter_chunked(self, n: int): ...  # an async iterator of bytes (aiohttp's ``StreamReader``)


def encoding_of(header: str | None) -> str:
    """The normalized encoding of a ``Content-Encoding`` header value. Raises ``UnsupportedEncoding``."""
    value = (header or "").strip().lower()
    encoding = _ALIASES.get(value)
    if encoding is None:
        shown = value[:40]
        raise UnsupportedEncoding(f"unsupported Content-Encoding {shown!r}: use one of {', '.join(SUPPORTED)}")
    return encoding


class Inflater:
    """Incremental decoder of one body in ``encoding`` that never produces more than ``max_bytes``.

    ``feed(chunk)`` for each piece as it arrives, then ``finish()`` for the whole decoded body.
    Raises ``TooLarge`` as soon as the output would pass ``max_bytes`` and ``BadEncoding`` when the
    input is not valid (also for a stream cut short).
    """

    def __init__(self, encoding: str, max_bytes: int) -> None:
        self.encoding = encoding
        self.max_bytes = max_bytes
        self._parts: list[bytes] = []
        self._size = 0
        self._decoder: zlib._Decompress | None = None
        self._pending = b""  # deflate: bytes held until the header decides zlib vs. raw

    def feed(self, chunk: bytes) -> None:
        if self.encoding == "identity":
            self._emit(chunk)
            return
        if self._decoder is None:
            self._pending += chunk
            if self.encoding == "deflate" and len(self._pending) < 2:
                return
            self._decoder = self._new_decoder(self._pending)
            chunk, self._pending = self._pending, b""
        self._inflate(chunk)

    def finish(self) -> bytes:
        if self.encoding != "identity":
            if self._decoder is None:
                if self._pending or self.encoding == "deflate":
                    self._decoder = self._new_decoder(self._pending)
                    self._inflate(self._pending)
                    self._pending = b""
                if self._decoder is None:
                    raise BadEncoding(f"empty body declared as Content-Encoding {self.encoding}")
            try:
                self._emit(self._decoder.flush())
            except zlib.error as exc:
                raise BadEncoding(f"body is not valid {self.encoding} ({exc})") from None
            if not self._decoder.eof:
                raise BadEncoding(f"body is not valid {self.encoding} (the stream ends early)")
        return b"".join(self._parts)

    def _new_decoder(self, head: bytes) -> zlib._Decompress:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(head) else -zlib.MAX_WBITS)

    def _inflate(self, data: bytes) -> None:
        decoder = self._decoder
        assert decoder is not None
        while data:
            if decoder.eof:  # a gzip member ended; what follows must be another member
                if self.encoding != "gzip":
                    raise BadEncoding(f"body is not valid {self.encoding} (data after the end of the stream)")
                decoder = self._decoder = self._new_decoder(data)
            try:
                # Ask for one byte more than is allowed: getting it means the limit is passed.
                out = decoder.decompress(data, self.max_bytes - self._size + 1)
            except zlib.error as exc:
                raise BadEncoding(f"body is not valid {self.encoding} ({exc})") from None
            self._emit(out)
            data = decoder.unconsumed_tail or (decoder.unused_data if decoder.eof else b"")

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self._size += len(data)
        if self._size > self.max_bytes:
            raise TooLarge(f"request body exceeds {self.max_bytes} bytes (after decompression)")
        self._parts.append(data)


def _zlib_header(head: bytes) -> bool:
    """Whether ``head`` starts with an RFC 1950 header (CM = 8, header checksum divisible by 31)."""
    return len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


async def read_body(content: ChunkSource, content_encoding: str | None, max_bytes: int) -> bytes:
    """The decoded body from ``content`` (aiohttp's ``request.content``), at most ``max_bytes`` both on
    the wire and decoded. Raises ``UnsupportedEncoding``, ``BadEncoding`` or ``TooLarge``; reading
    stops at the first error (the rest of the body is left unread: close the connection)."""
    inflater = Inflater(encoding_of(content_encoding), max_bytes)
    received = 0
    async for chunk in content.iter_chunked(CHUNK_BYTES):
        received += len(chunk)
        if received > max_bytes:
            raise TooLarge(f"request body exceeds {max_bytes} bytes")
        inflater.feed(chunk)
    return inflater.finish()
