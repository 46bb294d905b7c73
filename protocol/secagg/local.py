"""Run one cohort in memory: every message really encoded and decoded, no broker.

Used by the tests, the benchmark and the simulator so all three drive the same state machines.
Drop-outs are given per phase: a device in `drop_before_shares` never sends its shares, one in
`drop_before_masked` shares but never sends its masked update, one in `drop_before_check`
masks but never signs the survivor list, one in `drop_before_reveal` signs but never answers the
unmask request.

Identities are enrolled in-process by a fresh enrolment key (identity.py) unless the caller
gives its own `enrolment` or a device's `identities` (a test's forged one); the server checks
joins and signatures against the same trust unless `check_at_server` is off, which lets a test
see what the devices refuse on their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.secagg.cohort import CohortConfig, ServerCohort
from protocol.secagg.device import DevicePolicy, DeviceSession
from protocol.secagg.errors import SecAggError, SecAggReason
from protocol.secagg.identity import DeviceIdentity, Enrolment
from protocol.secagg.messages import (
    AnyDown,
    AnyUp,
    CohortAnnounce,
    CohortResult,
    ConsistencyRequest,
    ShareBundle,
    UnmaskRequest,
    decode_down,
    decode_up,
    encode,
)

__all__ = ["LocalRun", "device_reply", "run_cohort"]

F32 = npt.NDArray[np.float32]
Tamper = Callable[[str, AnyUp], AnyUp]
TamperDown = Callable[[str, AnyDown], AnyDown]


@dataclass
class LocalRun:
    cohort: ServerCohort
    devices: dict[str, DeviceSession]
    sent: dict[str, F32]  # what each device's fixed-point update counts for (error feedback)
    bytes_up: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    bytes_down: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    device_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    server_seconds: float = 0.0
    unmask_requests: int = 0
    refused: list[tuple[str, str, SecAggReason]] = field(default_factory=list)  # who, about, why


def run_cohort(
    config: CohortConfig,
    deltas: Mapping[str, F32],
    *,
    cohort_id: bytes = bytes(16),
    seed: bytes = bytes(32),
    base_version: int = 0,
    drop_before_shares: Collection[str] = (),
    drop_before_masked: Collection[str] = (),
    drop_before_check: Collection[str] = (),
    drop_before_reveal: Collection[str] = (),
    tamper: Tamper | None = None,
    tamper_down: TamperDown | None = None,
    policy: DevicePolicy | None = None,
    rngs: Mapping[str, np.random.Generator] | None = None,
    timer: Callable[[], float] | None = None,
    enrolment: Enrolment | None = None,
    identities: Mapping[str, DeviceIdentity] | None = None,
    check_at_server: bool = True,
) -> LocalRun:
    """Join every device of `deltas` (in order), then run all phases to the end."""
    clock = timer or (lambda: 0.0)
    enrolment = enrolment or Enrolment.generate("local")
    trust = enrolment.trust if check_at_server else None
    cohort = ServerCohort(config, cohort_id, base_version, seed, trust)
    run = LocalRun(cohort, {}, {})
    inbox: list[tuple[str, AnyDown]] = []

    def to_server(device_id: str, msg: AnyUp) -> None:
        if tamper is not None:
            msg = tamper(device_id, msg)
        data = encode(msg)
        run.bytes_up[device_id] += len(data)
        t0 = clock()
        decoded = decode_up(data)
        handler: Any = {
            "SecAggJoin": cohort.add_join,
            "SharesMessage": cohort.on_shares,
            "MaskedInput": cohort.on_masked,
            "ConsistencySignature": cohort.on_consistency,
            "UnmaskResponse": cohort.on_reveal,
        }[type(decoded).__name__]
        try:
            inbox.extend(handler(decoded))
        except SecAggError as exc:
            run.refused.append(("server", device_id, exc.reason))
        run.server_seconds += clock() - t0

    def close() -> None:
        t0 = clock()
        inbox.extend(cohort.close())
        run.server_seconds += clock() - t0

    def deliver() -> list[tuple[str, AnyDown]]:
        out = []
        for device_id, sent in inbox:
            data = encode(tamper_down(device_id, sent) if tamper_down is not None else sent)
            run.bytes_down[device_id] += len(data)
            out.append((device_id, decode_down(data)))
        inbox.clear()
        return out

    for device_id in deltas:
        identity = (identities or {}).get(device_id) or enrolment.enrol(device_id)
        session = DeviceSession(device_id, config.model_id, identity, policy or DevicePolicy())
        run.devices[device_id] = session
        to_server(device_id, session.join())
    if cohort.view is None:
        close()
    pending = deliver()
    phases = (drop_before_shares, drop_before_masked, drop_before_check, drop_before_reveal, ())
    for dropped in phases:
        for device_id, msg in pending:
            session = run.devices[device_id]
            if device_id in dropped or session.finished:
                continue
            t0 = clock()
            try:
                reply = _step(run, session, msg, deltas[device_id], (rngs or {}).get(device_id))
            except SecAggError as exc:
                run.refused.append((device_id, type(msg).__name__, exc.reason))
                reply = None
            run.device_seconds[device_id] += clock() - t0
            if reply is not None:
                to_server(device_id, reply)
        if not inbox:
            close()
        pending = deliver()
        if not pending:
            break
    if cohort.result is not None:
        inbox.extend(cohort.results(base_version + 1))
        for device_id, msg in deliver():
            if isinstance(msg, CohortResult) and not run.devices[device_id].finished:
                try:
                    run.devices[device_id].on_result(msg)
                except SecAggError as exc:
                    run.refused.append((device_id, "CohortResult", exc.reason))
    return run


def _step(
    run: LocalRun,
    session: DeviceSession,
    msg: AnyDown,
    delta: F32,
    rng: np.random.Generator | None,
) -> AnyUp | None:
    """One server message into one device, with the run's bookkeeping; its reply, if any."""
    if isinstance(msg, UnmaskRequest):
        run.unmask_requests += 1
    reply, sent = device_reply(session, msg, delta, rng)
    if sent is not None:
        run.sent[session.device_id] = sent
    return reply


def device_reply(
    session: DeviceSession, msg: AnyDown, delta: F32, rng: np.random.Generator | None
) -> tuple[AnyUp | None, F32 | None]:
    """What an honest device whose update is `delta` answers to one server message: its reply
    (None for a result) and, after masking, what the server will count for it."""
    if isinstance(msg, CohortAnnounce):
        return session.on_announce(msg), None
    if isinstance(msg, ShareBundle):
        session.on_bundle(msg)
        return session.mask(delta, 1, rng)
    if isinstance(msg, ConsistencyRequest):
        return session.on_check(msg), None
    if isinstance(msg, UnmaskRequest):
        return session.on_unmask(msg), None
    session.on_result(msg)
    return None, None
