"""One test per admission reason code, bytes in through the real decode path, reason asserted.

Each case goes through `ServerCore.handle` (decode -> admit -> log -> apply -> Ack), so the Ack a
device would receive is what is checked, and a refused update must leave the model untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest

from protocol.errors import Reason
from protocol.messages import ClientUpdate, EncodedVector, encode_update
from server.admission import AdmissionLimits, NormAction
from server.core import ServerCore
from server.strategies import FedAsync, FedAvg, Strategy
from tests.unit.server.factory import make_manifest, update_bytes

M = make_manifest(6)
ZERO = np.zeros(6, np.float32)
ONES = np.ones(6, np.float32)


def _core(tmp: Path, strategy: Strategy | None = None, **limits: object) -> ServerCore:
    core = ServerCore(M, ZERO, strategy or FedAsync(alpha=1.0), tmp, AdmissionLimits(**limits))  # type: ignore[arg-type]
    core.recover()
    return core


@pytest.fixture
def core(tmp_path: Path) -> Iterator[ServerCore]:
    c = _core(tmp_path, max_samples=100, max_staleness=2)
    yield c
    c.close()


def _refused(core: ServerCore, payload: bytes, reason: Reason, topic_device: str = "dev-1") -> None:
    before, version = core.model.copy(), core.version
    out = core.handle(topic_device, payload)
    assert not out.ack.accepted
    assert out.ack.reason is reason, out.ack.detail
    assert core.version == version
    np.testing.assert_array_equal(core.model, before)


def _raw(**overrides: object) -> bytes:
    doc = msgpack.unpackb(update_bytes(M, ONES), raw=False)
    doc.update(overrides)
    out: bytes = msgpack.packb({k: v for k, v in doc.items() if v is not None}, use_bin_type=True)
    return out


def test_accepts_good_update(core: ServerCore) -> None:
    out = core.handle("dev-1", update_bytes(M, ONES))
    assert out.ack.accepted and out.ack.reason is Reason.OK and out.ack.server_version == 1
    np.testing.assert_array_equal(core.model, ONES)


def test_oversize(tmp_path: Path) -> None:
    c = _core(tmp_path, max_message_bytes=64)
    _refused(c, update_bytes(M, ONES), Reason.OVERSIZE)


def test_malformed(core: ServerCore) -> None:
    _refused(core, b"\xc1 not msgpack", Reason.MALFORMED)


def test_schema(core: ServerCore) -> None:
    _refused(core, _raw(schema=99), Reason.SCHEMA)


def test_field(core: ServerCore) -> None:
    _refused(core, _raw(num_samples="ten"), Reason.FIELD)


def test_bad_device_id(core: ServerCore) -> None:
    _refused(core, _raw(device_id="dev/+"), Reason.BAD_DEVICE_ID)


def test_device_mismatch(core: ServerCore) -> None:
    _refused(core, update_bytes(M, ONES, device="dev-2"), Reason.DEVICE_MISMATCH)


def test_unknown_model(core: ServerCore) -> None:
    other = make_manifest(8).model_id
    _refused(core, update_bytes(M, ONES, model_id=other), Reason.UNKNOWN_MODEL)


def test_replay_and_out_of_order(core: ServerCore) -> None:
    assert core.handle("dev-1", update_bytes(M, ONES, seq=5)).ack.accepted
    _refused(core, update_bytes(M, ONES * 2, seq=5), Reason.REPLAY)  # same seq, other content
    _refused(core, update_bytes(M, ONES, seq=4), Reason.REPLAY)  # out of order
    assert core.handle("dev-1", update_bytes(M, ONES, seq=6, base=1)).ack.accepted


def test_identical_redelivery_is_acked_but_not_applied(core: ServerCore) -> None:
    payload = update_bytes(M, ONES, seq=3)
    assert core.handle("dev-1", payload).ack.accepted
    out = core.handle("dev-1", payload)
    assert out.ack.accepted and out.ack.seq == 3 and "duplicate" in out.ack.detail
    assert core.version == 1
    np.testing.assert_array_equal(core.model, ONES)


@pytest.mark.parametrize("samples", [0, -3, 101])
def test_samples(core: ServerCore, samples: int) -> None:
    _refused(core, update_bytes(M, ONES, samples=samples), Reason.SAMPLES)


def test_future_base_version(core: ServerCore) -> None:
    _refused(core, update_bytes(M, ONES, base=1), Reason.FUTURE)


def test_too_stale(core: ServerCore) -> None:
    for seq in range(1, 4):
        assert core.handle("dev-1", update_bytes(M, ZERO, seq=seq, base=seq - 1)).ack.accepted
    assert core.version == 3
    _refused(core, update_bytes(M, ONES, device="dev-2", base=0), Reason.STALE, "dev-2")
    assert core.handle("dev-2", update_bytes(M, ONES, device="dev-2", base=1)).ack.accepted


def test_fedavg_old_round_is_stale(tmp_path: Path) -> None:
    c = _core(tmp_path, FedAvg(round_size=1))
    assert c.handle("dev-1", update_bytes(M, ONES, seq=1)).ack.accepted
    _refused(c, update_bytes(M, ONES, device="dev-2", base=0), Reason.STALE, "dev-2")


def test_codec_unknown(core: ServerCore) -> None:
    _refused(
        core,
        _raw(delta={"codec": {"name": "float64"}, "data": b"\0" * 48, "length": 6}),
        Reason.CODEC,
    )


def test_codec_inconsistent_payload(core: ServerCore) -> None:
    _refused(
        core, _raw(delta={"codec": {"name": "int8"}, "data": b"\0" * 3, "length": 6}), Reason.CODEC
    )


def test_shape(core: ServerCore) -> None:
    _refused(core, update_bytes(M, np.ones(8, np.float32)), Reason.SHAPE)


def test_non_finite(core: ServerCore) -> None:
    bad = np.array([1, np.nan, 0, 0, 0, 0], np.float32).tobytes()
    msg = ClientUpdate(
        M.model_id, 0, "dev-1", 1, 10, 1, EncodedVector({"name": "float32"}, bad, 6), {}
    )
    _refused(core, encode_update(msg), Reason.NON_FINITE)


def test_norm_reject(tmp_path: Path) -> None:
    c = _core(tmp_path, max_norm=1.0, norm_action=NormAction.REJECT)
    _refused(c, update_bytes(M, ONES), Reason.NORM)


def test_norm_clip_scales_to_bound(tmp_path: Path) -> None:
    c = _core(tmp_path, max_norm=1.0, norm_action=NormAction.CLIP)
    delta = np.array([3, 4, 0, 0, 0, 0], np.float32)  # norm 5 -> scaled by 1/5
    assert c.handle("dev-1", update_bytes(M, delta)).ack.accepted
    np.testing.assert_allclose(c.model, [0.6, 0.8, 0, 0, 0, 0], rtol=1e-6)


def test_int8_and_topk_updates_accepted(core: ServerCore) -> None:
    delta = np.array([0.5, -1.0, 0.25, 0, 0, 2.0], np.float32)
    assert core.handle("dev-1", update_bytes(M, delta, codec={"name": "int8"}, seq=1)).ack.accepted
    topk = {"name": "topk", "fraction": 0.5, "values": {"name": "float32"}}
    assert core.handle("dev-1", update_bytes(M, delta, codec=topk, seq=2, base=1)).ack.accepted
    assert core.version == 2
