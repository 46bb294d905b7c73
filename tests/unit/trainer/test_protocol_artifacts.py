import hashlib
import io

import numpy as np
import pytest

from protocol.artifacts import (
    ARTIFACT_FILES,
    FROZEN_WEIGHTS,
    INITIAL_WEIGHTS,
    MANIFEST_FILE,
    decode_frozen_weights,
    decode_initial_weights,
    verify_file,
)
from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest, ParamSpec


def _manifest(files: dict[str, str]) -> Manifest:
    frozen = (ParamSpec("backbone", (4,)),)
    return Manifest("mlp", (ParamSpec("w", (2, 3)),), "input", (3,), 2, files=files, frozen=frozen)


def test_verify_file_accepts_the_listed_bytes() -> None:
    data = b"weights"
    m = _manifest({INITIAL_WEIGHTS: hashlib.sha256(data).hexdigest()})
    verify_file(m, INITIAL_WEIGHTS, data)  # no exception


def test_verify_file_refuses_changed_bytes() -> None:
    m = _manifest({INITIAL_WEIGHTS: hashlib.sha256(b"weights").hexdigest()})
    with pytest.raises(ProtocolError) as err:
        verify_file(m, INITIAL_WEIGHTS, b"weightz")
    assert err.value.reason is Reason.UNKNOWN_MODEL
    assert INITIAL_WEIGHTS in str(err.value)


def test_verify_file_refuses_an_unlisted_name() -> None:
    with pytest.raises(ProtocolError) as err:
        verify_file(_manifest({}), "extra.onnx", b"")
    assert err.value.reason is Reason.FIELD


def test_the_manifest_is_not_among_the_hashed_files() -> None:
    assert MANIFEST_FILE not in ARTIFACT_FILES
    assert len(set(ARTIFACT_FILES)) == 5


def _npy(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def test_decode_initial_weights_returns_the_vector() -> None:
    w = np.arange(6, dtype=np.float32)  # the manifest's (2, 3) parameter, flat
    np.testing.assert_array_equal(decode_initial_weights(_manifest({}), _npy(w)), w)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not a numpy file", Reason.MALFORMED),
        (_npy(np.zeros(6, dtype=object), allow_pickle=True), Reason.MALFORMED),  # never unpickled
        (_npy(np.zeros(6, dtype=np.float64)), Reason.DTYPE),
        (_npy(np.zeros(5, dtype=np.float32)), Reason.SHAPE),
        (_npy(np.zeros((2, 3), dtype=np.float32)), Reason.SHAPE),
        (_npy(np.array([0, 0, 0, 0, 0, np.nan], dtype=np.float32)), Reason.NON_FINITE),
    ],
)
def test_decode_initial_weights_refuses_bad_bytes(data: bytes, reason: Reason) -> None:
    with pytest.raises(ProtocolError) as err:
        decode_initial_weights(_manifest({}), data)
    assert err.value.reason is reason
    assert INITIAL_WEIGHTS in str(err.value)


def test_frozen_weights_decode_to_the_frozen_size_and_refuse_the_trainable_one() -> None:
    frozen = np.arange(4, dtype=np.float32)  # the manifest's frozen (4,) tensor
    np.testing.assert_array_equal(decode_frozen_weights(_manifest({}), _npy(frozen)), frozen)
    with pytest.raises(ProtocolError) as err:
        decode_frozen_weights(_manifest({}), _npy(np.zeros(6, np.float32)))
    assert err.value.reason is Reason.SHAPE and FROZEN_WEIGHTS in str(err.value)
    with pytest.raises(ProtocolError) as err:
        decode_frozen_weights(_manifest({}), _npy(np.array([0, np.nan, 0, 0], np.float32)))
    assert err.value.reason is Reason.NON_FINITE
