"""ServerApp publishing downlink deltas beside whole offers (in-memory link): a device following
the deltas holds exactly what the whole offers carry, and both are what the server evaluates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocol.downlink import PublishedModel, apply_delta, decode_delta, weights_digest
from protocol.errors import ConfigError
from protocol.messages import decode_offer, decode_vector
from protocol.signing import load_private_key, verify_delta, verify_offer
from protocol.topics import (
    global_model_topic,
    model_delta_topic,
    serving_delta_topic,
    serving_model_topic,
    update_topic,
)
from server.app import ServerApp
from tests.unit.server.factory import update_bytes
from tests.unit.server.test_app import FLEET, FakeLink, _config
from transport import IncomingMessage

PUBLISH = {"every_versions": 1, "every_seconds": 3600.0, "min_interval_seconds": 0}


def _run(tmp_path: Path, publish: dict[str, object], steps: int) -> tuple[ServerApp, FakeLink]:
    link = FakeLink()
    config = _config(tmp_path, publish=publish, durability={"fsync": "always"})
    app = ServerApp(config, link=link)
    rng = np.random.default_rng(0)
    app.start()
    try:
        manifest = app.core.manifest
        for seq in range(1, steps + 1):
            delta = rng.normal(0, 1, 6).astype(np.float32)
            payload = update_bytes(manifest, delta, seq=seq, base=seq - 1)
            link.queue.put_nowait(_incoming(payload))
            assert app.wait_for_version(seq, timeout=10)
    finally:
        app.stop()
    return app, link


def _incoming(payload: bytes) -> IncomingMessage:
    return IncomingMessage(update_topic(FLEET, "dev-1"), payload, False)


@pytest.mark.parametrize("whole", ["float32", "float16"])
@pytest.mark.parametrize("which", ["global", "serving"])
def test_deltas_reconstruct_the_whole_offers_bit_for_bit(
    tmp_path: Path, whole: str, which: str
) -> None:
    app, link = _run(tmp_path, PUBLISH | {"codec": whole}, steps=5)  # default delta codec
    manifest = app.core.manifest
    public = load_private_key(app.config.signing_key.read_bytes()).public_key()
    topics = {
        "global": (global_model_topic, model_delta_topic),
        "serving": (serving_model_topic, serving_delta_topic),
    }[which]
    offers = [decode_offer(p) for p in link.on(topics[0](FLEET, manifest.model_id))]
    deltas = [decode_delta(p) for p in link.on(topics[1](FLEET, manifest.model_id))]
    assert [o.version for o in offers] == [0, 1, 2, 3, 4, 5]
    assert [(d.base_version, d.version) for d in deltas] == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert all(q == 0 and r for t, _, q, r in link.published if t.endswith("delta"))
    first = decode_vector(offers[0].weights, manifest)
    held = PublishedModel(0, first, weights_digest(first))
    for offer, delta in zip(offers[1:], deltas, strict=True):
        verify_offer(offer, public)
        verify_delta(delta, public)
        held = apply_delta(delta, held, manifest)
        whole_weights = decode_vector(offer.weights, manifest)
        assert held.weights.tobytes() == whole_weights.tobytes()
    if which == "global":
        published = app.published_model()
        assert published is not None and published[1].tobytes() == held.weights.tobytes()
    # the published chain tracks its model to within one int4 step's rounding (and float16's)
    target = app.core.model if which == "global" else app.core.serving_model
    assert np.abs(held.weights - target).max() < 0.1 * np.abs(target).max()


def test_delta_codec_none_publishes_whole_offers_of_the_iterate(tmp_path: Path) -> None:
    app, link = _run(tmp_path, PUBLISH | {"delta_codec": "none"}, steps=2)
    manifest = app.core.manifest
    # deltas off: the retained delta topic is cleared, so agents waiting on it take whole offers
    assert link.on(model_delta_topic(FLEET, manifest.model_id)) == [b""]
    assert link.on(serving_delta_topic(FLEET, manifest.model_id)) == [b""]
    last = decode_offer(link.on(global_model_topic(FLEET, manifest.model_id))[-1])
    assert decode_vector(last.weights, manifest).tobytes() == app.core.model.tobytes()


@pytest.mark.parametrize("bad", ["int9", 3, {"name": "topk"}])
def test_a_bad_delta_codec_names_the_key(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ConfigError, match=r"publish\.delta_codec"):
        _config(tmp_path, publish={"delta_codec": bad})
