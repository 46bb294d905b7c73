"""The console in a real browser (Debian's chromium, driven by Playwright) against a running demo
fleet: each page loads, its numbers agree with the server's own status, charts have points, and
the console refuses writes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.console.conftest import (
    DEVICES,
    EPSILON_BUDGET,
    DemoFleet,
    require_tool,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install fleetlearn[dev]")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = require_tool("/usr/bin/chromium", "Debian's chromium")
    with playwright_api.sync_playwright() as p:
        # --no-sandbox: CI runs as root, where chromium's sandbox cannot start
        launched = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def page(browser: Any, demo_fleet: DemoFleet) -> Any:
    return browser.new_page()


def _loads(page: Any) -> int:
    """How many refreshes the page has drawn (console.js counts them on <body>)."""
    return int(page.evaluate("Number(document.body.dataset.loaded || 0)"))


def _open(page: Any, fleet: DemoFleet, name: str) -> None:
    page.goto(f"{fleet.console_url}/{name}")
    # polled from here: the console's CSP (rightly) refuses the eval wait_for_function needs
    wait_for(lambda: _loads(page) >= 1, 15, f"the {name} page")


def _number(page: Any, selector: str) -> float:
    return float(page.locator(selector).inner_text().replace("%", ""))


def _between(page: Any, selector: str, read: Any) -> None:
    loaded = _loads(page)
    before = read()
    wait_for(lambda: _loads(page) > loaded + 1, 15, "a refresh that began after `before`")
    shown = _number(page, selector)
    after = read()
    assert before <= shown <= after, (selector, before, shown, after)


def test_fleet_page_shows_every_device_and_the_servers_numbers(
    page: Any, demo_fleet: DemoFleet
) -> None:
    app = demo_fleet.app
    wait_for(lambda: app.status().version >= 2, 120, "two versions")
    _open(page, demo_fleet, "fleet")
    wait_for(lambda: _rows(page) == DEVICES, 30, "a status from every device")
    assert _number(page, "#devices-total") == DEVICES
    by_state = _table(page, "#by-state")
    assert sum(by_state.values()) == DEVICES
    by_version = _table(page, "#by-version")
    assert sum(by_version.values()) == DEVICES
    _between(page, "#committed-version", lambda: app.status().version)
    _between(page, "#accepted-total", lambda: app.status().counts["accepted"])
    ids = page.locator("#devices tbody tr td:first-child").all_inner_texts()
    assert ids == [f"dev-{i:03d}" for i in range(DEVICES)]
    page.fill("#filter", "dev-002")
    page.press("#filter", "Enter")
    wait_for(lambda: _rows(page) == 1, 10, "the filter")


def test_models_page_charts_the_versions(page: Any, demo_fleet: DemoFleet) -> None:
    app = demo_fleet.app
    wait_for(lambda: _published_evaluations(demo_fleet) >= 3, 120, "three evaluated versions")
    _open(page, demo_fleet, "models")
    points = page.locator("#accuracy-chart circle.point")
    wait_for(lambda: points.count() >= 6, 15, "points for serving and iterate")
    ys = [float(y) for y in points.evaluate_all("ps => ps.map(p => p.dataset.y)")]
    assert all(0.0 <= y <= 1.0 for y in ys)
    last = app.status().last_serving_eval  # evaluated, so published before the next refresh
    assert last is not None
    loaded = _loads(page)
    wait_for(lambda: _loads(page) > loaded + 1, 15, "a refresh")
    versions = [int(v) for v in page.locator("#releases tbody tr td:first-child").all_inner_texts()]
    assert versions == sorted(versions, reverse=True)
    assert versions[0] <= app.status().published_version
    rows = [r.split("\t") for r in page.locator("#releases tbody tr").all_inner_texts()]
    row = next(r for r in rows if r[0] == str(last.version))  # the server's last evaluation
    assert row[2] == f"{100 * last.accuracy:.1f}%"  # serving accuracy, as the server measured
    _between(page, "#published-version", lambda: app.status().published_version)


def test_updates_page_counts_by_reason(page: Any, demo_fleet: DemoFleet) -> None:
    app = demo_fleet.app
    _open(page, demo_fleet, "updates")
    _between(page, "#accepted-total", lambda: app.status().counts["accepted"])
    wait_for(lambda: page.locator("#flow-chart circle.point").count() >= 1, 15, "flow points")
    devices = page.locator("#update-devices tbody tr td:first-child").all_inner_texts()
    assert devices and all(d.startswith("dev-") for d in devices)


def test_privacy_page_shows_the_accountant(page: Any, demo_fleet: DemoFleet) -> None:
    app = demo_fleet.app
    wait_for(lambda: (app.status().privacy or _NoDP).flushes >= 2, 120, "two noised releases")
    _open(page, demo_fleet, "privacy")
    assert _number(page, "#epsilon-budget") == EPSILON_BUDGET
    spent = lambda: round((app.status().privacy or _NoDP).epsilon_spent, 3)  # noqa: E731
    _between(page, "#epsilon-spent", spent)
    wait_for(lambda: page.locator("#epsilon-chart circle.point").count() >= 4, 15, "eps points")


def test_cohorts_page_counts_unmasked_cohorts(page: Any, demo_fleet: DemoFleet) -> None:
    secagg = demo_fleet.app.secagg
    assert secagg is not None
    wait_for(lambda: secagg.completed >= 1, 120, "an unmasked cohort")
    _open(page, demo_fleet, "cohorts")
    _between(page, "#cohorts-completed", lambda: secagg.completed)
    assert page.locator("#cohorts tbody tr").count() >= 1


def test_the_console_is_read_only(page: Any, demo_fleet: DemoFleet) -> None:
    for name in ("fleet", "models"):
        response = page.request.post(f"{demo_fleet.console_url}/api/{name}", data="{}")
        assert response.status == 405
    body = page.request.get(f"{demo_fleet.console_url}/api/fleet").body()
    assert json.loads(body)["devices_total"] == DEVICES


class _NoDP:
    flushes = 0
    epsilon_spent = 0.0


def _rows(page: Any) -> int:
    return int(page.locator("#devices tbody tr").count())


def _table(page: Any, selector: str) -> dict[str, int]:
    rows = page.locator(f"{selector} tbody tr").all_inner_texts()
    return {r.split("\t")[0]: int(r.split("\t")[1]) for r in rows}


def _published_evaluations(fleet: DemoFleet) -> int:
    status = fleet.app.status()
    return 0 if status.last_eval is None else status.last_eval.version


def test_what_a_device_reports_is_shown_as_text_never_run(browser: Any) -> None:
    """A device controls its status's state and reason strings: markup in them is shown
    literally, and no script of theirs runs (the pages build text nodes; the CSP forbids inline
    script besides)."""
    from console.read_model import FleetReadModel
    from console.web import ConsoleServer, ListenConfig
    from protocol.messages import DeviceStatus, encode_status
    from protocol.topics import status_topic
    from server.app import ServerStatus

    evil = "<img src=x onerror=\"document.title='pwned'\">"
    model = FleetReadModel("f", lambda: ServerStatus(0, 0, {"accepted": 0}, None, 0))
    status = DeviceStatus("dev-x", True, f"idle{evil}", 0, f"because{evil}", {}, time.time())
    model.device_message(status_topic("f", "dev-x"), encode_status(status), 0.0)
    server = ConsoleServer(model, ListenConfig("127.0.0.1", 0))
    server.start()
    page = browser.new_page()
    try:
        page.goto(server.url + "/fleet")
        wait_for(lambda: _loads(page) >= 1, 15, "the fleet page")
        cells = page.locator("#devices tbody tr td").all_inner_texts()
        assert f"idle{evil}" in cells and f"because{evil}" in cells
        assert page.locator("main img").count() == 0
        assert page.title() != "pwned"
    finally:
        server.stop()
