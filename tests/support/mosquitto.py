"""A real Mosquitto for tests: free 127.0.0.1 ports, a generated config, stopped by PID.

    with running_mosquitto(tmp_path) as broker:                 # dev: plain, anonymous
        cfg = BrokerConfig(broker.url(), client_id="x")
    with running_mosquitto(tmp_path, config="prod", devices=["dev-a"]) as broker:
        cfg = broker.client_config("dev-a")                    # TLS + client cert (CN = dev-a)
        srv = broker.server_config()                           # the aggregator ("fleet-server")

"prod" runs the COMMITTED broker-config/mosquitto.prod.conf, with only its ports, file paths and
log destination rewritten (`localize_conf`), and PKI, passwords and the dynamic-security file
made by fleetlearn's own provisioning code (the plugin reads it at start: `reload()` restarts).
As root, Mosquitto would drop to user `mosquitto`, which cannot read files under pytest's 0700
tmp dirs: the test config says `user root` instead (tests only).

Pytest fixtures: `mosquitto_dev`, `mosquitto_prod` (function scope). Import them into a
conftest.py (`from tests.support.mosquitto import mosquitto_dev  # noqa: F401`) or call
`running_mosquitto` directly. Without a `mosquitto` binary the fixtures skip, except in CI
(env CI=true), where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from fleet.embedded_broker import free_port
from fleetlearn.provision import CaFiles, init_ca, issue_client_cert, issue_server_cert, revoke
from fleetlearn.provision_acl import DEFAULT_SERVER_USER
from fleetlearn.provision_dynsec import passwd_hashes, render_dynsec
from fleetlearn.provision_enrol import set_passwords
from transport import BrokerConfig

__all__ = [
    "MosquittoHandle",
    "find_mosquitto",
    "localize_conf",
    "mosquitto_dev",
    "mosquitto_prod",
    "require_mosquitto",
    "running_mosquitto",
]

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "broker-config"
_PROD_FILES = "/etc/mosquitto/fleetlearn/"


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


def require_mosquitto() -> str:
    """The binary's path; skips the test without it, but FAILS in CI (where .ci/run installs it)."""
    exe = find_mosquitto()
    if exe is None:
        msg = "mosquitto not found on PATH or in /usr/sbin (apt-get install mosquitto)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{msg}; CI must install it (.ci/run)")
        pytest.skip(msg)
    return exe


def localize_conf(
    text: str, *, ports: Mapping[int, int], files_dir: Path, data_dir: Path, host: str = "127.0.0.1"
) -> str:
    """Rewrite a committed config for a test: listener ports -> free ports bound to `host`,
    /etc/mosquitto/fleetlearn/ -> files_dir, persistence -> data_dir, log -> stderr."""
    out: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        key, _, value = stripped.partition(" ")
        if not stripped or stripped.startswith("#"):
            out.append(line)
        elif key == "listener":
            out.append(f"listener {ports[int(value.split()[0])]} {host}")
        elif key == "user":
            out.append("user root" if os.geteuid() == 0 else line)
        elif key == "log_dest":
            if "log_dest stderr" not in out:
                out.append("log_dest stderr")
        elif key == "persistence_location":
            out.append(f"persistence_location {data_dir}/")
        else:
            out.append(line.replace(_PROD_FILES, f"{files_dir}/"))
    result = "\n".join(out) + "\n"
    leftover = [ln for ln in result.splitlines() if not ln.startswith("#") and "/etc/" in ln]
    if leftover:
        raise ValueError(f"config still names system paths: {leftover}")
    return result


@dataclass
class MosquittoHandle:
    exe: str
    workdir: Path
    config_path: Path
    log_path: Path
    host: str = "127.0.0.1"
    port: int | None = None  # plain listener (dev)
    tls_port: int | None = None  # TLS + client certificate (prod)
    password_port: int | None = None  # TLS + username/password (prod)
    pki: Path | None = None  # provisioning root (prod): ca/, broker/, devices/
    fleet: str = "test"
    passwords: dict[str, str] = field(default_factory=dict)
    server_users: list[str] = field(default_factory=list)  # aggregator identities (prod)
    device_names: list[str] = field(default_factory=list)  # enrolled devices (prod)
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("mosquitto is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def url(self, listener: Literal["plain", "cert", "password"] = "plain") -> str:
        port = {"plain": self.port, "cert": self.tls_port, "password": self.password_port}[listener]
        if port is None:
            raise ValueError(f"this broker has no {listener} listener")
        return f"{'mqtt' if listener == 'plain' else 'mqtts'}://{self.host}:{port}"

    # ---- lifecycle
    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            raise RuntimeError("already running")
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [self.exe, "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ports = [p for p in (self.port, self.tls_port, self.password_port) if p is not None]
        deadline = time.monotonic() + timeout
        while not all(_accepts(self.host, p) for p in ports):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not come up; its log:\n{self.log_text()}")
            time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (Mosquitto saves its persistence file), then SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: a crash, no persistence save."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None

    def restart(self, down_for: float = 0.0) -> None:
        """Stop and start on the same ports (outage tests)."""
        self.stop()
        time.sleep(down_for)
        self.start()

    def reload(self) -> None:
        """Apply enrolments: prod rewrites dynamic-security.json and restarts (the plugin reads
        it at start-up only); dev gets SIGHUP."""
        if self.pki is not None:
            self.write_security()
            self.restart()
            return
        os.kill(self.pid, signal.SIGHUP)
        time.sleep(0.2)

    def write_security(self) -> None:
        """dynamic-security.json for every enrolled identity, from fleetlearn's generator."""
        pki = self._need_pki()
        broker = pki / "broker"
        doc = render_dynsec(
            [self.fleet],
            self.server_users,
            self.device_names,
            passwd_hashes(broker / "passwd"),
        )
        (broker / "dynamic-security.json").write_text(doc)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- prod helpers: enrol clients and build their configs
    def _need_pki(self) -> Path:
        if self.pki is None:
            raise ValueError("only a 'prod' broker has PKI")
        return self.pki

    def enrol(self, name: str, *, cert: bool = True, password: bool = False) -> None:
        """A device identity; call reload() if the broker is already running."""
        pki = self._need_pki()
        if name not in self.device_names and name not in self.server_users:
            self.device_names.append(name)
        if cert:
            issue_client_cert(CaFiles(pki / "ca"), name, pki / "clients" / name, stem="client")
        if password:
            secret = f"pw-{name}-{os.urandom(6).hex()}"
            set_passwords(pki / "broker" / "passwd", {name: secret})
            self.passwords[name] = secret

    def enrol_many(self, names: Sequence[str]) -> None:
        """Password entries for many clients in one mosquitto_passwd run (no reload needed
        before start; call reload() if the broker is already running)."""
        pki = self._need_pki()
        entries = {n: f"pw-{n}-{os.urandom(6).hex()}" for n in names}
        set_passwords(pki / "broker" / "passwd", entries)
        self.passwords.update(entries)
        for name in names:
            if name not in self.device_names and name not in self.server_users:
                self.device_names.append(name)
        self.write_security()

    def revoke(self, name: str) -> None:
        """Revoke `name`'s certificates (new CRL copied to the broker) and restart to load it."""
        pki = self._need_pki()
        revoke(CaFiles(pki / "ca"), name)
        shutil.copyfile(pki / "ca" / "crl.pem", pki / "broker" / "crl.pem")
        self.restart()

    def client_config(
        self, name: str, *, listener: Literal["cert", "password"] = "cert", **overrides: Any
    ) -> BrokerConfig:
        pki = self._need_pki()
        kwargs: dict[str, Any] = {
            "url": self.url(listener),
            "client_id": name,
            "ca_file": pki / "ca" / "ca.crt",
            "backoff_initial": 0.1,
            "backoff_max": 1.0,
        }
        if listener == "cert":
            kwargs["cert_file"] = pki / "clients" / name / "client.crt"
            kwargs["key_file"] = pki / "clients" / name / "client.key"
        else:
            kwargs["username"] = name
            kwargs["password"] = self.passwords.get(name)
        kwargs.update(overrides)
        return BrokerConfig(**kwargs)

    def server_config(self, name: str = DEFAULT_SERVER_USER, **overrides: Any) -> BrokerConfig:
        """An aggregator identity's config (`name` must be one of the broker's server_users)."""
        return self.client_config(name, **overrides)


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _provision_prod(
    pki: Path, fleet: str, devices: Sequence[str], server_users: Sequence[str]
) -> None:
    ca = init_ca(pki / "ca", fleet)
    broker = pki / "broker"
    issue_server_cert(ca, broker, ["127.0.0.1", "localhost"])
    shutil.copyfile(ca.cert, broker / "ca.crt")
    shutil.copyfile(ca.crl, broker / "crl.pem")
    for user in server_users:
        issue_client_cert(ca, user, pki / "clients" / user, "client")
    for device in devices:
        issue_client_cert(ca, device, pki / "clients" / device, stem="client")


@contextmanager
def running_mosquitto(
    tmp_path: Path,
    config: Literal["dev", "prod"] = "dev",
    *,
    fleet: str = "test",
    devices: Sequence[str] = (),
    password_devices: Sequence[str] = (),
    extra_conf: str = "",
    server_users: Sequence[str] = (DEFAULT_SERVER_USER,),
) -> Iterator[MosquittoHandle]:
    """Start Mosquitto from broker-config/mosquitto.<config>.conf; stop it by PID on exit.

    prod: `devices` get client certificates (CN = id); `password_devices` password entries;
    each aggregator in `server_users` (default: `fleet-server`) gets both and the ACL's server
    rights; several of them share updates through a `$share/<group>/...` subscription.
    `extra_conf` lines are appended (e.g. a lower max_queued_messages for a drop test).
    """
    exe = require_mosquitto()
    work = tmp_path / f"mosquitto-{config}-{os.urandom(3).hex()}"
    work.mkdir(parents=True)
    handle = MosquittoHandle(
        exe, work, work / "mosquitto.conf", work / "mosquitto.log", fleet=fleet
    )
    ports: dict[int, int] = {}
    files_dir = work
    if config == "dev":
        handle.port = ports[1883] = free_port()
    else:
        handle.pki = work / "pki"
        handle.server_users = list(server_users)
        handle.device_names = [*devices, *(d for d in password_devices if d not in devices)]
        _provision_prod(handle.pki, fleet, devices, server_users)
        handle.enrol_many([*server_users, *password_devices])
        handle.tls_port = ports[8883] = free_port()
        handle.password_port = ports[8884] = free_port()
        files_dir = handle.pki / "broker"
    (work / "data").mkdir()
    text = (CONF_DIR / f"mosquitto.{config}.conf").read_text()
    conf = localize_conf(text, ports=ports, files_dir=files_dir, data_dir=work / "data")
    handle.config_path.write_text(conf + extra_conf)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def mosquitto_dev(tmp_path: Path) -> Iterator[MosquittoHandle]:
    with running_mosquitto(tmp_path, "dev") as broker:
        yield broker


@pytest.fixture
def mosquitto_prod(tmp_path: Path) -> Iterator[MosquittoHandle]:
    """Production config; devices dev-a, dev-b (certificates) and dev-p (password)."""
    with running_mosquitto(
        tmp_path, "prod", devices=["dev-a", "dev-b"], password_devices=["dev-p"]
    ) as broker:
        yield broker
