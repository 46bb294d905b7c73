from __future__ import annotations

from pathlib import Path

import pytest

from fleetlearn.provision_acl import render_acl
from protocol.errors import ProtocolError

REPO = Path(__file__).resolve().parents[3]


def _rules(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def test_acl_by_hand() -> None:
    assert _rules(render_acl(["home"], ["agg"])) == [
        "pattern write fl/home/device/%u/update",
        "pattern write fl/home/device/%u/status",
        "pattern write fl/home/device/%u/secagg_up",
        "pattern read fl/home/device/%u/ack",
        "pattern read fl/home/device/%u/secagg_down",
        "pattern read fl/home/model/+/global",
        "pattern read fl/home/model/+/delta",  # read only: a device never writes a model
        "pattern read fl/home/model/+/serving",
        "pattern read fl/home/model/+/serving_delta",
        "user agg",
        "topic readwrite fl/home/device/+/update",  # write: only to clear retained (issue 15)
        "topic readwrite fl/home/device/+/status",
        "topic write fl/home/device/+/ack",
        "topic read fl/home/device/+/secagg_up",
        "topic write fl/home/device/+/secagg_down",
        "topic readwrite fl/home/model/+/global",
        "topic readwrite fl/home/model/+/delta",
        "topic readwrite fl/home/model/+/serving",
        "topic readwrite fl/home/model/+/serving_delta",
    ]


def test_no_topic_line_before_the_first_user_line() -> None:
    """Mosquitto applies `topic` lines before any `user` line to anonymous clients only."""
    rules = _rules(render_acl(["a", "b"], ["s1", "s2"]))
    first_user = next(i for i, r in enumerate(rules) if r.startswith("user "))
    assert not any(r.startswith("topic ") for r in rules[:first_user])
    assert not any(r.startswith("pattern ") for r in rules[first_user:])


def test_devices_never_get_wildcard_write() -> None:
    for rule in _rules(render_acl(["home"])):
        if rule.startswith("pattern write"):
            assert "+" not in rule and "#" not in rule and "%u" in rule


def test_names_that_would_change_the_acl_are_refused() -> None:
    with pytest.raises(ProtocolError):
        render_acl(["ho+me"])
    with pytest.raises(ProtocolError):
        render_acl(["home"], ["%u"])


def test_committed_example_is_what_the_generator_writes() -> None:
    committed = (REPO / "broker-config" / "acl.example").read_text()
    assert committed == render_acl(["home"])
