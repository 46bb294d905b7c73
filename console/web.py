"""The console's HTTP side: five pages, their JSON, and the static files shipped in the package.

    GET /  /fleet  /models  /updates  /privacy  /cohorts    one HTML shell, the page named
    GET /api/<page>                                         that page's JSON (polled by the page)
    GET /static/console.js | console.css                    from console/static/ (no CDN)

Read-only: every other method is refused (405). It listens on 127.0.0.1 unless told otherwise,
and any other address needs TLS and an access token (`check_listen`): the pages name every device
of the fleet. With a token, each request must carry it as HTTP Basic auth (the browser asks once;
any user name) or `Authorization: Bearer`, compared in constant time.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import ssl
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from console.read_model import FleetReadModel
from protocol.errors import ConfigError

__all__ = ["PAGES", "ConsoleServer", "ListenConfig", "check_listen", "parse_listen"]

_log = logging.getLogger(__name__)

PAGES = ("fleet", "models", "updates", "privacy", "cohorts")
_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}
_MAX_LIMIT = 5000  # device rows per fleet refresh


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 8787
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token: str | None = None  # access token (required beyond loopback)


def parse_listen(text: str) -> tuple[str, int]:
    """ "HOST:PORT" (IPv6 in brackets) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"console: expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, treat it as reachable from outside


def check_listen(cfg: ListenConfig) -> None:
    """Refuse what would expose the fleet: a non-loopback address without TLS or a token."""
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("console: --tls-cert and --tls-key go together")
    if _is_loopback(cfg.host):
        return
    if cfg.tls_cert is None:
        raise ConfigError(
            f"console: listening on {cfg.host} needs TLS (--tls-cert, --tls-key); "
            "without them the console listens on 127.0.0.1 only"
        )
    if not cfg.token:
        raise ConfigError(
            f"console: listening on {cfg.host} needs an access token (--token-file): the pages "
            "name every device of the fleet"
        )


def _shell(page: str) -> bytes:
    links = "".join(f'<a href="/{p}"{" class=current" if p == page else ""}>{p}</a>' for p in PAGES)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>fleetlearn · {page}</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel=stylesheet href="/static/console.css"></head>'
        f'<body data-page="{page}"><header><b>fleetlearn</b><nav>{links}</nav>'
        "<span id=live>connecting…</span></header><main id=main></main>"
        '<script src="/static/console.js"></script></body></html>'
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    server: ConsoleServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("console: " + format, *args)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/fleet"
        if path.lstrip("/") in PAGES:
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", _shell(path.lstrip("/")))
        elif path.startswith("/api/") and path[5:] in PAGES:
            query = parse_qs(url.query)
            body = json.dumps(self.server.page_data(path[5:], query)).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        elif path.startswith("/static/") and path[8:] in _STATIC:
            data = resources.files("console").joinpath("static", path[8:]).read_bytes()
            self._send(HTTPStatus.OK, _STATIC[path[8:]], data)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")

    def _refuse_write(self) -> None:
        # the body is never read: close the connection, or its bytes would be parsed as the
        # next request on this keep-alive connection
        self.close_connection = True
        if self._authorized():
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"the console is read-only\n")

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_write  # noqa: N815 - http.server's names

    def _authorized(self) -> bool:
        token = self.server.listen.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        secret = ""
        if given.startswith("Bearer "):
            secret = given[7:]
        elif given.startswith("Basic "):
            try:
                secret = base64.b64decode(given[6:], validate=True).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                secret = ""
        if secret and hmac.compare_digest(secret.encode(), token.encode()):
            return True
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Basic realm="fleetlearn console"')
        self.send_header("Content-Length", "0")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        return False

    def _send(self, status: HTTPStatus, ctype: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class ConsoleServer(ThreadingHTTPServer):
    """`ConsoleServer(model, ListenConfig(...)).start()`; `.url`; `.stop()`."""

    daemon_threads = True

    def __init__(self, model: FleetReadModel, listen: ListenConfig) -> None:
        check_listen(listen)
        self.model = model
        self.listen = listen
        super().__init__((listen.host, listen.port), _Handler)
        if listen.tls_cert is not None and listen.tls_key is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(listen.tls_cert, listen.tls_key)
            except (OSError, ssl.SSLError) as exc:
                self.server_close()
                raise ConfigError(f"console: TLS certificate or key: {exc}") from exc
            # the handshake happens on the handler's thread, not in the accept loop
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.listen.tls_cert is not None else "http"
        return f"{scheme}://{self.listen.host}:{self.server_address[1]}"

    def page_data(self, page: str, query: dict[str, list[str]]) -> dict[str, Any]:
        if page == "fleet":
            limit = _int(query, "limit", 200)
            return self.model.fleet(query=query.get("q", [""])[0], limit=min(limit, _MAX_LIMIT))
        data: dict[str, Any] = getattr(self.model, page)()
        return data

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="console", daemon=True)
        self._thread.start()
        _log.info("console on %s", self.url)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return max(0, int(query.get(name, [str(default)])[0]))
    except ValueError:
        return default
