"""TLS for the sidecar's ports and clients, in the terms of the Collector's ``configtls``.

Servers (``ServerTls``, the receivers): ``cert_file`` + ``key_file`` turn TLS on; ``client_ca_file``
requires every client to present a certificate signed by one of its CAs (mTLS); ``min_version``
1.2 or 1.3. The files are watched: at each new connection their status (mtime, size, inode) is
compared with what was loaded, and changed files are loaded for that connection and the following
ones, without a restart (cert-manager and Kubernetes Secret volumes replace files by an atomic
symlink swap, which this sees). A change that does not load (a key that does not match the new
certificate while the pair is half written) keeps the previous files and is logged.

- gRPC: ``grpc.dynamic_ssl_server_credentials`` asks ``_fetch`` for a new configuration at each
  handshake. grpcio offers no minimum-version setting: gRPC's core refuses anything below TLS 1.2
  by itself, so ``min_version: "1.3"`` on the gRPC receiver is refused at start.
- HTTP: an ``ssl.SSLContext`` whose ``sni_callback`` (called at every ClientHello, with or without
  SNI) swaps in a context built from the changed files.

Clients (``ClientTls``: forwarder, span and metrics exporters, Triton): TLS for an ``https://``
endpoint or when ``ca_file``/``cert_file`` is set, unless ``insecure``; ``ca_file`` replaces the
system roots; ``cert_file`` + ``key_file`` is the client certificate; ``server_name_override`` the
name the server's certificate must carry. Client files are watched too (``ClientTls.refresh``: their
status is compared at most every ``CLIENT_CHECK_INTERVAL_S``, from the client's own calls); changed
files are loaded, ``generation`` moves on and the client rebuilds its channel or session with them, so
a rotated client certificate or CA is used without a restart. Files that do not load keep the previous
ones (logged once per change).
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from otel_logbert.config import TlsClientConfig, TlsServerConfig
from otel_logbert.errors import UserError

log = logging.getLogger(__name__)

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

Signature = tuple[tuple[int, int, int] | None, ...]

CLIENT_CHECK_INTERVAL_S = 1.0
"""How often, at most, a client compares its TLS files' status with what it loaded."""


class WatchedFiles:
    """PEM files whose status tells when they changed. ``read()`` raises ``UserError`` naming the file."""

    def __init__(self, where: str, files: dict[str, str | None]) -> None:
        self.where = where
        self.files = {name: Path(path) for name, path in files.items() if path}
        self.loaded: Signature = ()

    def signature(self) -> Signature:
        out = []
        for path in self.files.values():
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def changed(self) -> bool:
        return self.signature() != self.loaded

    def read(self) -> dict[str, bytes]:
        out = {}
        for name, path in self.files.items():
            try:
                out[name] = path.read_bytes()
            except OSError as exc:
                raise UserError(f"{self.where}.{name} {path}: cannot read ({exc.strerror})") from None
        return out


class ServerTls:
    """TLS of one listening port (``where``: its config path, for messages). Raises ``UserError`` at
    construction when the files do not load."""

    def __init__(self, config: TlsServerConfig, where: str) -> None:
        assert config.cert_file and config.key_file
        self.config = config
        self.where = where
        self.mutual = config.client_ca_file is not None
        self._files = WatchedFiles(
            where, {"cert_file": config.cert_file, "key_file": config.key_file, "client_ca_file": config.client_ca_file}
        )
        self._listening: ssl.SSLContext | None = None
        self._context = self._load()  # also checks the files at start

    @classmethod
    def from_config(cls, config: TlsServerConfig, where: str) -> ServerTls | None:
        return cls(config, where) if config.cert_file else None

    # --- HTTP (ssl) ---------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """The context to listen with; it hands each handshake the latest files' context."""
        if self._listening is None:
            self._listening = self._context
            self._listening.sni_callback = self._on_client_hello
        return self._listening

    def _on_client_hello(self, connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        self._reload_if_changed()
        if self._context is not context:
            connection.context = self._context

    # --- gRPC ---------------------------------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials:
        if self.config.min_version != "1.2":
            raise UserError(f"{self.where}.min_version: grpcio cannot require TLS {self.config.min_version} "
                            "(gRPC refuses below 1.2 on its own); use 1.2 on the gRPC receiver")
        return grpc.dynamic_ssl_server_credentials(
            self._grpc_configuration(self._files.read()),
            self._fetch,
            require_client_authentication=self.mutual,
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: a new configuration when the files changed, else None."""
        if not self._reload_if_changed():
            return None
        try:
            return self._grpc_configuration(self._files.read())
        except UserError as exc:
            log.warning("TLS files changed but cannot be read; keeping the previous ones",
                        extra={"where": self.where, "error": str(exc)})
            return None

    def _grpc_configuration(self, pem: dict[str, bytes]) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(pem["key_file"], pem["cert_file"])], root_certificates=pem.get("client_ca_file")
        )

    # --- loading ------------------------------------------------------------------------------------

    def _reload_if_changed(self) -> bool:
        """Load the files again when they changed; whether a new set was loaded."""
        if not self._files.changed():
            return False
        try:
            self._context = self._load()
        except UserError as exc:
            log.warning("TLS files changed but do not load; keeping the previous ones",
                        extra={"where": self.where, "error": str(exc)})
            self._files.loaded = self._files.signature()  # do not retry on every handshake until they change
            return False
        log.info("TLS certificate reloaded", extra={"where": self.where})
        return True

    def _load(self) -> ssl.SSLContext:
        """A server context from the files as they are now (also validates them). Raises ``UserError``."""
        config, files = self.config, self._files
        signature = files.signature()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = _VERSIONS[config.min_version]
        try:
            context.load_cert_chain(config.cert_file, config.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise UserError(f"{self.where}: cannot load cert_file {config.cert_file} with key_file "
                            f"{config.key_file} ({_reason(exc)})") from None
        if config.client_ca_file:
            try:
                context.load_verify_locations(cafile=config.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise UserError(f"{self.where}.client_ca_file {config.client_ca_file}: cannot load "
                                f"({_reason(exc)})") from None
            context.verify_mode = ssl.CERT_REQUIRED
        files.loaded = signature
        if self._listening is not None:
            context.sni_callback = self._on_client_hello
        return context


class ClientTls:
    """TLS settings of one client of ``endpoint`` (``where``: the config path, for messages).

    ``enabled`` says whether the client speaks TLS. Raises ``UserError`` when a file does not load.
    ``refresh()`` reloads changed files (thread-safe); ``generation`` counts the loads after the first,
    so a client that built its channel at generation ``g`` rebuilds it once ``generation != g``.
    """

    def __init__(self, config: TlsClientConfig, endpoint: str, where: str,
                 check_interval_s: float = CLIENT_CHECK_INTERVAL_S) -> None:
        self.config = config
        self.where = where
        self.enabled = not config.insecure and (
            endpoint.startswith("https://") or bool(config.ca_file or config.cert_file)
        )
        self.server_name = config.server_name_override
        self.check_interval_s = check_interval_s
        self.generation = 0
        self._files = WatchedFiles(
            where, {"ca_file": config.ca_file, "cert_file": config.cert_file, "key_file": config.key_file}
        )
        self._pem: dict[str, bytes] = {}
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._next_check = 0.0
        if self.enabled:
            self._load()  # validates the files now

    @property
    def ca_file(self) -> str | None:
        return self.config.ca_file

    def refresh(self) -> bool:
        """Reload the files when they changed (checked at most every ``check_interval_s``); whether a
        new set was loaded. Never raises: files that do not load keep the previous ones."""
        if not self.enabled or not self._files.files:
            return False
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return False
            self._next_check = now + self.check_interval_s
            if not self._files.changed():
                return False
            try:
                self._load()
            except UserError as exc:
                log.warning("client TLS files changed but do not load; keeping the previous ones",
                            extra={"where": self.where, "error": str(exc)})
                self._files.loaded = self._files.signature()  # not again until they change
                return False
            self.generation += 1
        path = self.config.cert_file or self.config.ca_file
        log.info(f"client certificate reloaded: {path}", extra={"where": self.where, "path": str(path)})
        return True

    def grpc_credentials(self) -> grpc.ChannelCredentials:
        pem = self._pem
        return grpc.ssl_channel_credentials(
            root_certificates=pem.get("ca_file"),
            private_key=pem.get("key_file"),
            certificate_chain=pem.get("cert_file"),
        )

    def grpc_options(self) -> list[tuple[str, str]]:
        """Channel options: the target name override, when set."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.enabled and self.server_name else []

    def ssl_context(self) -> ssl.SSLContext | None:
        """For HTTP clients (aiohttp): the context of the latest files, or None without TLS."""
        return self._ssl

    def _load(self) -> None:
        """Read the PEM files and build the SSL context from them as they are now. Raises ``UserError``."""
        signature = self._files.signature()
        pem = self._files.read()
        config = self.config
        try:
            context = ssl.create_default_context(cadata=pem["ca_file"].decode("ascii", "replace")
                                                 if "ca_file" in pem else None)
            if config.cert_file and config.key_file:
                context.load_cert_chain(config.cert_file, config.key_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise UserError(f"{self.where}: cannot load the TLS files ({_reason(exc)})") from None
        self._pem, self._ssl = pem, context
        self._files.loaded = signature


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def sdk_exporter_options(tls: ClientTls | None, endpoint: str, protocol: str) -> dict[str, Any]:
    """Keyword arguments for opentelemetry-sdk's OTLP exporters (spans, metrics) to ``endpoint`` with
    ``tls``: gRPC takes credentials and channel options, HTTP the file paths. The HTTP exporters have
    no server-name setting: ``server_name_override`` raises ``UserError`` there. (requests, under the
    HTTP exporters, lets a REQUESTS_CA_BUNDLE environment variable win over ``ca_file``.)"""
    secure = tls is not None and tls.enabled
    if protocol == "grpc":
        if not secure:
            return {"insecure": not endpoint.startswith("https://")}
        assert tls is not None
        return {"insecure": False, "credentials": tls.grpc_credentials(),
                "channel_options": tuple(tls.grpc_options()) or None}
    if not secure:
        return {}
    assert tls is not None
    if tls.server_name:
        raise UserError(f"{tls.where}.server_name_override: not supported by opentelemetry-sdk's OTLP/HTTP "
                        "exporters (use protocol grpc, or a certificate for the endpoint's host name)")
    return {"certificate_file": tls.ca_file, "client_certificate_file": tls.config.cert_file,
            "client_key_file": tls.config.key_file}
