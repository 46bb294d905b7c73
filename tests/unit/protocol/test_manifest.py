from __future__ import annotations

import json

import numpy as np
import pytest

from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest, ParamSpec, decode_manifest, encode_manifest

MANIFEST = Manifest(
    "mlp",
    (ParamSpec("fc1.weight", (4, 3)), ParamSpec("fc1.bias", (4,)), ParamSpec("fc2.bias", (2,))),
    "input",
    (3,),
    2,
    files={"train_step.onnx": "ab" * 32},
    frozen=(ParamSpec("fc0.weight", (3, 3)),),
)


def test_num_params_and_split_follow_the_flat_order() -> None:
    assert MANIFEST.num_params == 12 + 4 + 2  # frozen parameters never travel
    assert MANIFEST.num_frozen == 9
    flat = np.arange(18, dtype=np.float32)
    parts = MANIFEST.split(flat)
    np.testing.assert_array_equal(parts["fc1.weight"], flat[:12].reshape(4, 3))
    np.testing.assert_array_equal(parts["fc2.bias"], [16, 17])
    np.testing.assert_array_equal(MANIFEST.flatten(parts), flat)


def test_round_trip_keeps_the_digest() -> None:
    decoded = decode_manifest(encode_manifest(MANIFEST))
    assert decoded == MANIFEST
    assert decoded.model_id == MANIFEST.digest
    assert len(MANIFEST.digest) == 64


def test_digest_changes_with_any_field() -> None:
    other = Manifest(MANIFEST.model_name, MANIFEST.params, "input", (3,), 3, files=MANIFEST.files)
    assert other.digest != MANIFEST.digest


def _doc(**changes: object) -> bytes:
    doc = json.loads(encode_manifest(MANIFEST))
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", Reason.MALFORMED),
        (b"[]", Reason.MALFORMED),
        (_doc(schema=1), Reason.SCHEMA),
        (_doc(frozen=[{"name": "fc1.bias", "shape": [4], "dtype": "float32"}]), Reason.FIELD),
        (_doc(digest="0" * 64), Reason.UNKNOWN_MODEL),
        (_doc(params=[{"name": "w", "shape": [2, -1], "dtype": "float32"}]), Reason.SHAPE),
        (_doc(params=[{"name": "w", "shape": [2], "dtype": "float64"}]), Reason.DTYPE),
        (_doc(num_classes="2"), Reason.FIELD),
        (b" " * (2 << 20), Reason.OVERSIZE),
    ],
)
def test_bad_manifests_are_refused(data: bytes, reason: Reason) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_manifest(data)
    assert info.value.reason is reason


def test_flat_vectors_of_the_wrong_shape_or_dtype_are_refused() -> None:
    with pytest.raises(ProtocolError) as info:
        MANIFEST.check_flat(np.zeros(17, np.float32))
    assert info.value.reason is Reason.SHAPE
    with pytest.raises(ProtocolError) as info:
        MANIFEST.check_flat(np.zeros(18, np.float64))
    assert info.value.reason is Reason.DTYPE


TEXT = Manifest(
    "minilm-lora",
    MANIFEST.params,
    "input",
    (16,),
    12,
    files={"train_step.onnx": "ab" * 32, "tokenizer.json": "cd" * 32},
    input_dtype="int64",
    tokenizer="tokenizer.json",
)


def test_a_text_model_round_trips_its_input_dtype_and_tokenizer() -> None:
    decoded = decode_manifest(encode_manifest(TEXT))
    assert decoded == TEXT
    assert (decoded.input_dtype, decoded.tokenizer) == ("int64", "tokenizer.json")
    assert TEXT.digest != Manifest(**{**_fields(TEXT), "input_dtype": "float32"}).digest


def _fields(m: Manifest) -> dict[str, object]:
    return {name: getattr(m, name) for name in m.__dataclass_fields__}


def _edited(m: Manifest, **changes: object) -> bytes:
    doc = json.loads(encode_manifest(m))
    del doc["digest"]
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"input_dtype": "float64"}, Reason.DTYPE),
        ({"input_dtype": 3}, Reason.FIELD),
        ({"tokenizer": "vocab.txt"}, Reason.FIELD),  # not a listed (hashed) file
        ({"files": {"../../etc/passwd": "ab" * 32}, "tokenizer": None}, Reason.FIELD),
        ({"files": {"sub/tokenizer.json": "ab" * 32}, "tokenizer": None}, Reason.FIELD),
        ({"files": {".hidden": "ab" * 32}, "tokenizer": None}, Reason.FIELD),
    ],
)
def test_bad_text_fields_and_path_like_file_names_are_refused(
    changes: dict[str, object], reason: Reason
) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_manifest(_edited(TEXT, **changes))
    assert err.value.reason is reason
