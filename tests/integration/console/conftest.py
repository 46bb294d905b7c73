"""One running demo fleet for the console's browser tests and the Prometheus test: real agents
(ONNX Runtime), the real server with its console and metrics, a real Mosquitto on 127.0.0.1.

The demo runs in a thread of the test process so that the tests can hold the server itself
(`app.status()` is the ground truth the pages are checked against)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fleet.demo import run as demo_run
from fleet.demo.run import DemoOptions, DemoResult
from fleet.demo.server_part import DemoServer, start_server
from fleet.embedded_broker import free_port
from server.app import ServerApp
from tests.support.mosquitto import mosquitto_dev, running_mosquitto  # noqa: F401  (fixture)

DEVICES = 6
EPSILON_BUDGET = 50.0
DEMO_SECONDS = 180.0  # long enough for both test files; the fixture waits for the end


def require_tool(path: str, what: str) -> str:
    """The path of a Debian-packaged tool, or a skip that says how to get it. `./run test`
    installs them when it can (root with apt-get) and then sets FLEETLEARN_REQUIRE_TOOLS=1:
    from there on a missing tool is a failure, not a skip."""
    found = shutil.which(path) or (path if os.access(path, os.X_OK) else None)
    if found is None:
        message = f"{what} is not installed ({path}); run ./run test as root or apt-get install it"
        if os.environ.get("FLEETLEARN_REQUIRE_TOOLS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class DemoFleet:
    app: ServerApp
    console_url: str
    metrics_address: str  # HOST:PORT of the server's Prometheus endpoint
    broker_url: str
    thread: threading.Thread


@pytest.fixture(scope="package")
def demo_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoFleet]:
    tmp = tmp_path_factory.mktemp("console-demo")
    os.environ.setdefault("FLEETLEARN_CACHE", str(tmp_path_factory.mktemp("fleetlearn-cache")))
    servers: list[DemoServer] = []
    original = start_server

    def capture(*args: object, **kwargs: object) -> DemoServer:
        server = original(*args, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    console_port, metrics_port = free_port(), free_port()
    with running_mosquitto(tmp, "dev", fleet="demo") as broker:
        options = DemoOptions(
            devices=DEVICES,
            strategy="fedbuff",
            broker=broker.url(),
            duration_s=DEMO_SECONDS,
            target_accuracy=0.999,  # run for the whole duration
            out=tmp / "out",
            secure_aggregation=True,
            privacy={
                "epsilon": EPSILON_BUDGET,
                "delta": 1e-3,
                "clip_norm": 1.0,
                "planned_flushes": 400,
                "accountant": "rdp",
            },
            console=f"127.0.0.1:{console_port}",
            metrics=f"127.0.0.1:{metrics_port}",
        )
        results: list[DemoResult | BaseException] = []

        def run() -> None:
            try:
                results.append(demo_run.run_demo(options))
            except BaseException as exc:
                results.append(exc)

        vars(demo_run)["start_server"] = capture  # the demo's server, held by the tests
        thread = threading.Thread(target=run, name="demo", daemon=True)
        try:
            thread.start()
            deadline = time.monotonic() + 240  # the first run exports the model
            while not servers:
                assert not results, results
                assert time.monotonic() < deadline, "the demo's server never started"
                time.sleep(0.2)
        finally:
            vars(demo_run)["start_server"] = original
        app = servers[0].app
        console_url = f"http://127.0.0.1:{console_port}"
        yield DemoFleet(app, console_url, f"127.0.0.1:{metrics_port}", broker.url(), thread)
        thread.join(DEMO_SECONDS + 60)
        assert not thread.is_alive(), "the demo did not finish"
        assert results and not isinstance(results[0], BaseException), results


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


__all__ = ["DEVICES", "EPSILON_BUDGET", "DemoFleet", "require_tool", "wait_for"]
