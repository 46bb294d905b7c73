"""Regression tests for the outside probe's server findings (issue 15, defects 2, 3, 6 and 9).

2. The example config presented max_norm = 100 (16,000x an honest update's norm) as a bound.
3. One full offer per tiny update (the pacing rule; the broker-level test is in
   tests/integration/broker/test_probe_defects.py).
6. A delta whose float32 L2 norm overflows got clip factor 0.0 and was acked as accepted.
9. No per-device rate limit: one device could flood the aggregator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from protocol.errors import Reason
from server.admission import AdmissionLimits, NormAction
from server.config import parse_config
from server.core import ServerCore
from server.strategies import FedAsync
from tests.unit.server.factory import make_artifacts, make_manifest, update_bytes

M = make_manifest(6)
ZERO = np.zeros(6, np.float32)
HUGE = np.full(6, 3e19, np.float32)  # finite; its float32 sum of squares overflows


def _core(tmp: Path, **limits: object) -> ServerCore:
    core = ServerCore(M, ZERO, FedAsync(alpha=1.0), tmp, AdmissionLimits(**limits))  # type: ignore[arg-type]
    core.recover()
    return core


@pytest.mark.parametrize(
    "limits",
    [
        {"max_norm": 100.0, "norm_action": NormAction.CLIP},
        {"max_norm": 100.0, "norm_action": NormAction.REJECT},
        {"max_norm": None},
    ],
)
def test_norm_overflow_is_refused_not_accepted_as_zero(
    tmp_path: Path, limits: dict[str, object]
) -> None:
    assert np.isfinite(HUGE).all()
    core = _core(tmp_path, **limits)
    try:
        out = core.handle("dev-1", update_bytes(M, HUGE))
        assert not out.ack.accepted, out.ack
        assert out.ack.reason is Reason.NORM
        assert "overflow" in out.ack.detail
        assert core.version == 0
        np.testing.assert_array_equal(core.model, ZERO)
        # a sane update after it is still accepted
        assert core.handle("dev-1", update_bytes(M, np.ones(6, np.float32), seq=2)).ack.accepted
    finally:
        core.close()


def test_large_but_representable_norm_is_still_clipped(tmp_path: Path) -> None:
    core = _core(tmp_path, max_norm=1.0, norm_action=NormAction.CLIP)
    try:
        out = core.handle("dev-1", update_bytes(M, np.full(6, 1e15, np.float32)))
        assert out.ack.accepted
        assert np.linalg.norm(core.model.astype(np.float64)) == pytest.approx(1.0, rel=1e-5)
    finally:
        core.close()


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[ServerCore]:
    core = _core(tmp_path, rate_per_minute=6.0, rate_burst=2)
    yield core
    core.close()


def test_per_device_rate_limit_refuses_with_reason_and_refills(limited: ServerCore) -> None:
    ones = np.ones(6, np.float32) * 0.01
    acks = [limited.submit("dev-1", update_bytes(M, ones, seq=s), now=100.0).ack for s in (1, 2, 3)]
    limited.commit()
    assert [a.accepted for a in acks] == [True, True, False]
    assert acks[2].reason is Reason.RATE_LIMITED
    assert limited.version == 2  # the refused one never touched the model
    # another device has its own budget
    assert limited.submit("dev-2", update_bytes(M, ones, device="dev-2"), now=100.0).ack.accepted
    # 6 per minute: one token back after 10 s, not before
    assert not limited.submit("dev-1", update_bytes(M, ones, seq=3), now=105.0).ack.accepted
    assert limited.submit("dev-1", update_bytes(M, ones, seq=3), now=110.5).ack.accepted


def test_rate_limit_config_keys(tmp_path: Path) -> None:
    make_artifacts(tmp_path / "artifacts", 6)
    doc: dict[str, object] = {
        "fleet": "t",
        "artifacts": "artifacts",
        "signing_key": "k",
        "state_dir": "s",
        "admission": {"rate_per_minute": 30, "rate_burst": 5},
    }
    cfg = parse_config(doc, tmp_path)
    assert (cfg.admission.rate_per_minute, cfg.admission.rate_burst) == (30.0, 5)
    default = parse_config({k: v for k, v in doc.items() if k != "admission"}, tmp_path)
    assert default.admission.rate_per_minute is not None  # on by default


def test_offer_pacing_coalesces_and_always_publishes_the_latest_eventually() -> None:
    from server.offer_pacing import offer_due

    def due(version: int, published: int, now: float, at: float) -> bool:
        return offer_due(
            version,
            published,
            now,
            at,
            every_versions=1,
            every_seconds=5.0,
            min_interval_seconds=2.0,
        )

    assert not due(7, 7, 100.0, 0.0)  # nothing new
    assert not due(8, 7, 101.9, 100.0)  # new, but within the minimum interval: coalesced
    assert due(8, 7, 102.0, 100.0)  # interval over: the latest goes out
    # one offer per interval however many versions arrive: 400 updates in 10 s -> 5 offers
    published, at, offers = 0, 0.0, 0
    for tick in range(1, 1001):  # the worker loop turns every 0.01..0.1 s
        now, version = tick * 0.01, int(tick * 0.4)  # 400 versions over 10 s
        if due(version, published, now, at):
            published, at, offers = version, now, offers + 1
    assert offers == 5 and published == 400


def test_example_config_does_not_present_a_poisoning_sized_norm_bound() -> None:
    """Defect 2 (defence on branch `robust`): the example's max_norm was 100, about 16,000x an
    honest update's norm, and three norm-99 updates took accuracy from 0.97 to 0.54."""
    from server.config import load_config

    example = Path(__file__).resolve().parents[3] / "server" / "example.toml"
    text = example.read_text()
    cfg = load_config(example)
    assert cfg.admission.max_norm is None or cfg.admission.max_norm <= 1.0
    assert "NOT a defence" in text  # the comment says why a large bound is no protection
