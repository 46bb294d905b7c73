"""Crash-test driver: a ServerCore in its own process, fed update bytes on stdin.

    python -m tests.unit.server.crash_driver serve STATE_DIR MODE    (FLEETLEARN_FAULT may be set)
        stdin:  one line per update: "<topic device id> <payload hex>"
        stdout: "ack <device> <seq> <accepted 0/1> <server_version>" after the log is fsynced
    python -m tests.unit.server.crash_driver dump STATE_DIR MODE
        stdout: JSON {version, model, applied: [[device, seq], ...] in log order,
                      replay_model, replay_version}   (replay = a clean core fed the log's payloads)

MODE "count": FedAsync alpha=1, 64 parameters (one-hot deltas make each coordinate a counter).
MODE "buff":  FedBuff K=3, momentum 0.9, polynomial staleness (order and state sensitive).
MODE "robust": "buff" plus the default robust options with a median over the buffer: adaptive
               norm bound (clips, so the logged clip factor matters), one update per device per
               buffer (some updates are refused), rows checkpointed mid-buffer.
MODE "dp":    "buff" with differential privacy and a secret random noise key: the recovered model
              must equal a clean replay with that key, and flushes spent must equal the version.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import msgpack
import numpy as np

from protocol.update_header import decode_any_update
from server.core import ServerCore
from server.durability import LogPosition, read_from
from server.privacy import DpMechanism, PrivacyConfig
from server.robust import Aggregator, RobustConfig
from server.staleness import make_staleness
from server.strategies import FedAsync, FedBuff, Strategy
from tests.unit.server.factory import make_manifest

N_PARAMS = 64
MANIFEST = make_manifest(N_PARAMS)
DP_SIGMA = 0.8
DP = PrivacyConfig(epsilon=1e6, delta=1e-5, noise_multiplier=DP_SIGMA, clip_norm=2.0)


def strategy(mode: str) -> Strategy:
    if mode == "count":
        return FedAsync(alpha=1.0)
    robust = None
    if mode == "robust":
        robust = RobustConfig(aggregator=Aggregator.MEDIAN, norm_multiplier=1.5, norm_warmup=2)
    return FedBuff(
        buffer_size=3,
        momentum=0.9,
        staleness=make_staleness("polynomial", {"a": 0.5}),
        robust=robust,
        privacy=DpMechanism(DP, 3) if mode == "dp" else None,
    )


def make_core(state: Path, mode: str, dp_key: str | None = None) -> ServerCore:
    from server.admission import AdmissionLimits

    chosen = strategy(mode)
    if dp_key is not None:  # the clean replay uses the crashed server's secret key
        chosen.load_state_dict(chosen.state_dict() | {"dp_key": dp_key})
    core = ServerCore(
        MANIFEST,
        np.zeros(N_PARAMS, np.float32),
        chosen,
        state,
        AdmissionLimits(max_staleness=None),
        checkpoint_every=4,
        keep_log=True,
    )
    core.recover()
    return core


def serve(state: Path, mode: str) -> None:
    core = make_core(state, mode)
    for line in sys.stdin:
        device, hexpayload = line.split()
        out = core.handle(device, bytes.fromhex(hexpayload))
        a = out.ack
        print(f"ack {a.device_id} {a.seq} {int(a.accepted)} {a.server_version}", flush=True)
        core.maybe_checkpoint()
    core.close()


def dump(state: Path, mode: str) -> None:
    core = make_core(state, mode)
    records, _, _ = read_from(core.log_dir, LogPosition(1, 0))
    applied, payloads = [], []
    for record in records:
        rec = msgpack.unpackb(record.meta, raw=False)
        if rec["k"] == "u":
            msg = decode_any_update(record.body)
            applied.append([msg.device_id, msg.seq])
            payloads.append((msg.device_id, record.body))
    privacy = core.strategy.privacy
    key = str(core.strategy.state_dict()["dp_key"]) if privacy is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        clean = make_core(Path(tmp), mode, key)
        for device, payload in payloads:
            assert clean.handle(device, payload).ack.accepted
        replay_model, replay_version = clean.model.tolist(), clean.version
        clean.close()
    print(
        json.dumps(
            {
                "version": core.version,
                "model": core.model.tolist(),
                "applied": applied,
                "replay_model": replay_model,
                "replay_version": replay_version,
                "dp_flushes": None if privacy is None else privacy.status().flushes,
                "dp_epsilon": None if privacy is None else privacy.status().epsilon_spent,
            }
        )
    )
    core.close()


if __name__ == "__main__":
    command, state_dir, run_mode = sys.argv[1:4]
    {"serve": serve, "dump": dump}[command](Path(state_dir), run_mode)
