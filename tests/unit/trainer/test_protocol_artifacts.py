import hashlib

import pytest

from protocol.artifacts import ARTIFACT_FILES, INITIAL_WEIGHTS, MANIFEST_FILE, verify_file
from protocol.errors import ProtocolError, Reason
from protocol.manifest import Manifest, ParamSpec


def _manifest(files: dict[str, str]) -> Manifest:
    return Manifest("mlp", (ParamSpec("w", (2, 3)),), "input", (3,), 2, files=files)


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
    assert len(set(ARTIFACT_FILES)) == 6
