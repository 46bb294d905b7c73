"""The web console under a 1,000-device fleet: page load, the server's CPU for it, bytes/refresh.

Run from the repo root:  python benchmarks/console.py [--devices 1000] [--seconds 30] [--out PATH]

Everything is real except the devices: Mosquitto runs broker-config/mosquitto.dev.conf on
127.0.0.1, the server is `ServerApp` (FedBuff K=10, update log with fsync) with its console in
this process, and one device process publishes, for each of `--devices` devices, a retained
status (state, model version, eligibility reason) every `--status-every` s and an int8 update
every `--update-every` s through MQTT, as that many agents would.

1. page load  Debian's chromium (Playwright) opens /fleet `--loads` times; each load's time is
              navigation start to the first page drawn with data (console.js records it). Median
              and max. The page draws the summary over all devices and 200 device rows.
2. refresh    bytes of one /api/fleet answer (what each 2 s refresh of the fleet page fetches),
              and of the full table (limit 5,000), with the server's time to answer (median of 20).
3. CPU        the server process's CPU (user + system, percent of one core) over `--seconds`
              while the devices run, first with no page open, then with the fleet page open in
              chromium (its own process) refreshing every 2 s; the difference is the console's.

Writes benchmarks/results/console.json with the load average at start and end; above 1.5 the
numbers are marked as taken on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # import the repo's packages; don't let benchmarks/ shadow stdlib

import psutil  # noqa: E402

from benchmarks.live import server_app  # noqa: E402
from benchmarks.live_workers import FLEET  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
N_PARAMS = 9_610  # the demo's MLP


def devices(url: str, n: int, model_id: str, status_every: float, update_every: float,
            ready: Any, stop: Any) -> None:  # fmt: skip
    """One process: statuses and updates of `n` devices over one MQTT connection."""
    import numpy as np

    from protocol import codecs
    from protocol.messages import ClientUpdate, DeviceStatus, EncodedVector, encode_status
    from protocol.topics import status_topic, update_topic
    from protocol.update_header import encode_update_compact
    from transport import BrokerConfig, MqttLink

    link = MqttLink(BrokerConfig(url=url, client_id="bench-devices"))
    link.start()
    assert link.wait_connected(10)
    rng = np.random.default_rng(0)
    spec = {"name": "int8"}
    states = ("training", "idle", "uploading", "waiting_for_conditions")
    reasons = ("eligible", "battery low", "not charging", "cpu busy", "metered network")
    ids = [f"dev-{i:04d}" for i in range(n)]
    seq = dict.fromkeys(ids, 0)
    delta = (rng.standard_normal(N_PARAMS) * 1e-3).astype(np.float32)
    vector = EncodedVector(spec, codecs.encode(delta, spec), N_PARAMS)
    next_status = dict.fromkeys(ids, 0.0)
    next_update = {d: time.monotonic() + rng.uniform(0, update_every) for d in ids}
    ready.set()
    while not stop.is_set():
        now = time.monotonic()
        for i, d in enumerate(ids):
            if now >= next_status[d]:
                state = states[int(rng.integers(len(states)))]
                reason = reasons[int(rng.integers(len(reasons)))]
                battery = float(rng.uniform(20, 100))
                version = int(rng.integers(0, 5))
                online = i % 50 != 0
                status = DeviceStatus(d, online, state, version, reason, {"battery": battery},
                                      time.time())  # fmt: skip
                link.publish(status_topic(FLEET, d), encode_status(status), qos=0, retain=True)
                next_status[d] = now + status_every * rng.uniform(0.8, 1.2)
            if now >= next_update[d]:
                seq[d] += 1
                update = ClientUpdate(model_id, 0, d, seq[d], 32, 1, vector, {"loss": 0.5})
                link.publish(update_topic(FLEET, d), encode_update_compact(update), qos=1)
                next_update[d] = now + update_every
        time.sleep(0.05)
    link.stop()


def browser(url: str, loads: int, seconds: float, out: Any) -> None:
    """Chromium in its own process: `loads` page loads, then the page left open `seconds`."""
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {}
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1280, "height": 900})
        times = []
        for _ in range(loads):
            page.goto(url + "/fleet")
            deadline = time.monotonic() + 30
            while page.evaluate("document.body.dataset.firstRenderMs || ''") == "":
                assert time.monotonic() < deadline, "the fleet page never drew"
                time.sleep(0.01)
            times.append(float(page.evaluate("document.body.dataset.firstRenderMs")))
        result["load_ms"] = times
        result["devices_shown"] = page.locator("#devices-total").inner_text()
        result["rows_drawn"] = page.locator("#devices tbody tr").count()
        out.put(result)  # page loads done: the CPU phase starts now
        before = int(page.evaluate("Number(document.body.dataset.loaded)"))
        time.sleep(seconds)
        result["refreshes"] = int(page.evaluate("Number(document.body.dataset.loaded)")) - before
        if os.environ.get("CONSOLE_SCREENSHOT"):
            page.screenshot(path=os.environ["CONSOLE_SCREENSHOT"])
        b.close()
    out.put(result)


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _get(url: str) -> tuple[int, float]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as r:
        size = len(r.read())
    return size, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0, help="each CPU phase")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--status-every", type=float, default=10.0)
    parser.add_argument("--update-every", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/console.json")
    args = parser.parse_args()

    from console import ListenConfig, attach
    from fleet.embedded_broker import free_port
    from server.app import ServerApp
    from tests.support.mosquitto import running_mosquitto
    from transport import BrokerConfig, MqttLink

    load_start = [round(x, 2) for x in os.getloadavg()]
    ctx = mp.get_context("spawn")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_s, running_mosquitto(Path(tmp_s), "dev") as broker:
        tmp = Path(tmp_s)
        config, manifest = server_app(tmp, N_PARAMS, 2.0)
        link = MqttLink(BrokerConfig(url=broker.url(), client_id="fl-server"))
        app = ServerApp(config, link=link)
        console = attach(app, ListenConfig("127.0.0.1", free_port()))
        app.start()
        ready, stop = ctx.Event(), ctx.Event()
        device_proc = ctx.Process(
            target=devices,
            args=(broker.url(), args.devices, manifest.model_id, args.status_every,
                  args.update_every, ready, stop),
        )  # fmt: skip
        device_proc.start()
        try:
            assert ready.wait(60), "the device process did not connect"
            deadline = time.monotonic() + 120
            while console.model.fleet(limit=0)["devices_total"] < args.devices:
                assert time.monotonic() < deadline, "not every device's status arrived"
                time.sleep(0.5)
            me = psutil.Process()
            # CPU with no page open
            cpu0 = _cpu(me)
            time.sleep(args.seconds)
            idle_pct = 100 * (_cpu(me) - cpu0) / args.seconds
            # bytes and answer time per refresh
            api = console.url + "/api/fleet"
            page_answers = [_get(api) for _ in range(20)]
            full_answers = [_get(api + "?limit=5000") for _ in range(5)]
            # page loads, then CPU with the page open
            out = ctx.Queue()
            viewer = ctx.Process(target=browser, args=(console.url, args.loads, args.seconds, out))
            viewer.start()
            loads = out.get(timeout=300)
            cpu1 = _cpu(me)
            started = time.monotonic()
            final = out.get(timeout=args.seconds + 120)
            watched_pct = 100 * (_cpu(me) - cpu1) / (time.monotonic() - started)
            viewer.join(30)
            status = app.status()
        finally:
            stop.set()
            device_proc.join(30)
            console.stop()
            app.stop()
    load_end = [round(x, 2) for x in os.getloadavg()]
    busy = max(load_start[0], load_end[0]) > 1.5
    result = {
        "devices": args.devices,
        "status_every_s": args.status_every,
        "update_every_s": args.update_every,
        "devices_shown_on_page": int(loads["devices_shown"]),
        "rows_drawn": loads["rows_drawn"],
        "page_load_ms": {
            "median": round(statistics.median(loads["load_ms"]), 1),
            "max": round(max(loads["load_ms"]), 1),
            "each": [round(x, 1) for x in loads["load_ms"]],
            "what": "navigation start to the first fleet page drawn with data (chromium)",
        },
        "bytes_per_refresh": page_answers[0][0],
        "bytes_full_table": full_answers[0][0],
        "api_fleet_ms_median": round(1e3 * statistics.median(t for _, t in page_answers), 2),
        "api_fleet_full_table_ms_median": round(
            1e3 * statistics.median(t for _, t in full_answers), 2
        ),
        "server_cpu_pct_of_one_core": {
            "no_page_open": round(idle_pct, 2),
            "fleet_page_open": round(watched_pct, 2),
            "console_cost": round(watched_pct - idle_pct, 2),
            "refreshes_while_open": final["refreshes"],
            "seconds_each": args.seconds,
        },
        "server_accepted": status.counts.get("accepted", 0),
        "server_version": status.version,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "busy_machine": busy,
        "note": (
            "taken on a busy machine (load average above 1.5): not final numbers"
            if busy
            else "quiet machine"
        ),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "command": "python benchmarks/console.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
