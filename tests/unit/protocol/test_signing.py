from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fleetlearn.keys_cli import write_keypair
from protocol.errors import ConfigError, ProtocolError, Reason, SignatureError
from protocol.messages import ModelOffer, decode_offer, encode_offer, encode_vector
from protocol.signing import (
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_offer,
    verify_offer,
)


def _offer() -> ModelOffer:
    weights = encode_vector(np.arange(4, dtype=np.float32), {"name": "float32"})
    return ModelOffer("m1", 3, "d" * 64, weights, 1700000000.0, 0.01)


def test_signed_offer_verifies_after_the_wire() -> None:
    key, public = generate_keypair()
    offer = decode_offer(encode_offer(sign_offer(_offer(), key)))
    verify_offer(offer, public)  # raises on failure
    assert len(offer.signature) == 64


@pytest.mark.parametrize(
    "tamper",
    [
        lambda o: dataclasses.replace(o, version=o.version + 1),
        lambda o: dataclasses.replace(o, fedprox_mu=0.5),
        lambda o: dataclasses.replace(
            o, weights=dataclasses.replace(o.weights, data=b"\x00" * len(o.weights.data))
        ),
        lambda o: dataclasses.replace(o, signature=b""),
        lambda o: dataclasses.replace(
            o, signature=o.signature[:-1] + bytes([o.signature[-1] ^ 0xFF])
        ),
    ],
)
def test_tampered_or_unsigned_offers_are_refused(tamper: object) -> None:
    key, public = generate_keypair()
    signed = sign_offer(_offer(), key)
    with pytest.raises(SignatureError) as info:
        verify_offer(tamper(signed), public)  # type: ignore[operator]
    assert info.value.reason is Reason.BAD_SIGNATURE


def test_another_fleets_key_is_refused() -> None:
    key, _ = generate_keypair()
    _, other_public = generate_keypair()
    with pytest.raises(SignatureError):
        verify_offer(sign_offer(_offer(), key), other_public)


def test_keys_cli_writes_a_private_key_only_the_owner_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    private_path, public_path = write_keypair(tmp_path / "keys")
    assert private_path.stat().st_mode & 0o777 == 0o600
    key = load_private_key(private_path.read_bytes())
    public = load_public_key(public_path.read_bytes())
    verify_offer(sign_offer(_offer(), key), public)
    with pytest.raises(ConfigError, match="exists"):
        write_keypair(tmp_path / "keys")


def test_garbage_key_files_are_refused() -> None:
    with pytest.raises(ProtocolError):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
