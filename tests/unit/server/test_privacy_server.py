"""Differential privacy inside the server: clipping bounds every applied contribution, the budget
stops training exactly at the flush that would exceed it, a restart (log replay) neither re-spends
nor forgets budget, and epsilon reaches the status, the metrics and the signed offer."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import GaussianDpEvent, SelfComposedDpEvent
from dp_accounting.rdp import RdpAccountant

from protocol.clipping import l2_norm
from protocol.errors import ConfigError, Reason
from protocol.messages import decode_offer
from protocol.signing import load_private_key, verify_offer
from protocol.topics import global_model_topic, update_topic
from server.admission import AdmissionLimits
from server.app import ServerApp
from server.core import ServerCore
from server.privacy import DpMechanism, PrivacyConfig, parse_privacy
from server.staleness import make_staleness
from server.strategies import AdmittedUpdate, FedBuff, make_strategy
from tests.unit.server.factory import make_manifest, update_bytes
from tests.unit.server.test_app import FLEET, FakeLink, _config, _wait
from transport import IncomingMessage

N = 64
MANIFEST = make_manifest(N)


def _rdp_epsilon(sigma: float, steps: int, delta: float) -> float:
    """Straight from dp-accounting, independent of server/privacy/accountant.py."""
    acc = RdpAccountant()
    acc.compose(SelfComposedDpEvent(GaussianDpEvent(sigma), steps))
    return float(acc.get_epsilon(delta))


def _fedbuff(k: int, config: PrivacyConfig) -> FedBuff:
    return FedBuff(
        buffer_size=k,
        staleness=make_staleness("polynomial", {"a": 0.5}),
        privacy=DpMechanism(config, k),
    )


def _core(state: Path, strategy: FedBuff, every: int = 200) -> ServerCore:
    core = ServerCore(
        MANIFEST,
        np.zeros(N, np.float32),
        strategy,
        state,
        AdmissionLimits(max_staleness=None),
        checkpoint_every=every,
    )
    core.recover()
    return core


def _updates(count: int, codec: dict[str, Any] | None = None, scale: float = 1.0) -> list[bytes]:
    rng = np.random.default_rng(11)
    out = []
    for i in range(count):
        delta = rng.standard_normal(N).astype(np.float32) * np.float32(scale * (1 + i % 7))
        out.append(update_bytes(MANIFEST, delta, device=f"dev-{i}", seq=1, codec=codec))
    return out


def _device(i: int) -> str:
    return f"dev-{i}"


def test_every_applied_contribution_is_clipped_after_dequantisation(tmp_path: Path) -> None:
    clip = 0.8
    strategy = _fedbuff(
        4, PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0, clip_norm=clip, seed=1)
    )
    mech = strategy.privacy
    assert mech is not None
    clipped: list[np.ndarray] = []
    released: list[np.ndarray] = []
    real_clip, real_release = mech.clip, mech.release

    def spy_clip(delta: np.ndarray) -> tuple[np.ndarray, bool]:
        out, within = real_clip(delta)
        clipped.append(out.copy())
        return out, within

    def spy_release(
        total: np.ndarray, version: int, *, unclipped: int, clipped: int
    ) -> np.ndarray | None:
        released.append(total.copy())
        return real_release(total, version, unclipped=unclipped, clipped=clipped)

    mech.clip, mech.release = spy_clip, spy_release  # type: ignore[method-assign]
    core = _core(tmp_path / "s", strategy)
    payloads = _updates(12, codec={"name": "int8"}, scale=3.0)  # norms ~24..170, int8 on the wire
    for i, p in enumerate(payloads):
        assert core.handle(_device(i), p).ack.accepted
    assert core.version == 3 and len(clipped) == 12 and len(released) == 3
    for c in clipped:
        assert l2_norm(c) <= clip
    for f, total in enumerate(released):
        # the sum holds exactly the clipped deltas, each weighted by s(tau) <= 1
        parts = clipped[4 * f : 4 * f + 4]
        assert l2_norm(total) <= 4 * clip
        # every update has base version 0 and arrives at version f: tau = f, s = (1 + f)^-0.5
        expected = sum(p.astype(np.float64) for p in parts) * (1.0 + f) ** -0.5
        np.testing.assert_allclose(total, expected, rtol=1e-5, atol=1e-6)


def test_budget_stops_training_exactly_at_the_flush_that_would_exceed_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sigma, delta = 2.0, 1e-5
    eps3, eps4 = _rdp_epsilon(sigma, 3, delta), _rdp_epsilon(sigma, 4, delta)
    budget = (eps3 + eps4) / 2  # 3 flushes fit, the 4th would exceed
    config = PrivacyConfig(epsilon=budget, delta=delta, noise_multiplier=sigma, seed=2)
    core = _core(tmp_path / "s", _fedbuff(2, config))
    caplog.set_level(
        logging.WARNING, logger="server.privacy.mechanism"
    )  # demo tests quiet "server"
    outcomes = [core.handle(_device(i), p) for i, p in enumerate(_updates(12))]
    assert [o.ack.accepted for o in outcomes] == [True] * 6 + [False] * 6
    assert {o.ack.reason for o in outcomes[6:]} == {Reason.PRIVACY_BUDGET}
    assert core.version == 3
    status = core.strategy.privacy.status()  # type: ignore[union-attr]
    assert status.flushes == 3 and status.exhausted
    assert status.epsilon_spent == pytest.approx(eps3, rel=1e-9)
    assert status.epsilon_spent <= budget < _rdp_epsilon(sigma, 4, delta)
    assert "training stops" in caplog.text


def test_a_flush_over_budget_is_refused_and_the_model_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sigma, delta = 2.0, 1e-5
    budget = (_rdp_epsilon(sigma, 2, delta) + _rdp_epsilon(sigma, 3, delta)) / 2
    s = _fedbuff(1, PrivacyConfig(epsilon=budget, delta=delta, noise_multiplier=sigma, seed=4))
    model, version = np.zeros(N, np.float32), 0
    caplog.set_level(
        logging.WARNING, logger="server.privacy.mechanism"
    )  # demo tests quiet "server"
    stepped = []
    for i in range(4):  # the strategy driven directly (no admission): the flush itself refuses
        d = np.full(N, 0.01, np.float32)
        r = s.apply(model, version, AdmittedUpdate(_device(i), 1, version, 1, d))
        stepped.append(r.stepped)
        model, version = r.model, r.version
    assert stepped == [True, True, False, False] and version == 2
    assert s.pending == 0  # the refused buffer is dropped, never released
    assert "flush 3 refused" in caplog.text


def test_restart_neither_respends_nor_forgets_budget(tmp_path: Path) -> None:
    config = PrivacyConfig(epsilon=50.0, delta=1e-5, noise_multiplier=1.0)  # secret random key
    payloads = _updates(11, codec={"name": "int8"})
    first = _core(tmp_path / "s", _fedbuff(3, config), every=4)
    for i in range(7):  # 2 flushes + 1 buffered; a checkpoint after 4 records, then log only
        assert first.handle(_device(i), payloads[i]).ack.accepted
    key = first.strategy.state_dict()["dp_key"]
    model, spent = first.model.copy(), first.strategy.privacy.status()  # type: ignore[union-attr]
    # crash: the process dies without closing; a new server recovers the same folder
    again = _core(tmp_path / "s", _fedbuff(3, config), every=4)
    status = again.strategy.privacy.status()  # type: ignore[union-attr]
    assert again.version == 2 and again.strategy.pending == 1
    np.testing.assert_array_equal(again.model, model)  # the noise replayed bit for bit
    assert again.strategy.state_dict()["dp_key"] == key  # the secret survived the restart
    assert status.flushes == spent.flushes == 2 and status.epsilon_spent == spent.epsilon_spent
    for i in range(7, 11):
        assert again.handle(_device(i), payloads[i]).ack.accepted
    assert again.version == 3
    # a server that never crashed, with the same key, reaches the same model and the same spend
    clean_strategy = _fedbuff(3, config)
    clean_strategy.load_state_dict(clean_strategy.state_dict() | {"dp_key": key})
    clean = _core(tmp_path / "clean", clean_strategy)
    for i, p in enumerate(payloads):
        assert clean.handle(_device(i), p).ack.accepted
    np.testing.assert_array_equal(clean.model, again.model)
    assert clean.strategy.privacy.status() == again.strategy.privacy.status()  # type: ignore[union-attr]
    assert again.strategy.privacy.status().epsilon_spent == pytest.approx(  # type: ignore[union-attr]
        _rdp_epsilon(1.0, 3, 1e-5)
    )


def test_privacy_state_is_not_silently_dropped_or_invented(tmp_path: Path) -> None:
    config = PrivacyConfig(epsilon=50.0, delta=1e-5, noise_multiplier=1.0, seed=1)
    core = _core(tmp_path / "dp", _fedbuff(2, config))
    core.close()
    with pytest.raises(ValueError, match="forget the budget"):
        _core(tmp_path / "dp", FedBuff(buffer_size=2))
    plain = _core(tmp_path / "plain", FedBuff(buffer_size=2))
    plain.close()
    with pytest.raises(ValueError, match="no privacy record"):
        _core(tmp_path / "plain", _fedbuff(2, config))


PRIVACY = {"epsilon": 20.0, "delta": 1e-5, "noise_multiplier": 1.0, "clip_norm": 1.0}


def test_status_metrics_and_signed_offer_carry_epsilon(tmp_path: Path) -> None:
    link = FakeLink()
    config = _config(
        tmp_path,
        strategy={"name": "fedbuff", "buffer_size": 2},
        publish={
            "every_versions": 1,
            "every_seconds": 3600.0,
            "min_interval_seconds": 0.0,  # every version: this test counts offers
            "codec": "float32",
        },
        privacy=PRIVACY,
        metrics={"port": 0},
    )
    app = ServerApp(config, link=link)
    app.start()
    try:
        manifest = app.core.manifest
        for i in range(4):  # two buffers, each committed (and published) before the next
            p = update_bytes(manifest, np.full(6, 3.0, np.float32), device=f"d-{i}", seq=1)
            link.queue.put(IncomingMessage(update_topic(FLEET, f"d-{i}"), p, False))
            if i == 1:
                assert app.wait_for_version(1, timeout=10)
        assert app.wait_for_version(2, timeout=10)
        topic = global_model_topic(FLEET, manifest.model_id)
        _wait(lambda: len(link.on(topic)) == 3)
        offers = [decode_offer(p) for p in link.on(topic)]
        public = load_private_key(config.signing_key.read_bytes()).public_key()
        for offer in offers:
            verify_offer(offer, public)  # the privacy fields are under the signature
        expected = _rdp_epsilon(1.0, 2, 1e-5)
        assert offers[0].privacy["epsilon"] == 0.0
        assert offers[2].privacy["epsilon"] == pytest.approx(expected)
        assert offers[2].privacy["clip_norm"] == 1.0 and offers[2].privacy["flushes"] == 2
        status = app.status().privacy
        assert status is not None and status.epsilon_spent == pytest.approx(expected)
        assert not status.sampling_amplification
        text = urllib.request.urlopen(f"http://127.0.0.1:{app.metrics_port}/metrics").read()
        assert f"fleetlearn_dp_epsilon_spent {expected}" in text.decode()
        assert "fleetlearn_dp_epsilon_budget 20.0" in text.decode()
    finally:
        app.stop()


def test_a_tampered_privacy_claim_fails_the_signature(tmp_path: Path) -> None:
    import dataclasses

    from protocol.errors import SignatureError

    link = FakeLink()
    config = _config(tmp_path, strategy={"name": "fedbuff", "buffer_size": 2}, privacy=PRIVACY)
    with ServerApp(config, link=link):
        pass
    offer = decode_offer(link.published[0][1])
    forged = dataclasses.replace(offer, privacy=offer.privacy | {"epsilon_budget": 0.1})
    public = load_private_key(config.signing_key.read_bytes()).public_key()
    with pytest.raises(SignatureError):
        verify_offer(forged, public)


def test_config_refuses_unsound_combinations(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FedAsync releases a new model after every"):
        _config(tmp_path, strategy={"name": "fedasync"}, privacy=PRIVACY)
    with pytest.raises(ConfigError, match="sample_weighted"):
        _config(
            tmp_path,
            strategy={"name": "fedbuff", "sample_weighted": True},
            privacy=PRIVACY,
        )
    with pytest.raises(ConfigError, match="exactly one of"):
        parse_privacy({"epsilon": 1.0, "delta": 1e-5})
    with pytest.raises(ConfigError, match=r"privacy\.delta"):
        parse_privacy({"epsilon": 1.0, "delta": 2.0, "noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match="too small"):
        make_strategy(
            "fedbuff",
            {"buffer_size": 10},
            None,
            privacy=parse_privacy(
                {"epsilon": 8, "delta": 1e-5, "noise_multiplier": 3.0, "adaptive_clip": True}
            ),
        )


def test_a_production_config_refuses_a_fixed_noise_seed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"privacy\.seed: a fixed noise key"):
        _config(tmp_path, strategy={"name": "fedbuff"}, privacy={**PRIVACY, "seed": 3})
    with pytest.raises(ConfigError, match=r"privacy\.seed"):
        parse_privacy({"epsilon": 1.0, "delta": 1e-5, "noise_multiplier": 1.0, "seed": 0})
    simulated = parse_privacy(
        {"epsilon": 1.0, "delta": 1e-5, "noise_multiplier": 1.0, "seed": 0}, allow_seed=True
    )
    assert simulated.seed == 0


def test_planned_flushes_calibrate_sigma_to_the_budget() -> None:
    config = parse_privacy({"epsilon": 2.0, "delta": 1e-5, "planned_flushes": 40})
    assert _rdp_epsilon(config.noise_multiplier, 40, 1e-5) <= 2.0
    assert _rdp_epsilon(config.noise_multiplier, 41, 1e-5) > 2.0


def test_one_update_per_device_per_flush_survives_a_restart(tmp_path: Path) -> None:
    config = PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=1.0, seed=5)
    core = _core(tmp_path / "s", _fedbuff(3, config), every=1)  # checkpoint after each record
    one = np.full(N, 0.1, np.float32)
    assert core.handle("dev-a", update_bytes(MANIFEST, one, device="dev-a", seq=1)).ack.accepted
    # a second update of dev-a in the same buffer would give it sensitivity 2C
    again = core.handle("dev-a", update_bytes(MANIFEST, one, device="dev-a", seq=2)).ack
    assert not again.accepted and again.reason is Reason.DP_BUFFER
    core.close()
    core = _core(tmp_path / "s", _fedbuff(3, config), every=1)  # the buffer's members persist
    again = core.handle("dev-a", update_bytes(MANIFEST, one, device="dev-a", seq=2)).ack
    assert again.reason is Reason.DP_BUFFER
    for d in ("dev-b", "dev-c"):
        assert core.handle(d, update_bytes(MANIFEST, one, device=d, seq=1)).ack.accepted
    assert core.version == 1  # flushed: dev-a may contribute to the next buffer
    ok = core.handle("dev-a", update_bytes(MANIFEST, one, device="dev-a", seq=2, base=1)).ack
    assert ok.accepted
