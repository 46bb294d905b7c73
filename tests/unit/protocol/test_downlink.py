"""Downlink deltas: the wire round trip, server and device reconstructing the same bits, and a
relay's tampering, reordering and replay refused."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import msgpack
import numpy as np
import pytest

from protocol.downlink import (
    BaseMismatch,
    ModelDelta,
    PublishedModel,
    apply_delta,
    decode_delta,
    delta_signing_bytes,
    encode_delta,
    next_published,
    weights_digest,
)
from protocol.errors import ProtocolError, Reason, SignatureError
from protocol.manifest import Manifest, ParamSpec
from protocol.messages import ModelOffer, decode_offer, decode_vector, encode_offer, encode_vector
from protocol.signing import generate_keypair, sign_delta, sign_offer, verify_delta

N = 1000
MANIFEST = Manifest("tiny", (ParamSpec("w", (N,)),), "x", (N,), 2)
KEY, PUBLIC = generate_keypair()


def _models(count: int, seed: int = 0) -> list[np.ndarray]:
    """A training trajectory: a random walk with a drift, (N,) float32 per version."""
    rng = np.random.default_rng(seed)
    out = [rng.normal(0, 0.5, N).astype(np.float32)]
    for _ in range(count - 1):
        out.append((out[-1] + rng.normal(0.001, 0.01, N)).astype(np.float32))
    return out


def _server_chain(
    models: list[np.ndarray], delta_codec: dict[str, Any], whole: dict[str, Any]
) -> list[tuple[PublishedModel, bytes | None]]:
    """What the server publishes per version: the model devices hold and the signed delta."""
    out: list[tuple[PublishedModel, bytes | None]] = []
    previous: PublishedModel | None = None
    for version, model in enumerate(models):
        published, step = next_published(previous, model, version, MANIFEST, delta_codec, whole)
        wire = None
        if step is not None and previous is not None:
            delta = ModelDelta(
                "tiny", version, previous.version, MANIFEST.digest, previous.digest,
                published.digest, whole, step, 1.7e9, 0.0,
            )  # fmt: skip
            wire = encode_delta(sign_delta(delta, KEY))
        out.append((published, wire))
        previous = published
    return out


def _receive(wire: bytes) -> ModelDelta:
    delta = decode_delta(wire)
    verify_delta(delta, PUBLIC)
    return delta


@pytest.mark.parametrize("whole", [{"name": "float32"}, {"name": "float16"}])
@pytest.mark.parametrize(
    "delta_codec",
    [
        {"name": "int8"},
        {"name": "int4"},
        {"name": "topk", "fraction": 0.1, "values": {"name": "int8"}},
    ],
)
def test_a_device_following_the_deltas_holds_the_published_bits(
    delta_codec: dict[str, Any], whole: dict[str, Any]
) -> None:
    chain = _server_chain(_models(30), delta_codec, whole)
    # the device starts from the whole offer of v0, as a newcomer decodes it
    first = chain[0][0]
    offer = ModelOffer("tiny", 0, MANIFEST.digest, encode_vector(first.weights, whole), 1.7e9)
    weights = decode_vector(decode_offer(encode_offer(sign_offer(offer, KEY))).weights, MANIFEST)
    held = PublishedModel(0, weights, weights_digest(weights))
    for published, wire in chain[1:]:
        assert wire is not None
        held = apply_delta(_receive(wire), held, MANIFEST)
        assert held.version == published.version and held.digest == published.digest
        assert held.weights.view(np.uint32).tobytes() == published.weights.view(np.uint32).tobytes()
        # a newcomer's whole offer of the same version decodes to the same bits
        whole_vec = decode_vector(encode_vector(published.weights, whole), MANIFEST)
        assert weights_digest(whole_vec) == held.digest


def test_quantization_error_does_not_accumulate() -> None:
    """The server quantizes M_k - P_{k-1}: what a step drops rides in the next one, so the
    published model stays within one step's rounding of the iterate after 200 versions, where
    quantizing M_k - M_{k-1} drifts."""
    models = _models(200, seed=1)
    chain = _server_chain(models, {"name": "int4"}, {"name": "float32"})
    gap = np.abs(chain[-1][0].weights - models[-1]).max()
    naive = models[0].copy()
    for before, after in itertools.pairwise(models):
        step = encode_vector(after - before, {"name": "int4"})
        naive = naive + decode_vector(step, MANIFEST)
    drift = np.abs(naive - models[-1]).max()
    one_step = np.abs(models[-1] - models[-2]).max() / 7  # int4 half-range: 7 levels
    assert gap <= one_step * 1.01
    assert drift > 5 * gap


def test_the_delta_survives_the_wire_and_its_signature_verifies() -> None:
    _published, wire = _server_chain(_models(2), {"name": "int8"}, {"name": "float32"})[1]
    assert wire is not None
    delta = _receive(wire)
    assert (delta.version, delta.base_version, delta.model_id) == (1, 0, "tiny")
    assert encode_delta(delta) == wire
    whole = encode_offer(
        ModelOffer(
            "tiny",
            1,
            MANIFEST.digest,
            encode_vector(_published.weights, {"name": "float32"}),
            1.7e9,
        )
    )
    assert len(wire) < len(whole) / 2  # int8: a quarter of the weights, plus ~400 header bytes


def _two_steps() -> tuple[list[tuple[PublishedModel, bytes | None]], PublishedModel]:
    chain = _server_chain(_models(4), {"name": "int8"}, {"name": "float32"})
    return chain, chain[0][0]


def test_a_relay_altering_a_delta_is_refused_by_the_signature() -> None:
    chain, _held = _two_steps()
    wire = chain[1][1]
    assert wire is not None
    delta = decode_delta(wire)
    data = bytearray(delta.delta.data)
    data[10] ^= 0x01
    forged = dataclasses.replace(delta, delta=dataclasses.replace(delta.delta, data=bytes(data)))
    with pytest.raises(SignatureError):
        verify_delta(decode_delta(encode_delta(forged)), PUBLIC)
    for change in ({"version": 9}, {"result_digest": "0" * 64}, {"base_version": 0, "version": 2}):
        with pytest.raises(SignatureError):
            verify_delta(dataclasses.replace(delta, **change), PUBLIC)  # type: ignore[arg-type]


def test_reordered_or_replayed_deltas_do_not_apply() -> None:
    chain, v0 = _two_steps()
    d1, d2, d3 = (_receive(w) for _p, w in chain[1:] if w is not None)
    with pytest.raises(BaseMismatch):  # v2->v3 reaching a device holding v0 (reordered, missed)
        apply_delta(d3, v0, MANIFEST)
    v1 = apply_delta(d1, v0, MANIFEST)
    with pytest.raises(BaseMismatch):  # v0->v1 replayed to a device holding v1
        apply_delta(d1, v1, MANIFEST)
    # same version number, other bits (a restarted server's v0): the base digest decides
    other = PublishedModel(0, v0.weights + 1, weights_digest(v0.weights + 1))
    with pytest.raises(BaseMismatch):
        apply_delta(d1, other, MANIFEST)
    assert apply_delta(d2, v1, MANIFEST).digest == chain[2][0].digest


def test_a_signed_delta_whose_result_is_not_what_it_reconstructs_is_refused() -> None:
    chain, v0 = _two_steps()
    wire = chain[1][1]
    assert wire is not None
    lying = sign_delta(dataclasses.replace(decode_delta(wire), result_digest="ab" * 32), KEY)
    with pytest.raises(ProtocolError) as info:
        apply_delta(lying, v0, MANIFEST)
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_an_offer_signature_never_verifies_as_a_delta() -> None:
    chain, _v0 = _two_steps()
    wire = chain[1][1]
    assert wire is not None
    delta = decode_delta(wire)
    offer = sign_offer(ModelOffer("tiny", 1, MANIFEST.digest, delta.delta, 1.7e9), KEY)
    with pytest.raises(SignatureError):
        verify_delta(dataclasses.replace(delta, signature=offer.signature), PUBLIC)
    assert delta_signing_bytes(delta) != encode_offer(offer)


def test_a_step_that_overflows_the_base_is_refused() -> None:
    v0 = PublishedModel(0, np.full(N, 3e38, np.float32), "")
    v0 = dataclasses.replace(v0, digest=weights_digest(v0.weights))
    step = encode_vector(np.full(N, 3e38, np.float32), {"name": "float32"})
    delta = ModelDelta(
        "tiny", 1, 0, MANIFEST.digest, v0.digest, "ab" * 32, {"name": "float32"}, step, 1.7e9
    )
    with pytest.raises(ProtocolError) as info:
        apply_delta(delta, v0, MANIFEST)
    assert info.value.reason is Reason.NON_FINITE


def _edited(wire: bytes, **changes: object) -> bytes:
    doc = msgpack.unpackb(wire, raw=False)
    doc.update(changes)
    out: bytes = msgpack.packb(doc, use_bin_type=True)
    return out


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"schema": 2}, Reason.SCHEMA),
        ({"kind": "model_offer"}, Reason.SCHEMA),
        ({"extra": 1}, Reason.FIELD),
        ({"base_version": 1}, Reason.FIELD),  # base >= version
        ({"base_digest": "xyz"}, Reason.FIELD),
        ({"result_codec": {"name": "int8"}}, Reason.CODEC),
        ({"fedprox_mu": -1.0}, Reason.FIELD),
    ],
)
def test_malformed_deltas_are_refused_by_name(changes: dict[str, object], reason: Reason) -> None:
    wire = _server_chain(_models(2), {"name": "int8"}, {"name": "float32"})[1][1]
    assert wire is not None
    with pytest.raises(ProtocolError) as info:
        decode_delta(_edited(wire, **changes))
    assert info.value.reason is reason


def test_an_oversized_delta_is_refused_before_parsing() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_delta(b"\x00" * 2048, max_bytes=1024)
    assert info.value.reason is Reason.OVERSIZE


def test_a_step_of_the_wrong_length_is_refused_before_it_is_added() -> None:
    v0 = PublishedModel(0, np.zeros(N, np.float32), weights_digest(np.zeros(N, np.float32)))
    short = encode_vector(np.ones(N - 1, np.float32), {"name": "int8"})
    delta = ModelDelta(
        "tiny", 1, 0, MANIFEST.digest, v0.digest, "ab" * 32, {"name": "float32"}, short, 1.7e9
    )
    with pytest.raises(ProtocolError) as info:
        apply_delta(delta, v0, MANIFEST)
    assert info.value.reason is Reason.SHAPE
