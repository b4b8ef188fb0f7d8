"""Slow and numerous clients on both receivers (issue 11), over real sockets to an in-process sidecar:
a body trickled byte by byte (408), a header trickled or never sent (closed), too many HTTP
connections (503 on arrival), and on gRPC the HTTP/2 stream bound per connection, the connection
bound and the concurrent-call bound, seen by a minimal hand-written HTTP/2 client (no HTTP/2 library
is installed here; literal HPACK headers need none). After each, normal requests still succeed.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path
from typing import Any

import grpc

from otel_logbert.otlp.codec import LOGS_EXPORT_METHOD
from otel_logbert.otlp.receiver import LINGER_S
from tests.conftest import OtlpSink, prometheus_value, sidecar_config
from tests.unit.test_hostile_input import HEALTHY, healthy
from tests.unit.test_sidecar_receiver import grpc_export, request, run


def receivers(grpc_keys: dict[str, Any] | None = None, http_keys: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"grpc": {"endpoint": "127.0.0.1:0", **(grpc_keys or {})},
            "http": {"endpoint": "127.0.0.1:0", **(http_keys or {})}}


def read_until_closed(sock: socket.socket, timeout_s: float) -> tuple[bytes, float | None]:
    """Everything the server sends until it closes the connection; (data, seconds until closed, or
    None when still open after ``timeout_s``)."""
    started = time.monotonic()
    sock.settimeout(0.1)
    data = b""
    while time.monotonic() - started < timeout_s:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, time.monotonic() - started
        if not chunk:
            return data, time.monotonic() - started
        data += chunk
    return data, None


HEADER = b"POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"


def trickle_body(port: int) -> tuple[bytes, float | None, float | None]:
    """A whole header announcing 100,000 bytes, then one byte every 0.1 s; (what the server sent,
    seconds until its answer began, seconds until it closed the connection)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(HEADER + b"Content-Length: 100000\r\n\r\n")
        started = time.monotonic()
        sock.settimeout(0.1)
        data, answered, closed = b"", None, None
        while time.monotonic() - started < 8 and closed is None:
            try:
                sock.send(b"\x0a")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                chunk = b""
            if not chunk:
                closed = time.monotonic() - started
            elif answered is None:
                answered = time.monotonic() - started
            data += chunk
        return data, answered, closed


def trickle_header(port: int) -> float | None:
    """A request header sent one line every 0.2 s, never finished; seconds until the server closes."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/logs HTTP/1.1\r\n")
        started = time.monotonic()
        sock.settimeout(0.2)
        while time.monotonic() - started < 6:
            try:
                sock.send(b"X-Slow: yes\r\n")
                if sock.recv(65536) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
        return None


def silent(port: int) -> float | None:
    """A connection that sends nothing; seconds until the server closes it."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        return read_until_closed(sock, 6)[1]


def test_http_slow_body_gets_408_and_slow_or_missing_header_is_closed(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle,
                            receivers=receivers(http_keys={"read_timeout_s": 1, "idle_timeout_s": 1}))

    async def scenario(sidecar: Any) -> dict[str, Any]:
        port = sidecar.ports["http"]
        body, header, nothing = await asyncio.gather(
            asyncio.to_thread(trickle_body, port), asyncio.to_thread(trickle_header, port),
            asyncio.to_thread(silent, port))
        return {"body": body, "header": header, "nothing": nothing, "healthy": await healthy(sidecar),
                "metrics": sidecar.metrics.prometheus_text().decode()}

    out = run(config, scenario)
    answer, answered, closed = out["body"]
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"receivers.http.read_timeout_s" in answer and answered is not None and 0.9 < answered < 2
    assert closed is not None and closed < answered + LINGER_S + 1  # the rest of the body is not awaited
    assert out["header"] is not None and 0.9 < out["header"] < 3, out["header"]
    assert out["nothing"] is not None and 0.9 < out["nothing"] < 3, out["nothing"]
    assert out["healthy"] == HEALTHY
    assert prometheus_value(out["metrics"], "otel_logbert_requests_refused_total", protocol="http",
                            reason="read_timeout") == 1


def test_http_connections_past_the_bound_get_503_on_arrival(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=receivers(http_keys={"max_connections": 3}))

    async def scenario(sidecar: Any) -> dict[str, Any]:
        port = sidecar.ports["http"]
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        await asyncio.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port))
        refused = await asyncio.to_thread(read_until_closed, extra, 3)
        extra.close()
        held.pop().close()
        await asyncio.sleep(0.2)
        out = {"refused": refused, "room_again": await healthy(sidecar)}
        for sock in held:
            sock.close()
        out["metrics"] = sidecar.metrics.prometheus_text().decode()
        return out

    out = run(config, scenario)
    answer, closed_after = out["refused"]
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer, answer
    assert b"receivers.http.max_connections" in answer and closed_after is not None
    assert out["room_again"] == HEALTHY
    assert prometheus_value(out["metrics"], "otel_logbert_connections_refused_total", protocol="http") == 1


# --- a minimal HTTP/2 client ------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, HEADERS, RST_STREAM = 0x4, 0x1, 0x3
SETTINGS_MAX_CONCURRENT_STREAMS, REFUSED_STREAM = 0x3, 0x7


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def export_headers() -> bytes:
    """HPACK: each header a literal without indexing, new name, no Huffman (all shorter than 127)."""
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/" + LOGS_EXPORT_METHOD.strip("/").encode()),
              (b":authority", b"127.0.0.1"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    return b"".join(b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v for n, v in fields)


def read_frames(sock: socket.socket, seconds: float) -> list[tuple[int, int, bytes]]:
    """(type, stream, payload) of each frame the server sends within ``seconds``; (-1, 0, b"") at EOF."""
    sock.settimeout(0.1)
    buffer, frames = b"", []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            frames.append((-1, 0, b""))
            break
        buffer += chunk
        while len(buffer) >= 9 and len(buffer) >= 9 + int.from_bytes(buffer[:3], "big"):
            size = int.from_bytes(buffer[:3], "big")
            frames.append((buffer[3], int.from_bytes(buffer[5:9], "big") & 0x7FFFFFFF, buffer[9:9 + size]))
            buffer = buffer[9 + size:]
    return frames


def open_streams(port: int, streams: int) -> tuple[socket.socket, list[tuple[int, int, bytes]]]:
    """An HTTP/2 connection that opens ``streams`` Export calls and never sends their messages (a
    client trickling its request); returns the socket (still open) and the frames received."""
    sock = socket.create_connection(("127.0.0.1", port))
    frames: list[tuple[int, int, bytes]] = []
    try:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
        frames += read_frames(sock, 0.3)
        sock.sendall(frame(SETTINGS, 0x1, 0))  # ACK the server's settings: its limits apply from here
        for i in range(streams):
            sock.sendall(frame(HEADERS, 0x4, 1 + 2 * i, export_headers()))  # END_HEADERS, not END_STREAM
    except (BrokenPipeError, ConnectionResetError):
        frames.append((-1, 0, b""))
    frames += read_frames(sock, 0.7)
    return sock, frames


def settings_of(frames: list[tuple[int, int, bytes]]) -> dict[int, int]:
    out = {}
    for kind, _, payload in frames:
        if kind == SETTINGS:
            for i in range(0, len(payload), 6):
                out[int.from_bytes(payload[i:i + 2], "big")] = int.from_bytes(payload[i + 2:i + 6], "big")
    return out


def test_grpc_streams_per_connection_and_connections_are_bounded(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle,
                            receivers=receivers({"max_concurrent_streams": 2, "max_connections": 3}))

    async def scenario(sidecar: Any) -> dict[str, Any]:
        port = sidecar.ports["grpc"]
        first, frames = await asyncio.to_thread(open_streams, port, 3)
        others = [await asyncio.to_thread(open_streams, port, 0) for _ in range(3)]
        out = {"frames": frames, "others": [f for _, f in others]}
        for sock in [first] + [s for s, _ in others]:
            sock.close()
        await asyncio.sleep(0.3)
        out["healthy"] = await healthy(sidecar)
        return out

    out = run(config, scenario)
    frames = out["frames"]
    assert settings_of(frames)[SETTINGS_MAX_CONCURRENT_STREAMS] == 2
    resets = {stream: int.from_bytes(payload, "big") for kind, stream, payload in frames if kind == RST_STREAM}
    assert resets == {5: REFUSED_STREAM}, frames  # the third stream is refused; the first two are held
    second, third, fourth = out["others"]
    assert (-1, 0, b"") not in second + third  # connections two and three are served
    assert fourth[-1] == (-1, 0, b""), fourth  # the fourth is closed by the server
    assert out["healthy"] == HEALTHY


def test_grpc_concurrent_call_bound(otlp_sink: OtlpSink, rule_bundle: Path) -> None:
    config = sidecar_config(otlp_sink.endpoint, rule_bundle, receivers=receivers({"max_concurrent_rpcs": 1}))

    async def scenario(sidecar: Any) -> tuple[Any, Any]:
        held, _ = await asyncio.to_thread(open_streams, sidecar.ports["grpc"], 1)  # one call that never ends
        refused = await grpc_export(sidecar, request(1, "refused"))
        held.close()
        await asyncio.sleep(0.3)
        return refused, await grpc_export(sidecar, request(1, "taken"))

    refused, taken = run(config, scenario)
    assert refused[0] == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
    assert taken[0] == grpc.StatusCode.OK
    assert [r.body.string_value for _, _, r in otlp_sink.wait_for_records(1)] == ["taken 0"]
