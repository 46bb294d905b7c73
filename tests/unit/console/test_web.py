"""The console's HTTP side: it refuses to listen beyond loopback without TLS and a token, it is
read-only, a configured token is required on every request, and TLS really is TLS."""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from console.web import ConsoleServer, ListenConfig, check_listen, parse_listen
from fleetlearn.cli import main
from protocol.errors import ConfigError

TOKEN = "s3cret-token-of-the-operator"


class _Model:
    """The read model's page methods, with fixed numbers."""

    def fleet(self, *, query: str = "", limit: int = 200) -> dict[str, Any]:
        return {"devices_total": 1, "query": query, "limit": limit}

    def models(self) -> dict[str, Any]:
        return {"releases": []}


def _serve(**kw: Any) -> ConsoleServer:
    server = ConsoleServer(_Model(), ListenConfig("127.0.0.1", 0, **kw))  # type: ignore[arg-type]
    server.start()
    return server


def _get(url: str, *, method: str = "GET", auth: str | None = None,
         context: ssl.SSLContext | None = None) -> tuple[int, bytes]:  # fmt: skip
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_beyond_loopback_needs_tls_and_a_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"0\.0\.0\.0 needs TLS"):
        check_listen(ListenConfig("0.0.0.0", 8787))
    with pytest.raises(ConfigError, match="needs TLS"):
        check_listen(ListenConfig("console.example.org", 8787))
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    with pytest.raises(ConfigError, match="access token"):
        check_listen(ListenConfig("0.0.0.0", 8787, cert, key))
    with pytest.raises(ConfigError, match="go together"):
        check_listen(ListenConfig("127.0.0.1", 8787, cert, None))
    check_listen(ListenConfig("0.0.0.0", 8787, cert, key, TOKEN))  # all three: allowed
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        check_listen(ListenConfig(host, 8787))


def test_the_command_refuses_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the config file does not even exist: the address is refused first, with a clear error
    rc = main(["console", "--config", str(tmp_path / "none.toml"), "--listen", "0.0.0.0:8787"])
    assert rc == 2
    assert "0.0.0.0 needs TLS" in capsys.readouterr().err


def test_pages_json_and_static_files_and_read_only() -> None:
    server = _serve()
    try:
        status, body = _get(server.url + "/fleet")
        assert status == 200 and b'data-page="fleet"' in body and b"/static/console.js" in body
        assert b"http://" not in body and b"https://" not in body  # nothing from a network
        status, body = _get(server.url + "/api/fleet?q=dev&limit=99999")
        assert json.loads(body) == {"devices_total": 1, "query": "dev", "limit": 5000}
        status, body = _get(server.url + "/static/console.js")
        assert status == 200 and b"fetch(" in body
        assert _get(server.url + "/static/../web.py")[0] == 404
        assert _get(server.url + "/api/secrets")[0] == 404
        assert _get(server.url + "/api/fleet", method="POST")[0] == 405
    finally:
        server.stop()


def test_a_refused_write_with_a_body_leaves_the_connection_clean() -> None:
    """Found in the browser test: the unread body of a refused POST was parsed as the next
    request on the keep-alive connection (501 "Unsupported method ('{}POST')")."""
    server = _serve()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
        for _ in range(2):
            conn.request("POST", "/api/fleet", body=b"{}")
            response = conn.getresponse()
            assert response.status == 405, response.reason
            response.read()
        conn.request("GET", "/api/models")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        server.stop()


def test_a_configured_token_is_required() -> None:
    server = _serve(token=TOKEN)
    try:
        assert _get(server.url + "/fleet")[0] == 401
        assert _get(server.url + "/api/fleet", auth="Bearer wrong")[0] == 401
        bad = base64.b64encode(b"operator:wrong").decode()
        assert _get(server.url + "/api/fleet", auth=f"Basic {bad}")[0] == 401
        good = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
        assert _get(server.url + "/api/fleet", auth=f"Basic {good}")[0] == 200
        assert _get(server.url + "/api/fleet", auth=f"Bearer {TOKEN}")[0] == 200
        assert _get(server.url + "/api/fleet", method="POST")[0] == 401  # who, before what
    finally:
        server.stop()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_serves_https_only(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = _serve(tls_cert=cert, tls_key=key)
    try:
        assert server.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        assert _get(server.url + "/api/models", context=context) == (200, b'{"releases": []}')
        plain = server.url.replace("https://", "http://")
        with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(plain + "/api/models", timeout=5)
    finally:
        server.stop()


def test_a_bad_certificate_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="TLS certificate or key"):
        ConsoleServer(_Model(), ListenConfig("127.0.0.1", 0, tmp_path / "c.pem",  # type: ignore[arg-type]
                                             tmp_path / "c.pem"))  # fmt: skip


@pytest.mark.parametrize("text", ["8787", ":8787", "host:", "host:port", "127.0.0.1:70000"])
def test_a_bad_listen_address_is_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_listen(text)


def test_listen_addresses_parse() -> None:
    assert parse_listen("127.0.0.1:8787") == ("127.0.0.1", 8787)
    assert parse_listen("[::1]:0") == ("::1", 0)


def test_a_short_token_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text("short\n")
    argv = ["console", "--config", str(tmp_path / "none.toml"), "--token-file",
            str(tmp_path / "token")]  # fmt: skip
    assert main(argv) == 2
    assert "at least 16 characters" in capsys.readouterr().err
