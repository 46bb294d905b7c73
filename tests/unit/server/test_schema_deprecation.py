"""Schema 1 (the map update header) during its deprecation period: accepted and counted by
default, refused by name with `[admission] accept_schema_1 = false`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from protocol.errors import ConfigError, ProtocolError, Reason
from protocol.messages import ClientUpdate, encode_vector
from protocol.update_header import decode_any_update, encode_update_compact, is_legacy_update
from server.admission import AdmissionLimits
from server.config import parse_config
from server.core import ServerCore
from server.metrics import ServerMetrics
from server.strategies import FedAsync
from tests.unit.server.factory import make_artifacts, make_manifest, update_bytes

M = make_manifest(6)


def _compact(seq: int) -> bytes:
    delta = encode_vector(np.full(6, 0.01, np.float32), {"name": "float32"})
    msg = ClientUpdate(M.model_id, 0, "dev-1", seq, 10, 1, delta, {"loss": 0.5})
    return encode_update_compact(msg)


def _core(state: Path, accept: bool) -> ServerCore:
    limits = AdmissionLimits(max_staleness=None, accept_schema_1=accept)
    core = ServerCore(M, np.zeros(6, np.float32), FedAsync(), state, limits)
    core.recover()
    return core


def test_schema_1_is_accepted_and_marked_by_default(tmp_path: Path) -> None:
    core = _core(tmp_path, accept=True)
    legacy = update_bytes(M, np.full(6, 0.01, np.float32), seq=1)
    assert is_legacy_update(legacy) and not is_legacy_update(_compact(2))
    first, second = core.submit("dev-1", legacy), core.submit("dev-1", _compact(2))
    assert first.ack.accepted and first.schema_1
    assert second.ack.accepted and not second.schema_1
    core.close()


def test_switched_off_schema_1_is_refused_by_name_and_schema_2_still_flows(
    tmp_path: Path,
) -> None:
    core = _core(tmp_path, accept=False)
    refused = core.submit("dev-1", update_bytes(M, np.full(6, 0.01, np.float32), seq=1)).ack
    assert not refused.accepted and refused.reason is Reason.SCHEMA
    assert "schema 1" in refused.detail and core.version == 0
    assert core.submit("dev-1", _compact(1)).ack.accepted and core.version == 1
    core.close()


def test_the_decoder_switch_and_the_counter() -> None:
    legacy = update_bytes(M, np.full(6, 0.01, np.float32))
    assert decode_any_update(legacy).seq == 1
    with pytest.raises(ProtocolError) as refused:
        decode_any_update(legacy, legacy=False)
    assert refused.value.reason is Reason.SCHEMA
    metrics = ServerMetrics()
    metrics.count_accepted(0, schema_1=True)
    metrics.count_accepted(0)
    assert metrics.registry.get_sample_value("fleetlearn_updates_schema_1_total") == 1.0
    assert metrics.registry.get_sample_value("fleetlearn_updates_accepted_total") == 2.0


def test_config_key(tmp_path: Path) -> None:
    make_artifacts(tmp_path / "artifacts", 6)
    base = {"fleet": "f", "artifacts": "artifacts", "signing_key": "k", "state_dir": "s"}
    assert parse_config(base, tmp_path).admission.accept_schema_1
    off = parse_config(base | {"admission": {"accept_schema_1": False}}, tmp_path)
    assert not off.admission.accept_schema_1
    with pytest.raises(ConfigError, match=r"admission\.accept_schema_1"):
        parse_config(base | {"admission": {"accept_schema_1": "no"}}, tmp_path)
